"""Twilio message statuses and error codes, mapped into tidings' vocabulary.

Status words (Messages resource, "Message status values"):

* ``accepted``, ``scheduled``, ``queued`` — Twilio holds the message: ``queued``.
* ``sending`` — Twilio is still handing it to the carrier, which has not taken it yet:
  ``queued`` (tidings' ``sent`` means "the next hop has it", which is Twilio's ``sent``).
* ``sent`` → ``sent``; ``delivered`` → ``delivered``; ``undelivered`` → ``undelivered``;
  ``failed`` → ``failed``; ``read`` (WhatsApp/RCS read receipts) → ``read``.
* ``canceled`` — a scheduled message cancelled before sending: it will never go out, so
  ``failed`` (the agent must see that it did not reach the customer).
* ``receiving``/``received`` describe *inbound* messages and never concern one of ours;
  like ``partially_delivered`` and any future word they are left unmapped, so they become
  ``unknown`` with the raw word kept.
"""

from __future__ import annotations

from tidings import DeliveryStatus

STATUS_TABLE: dict[str, DeliveryStatus] = {
    "accepted": DeliveryStatus.QUEUED,
    "scheduled": DeliveryStatus.QUEUED,
    "queued": DeliveryStatus.QUEUED,
    "sending": DeliveryStatus.QUEUED,
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "undelivered": DeliveryStatus.UNDELIVERED,
    "failed": DeliveryStatus.FAILED,
    "read": DeliveryStatus.READ,
    "canceled": DeliveryStatus.FAILED,
}

ERROR_MEANINGS: dict[str, str] = {
    "20003": "Authentication failed: check the account sid and the auth token or API key",
    "20429": "Too many requests: Twilio is rate limiting this account",
    "21211": "Invalid 'To' phone number",
    "21408": "Sending to this region is not enabled on the account (geo permissions)",
    "21606": "The 'From' number cannot send SMS",
    "21608": "Trial accounts can only send to verified numbers",
    "21610": "The recipient replied STOP: Twilio refuses to send until they reply START",
    "21612": "Twilio cannot route a message to this 'To' number from this 'From' number",
    "21614": "The 'To' number is not a mobile number that can receive SMS",
    "21617": "The message body is over 1,600 characters",
    "21635": "The 'To' number is a landline",
    "30001": "Queue overflow: too many messages queued for this sender",
    "30002": "The Twilio account is suspended",
    "30003": "Unreachable destination handset (switched off or out of coverage)",
    "30004": "Message blocked by the recipient, their carrier or a block list",
    "30005": "Unknown destination handset: the number does not exist",
    "30006": "Landline or unreachable carrier: the number cannot receive SMS",
    "30007": "Message filtered by the carrier (spam or content rules)",
    "30008": "Unknown error from the carrier",
    "30009": "A segment of the message is missing",
    "30010": "The message price exceeds the configured maximum price",
    "30034": "US A2P 10DLC: the sending number is not registered to a campaign",
    "63016": "Outside the 24-hour WhatsApp window: only templates may be sent",
}
"""Human meanings (from Twilio's error reference) shown to agents beside the raw code."""


def error_meaning(code: str | None, fallback: str | None = None) -> str | None:
    if not code:
        return fallback
    meaning = ERROR_MEANINGS.get(code)
    if meaning is None:
        return fallback or f"Twilio error {code}"
    return meaning
