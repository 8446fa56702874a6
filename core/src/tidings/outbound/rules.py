"""Reply rules derived from a channel's declared capabilities, never from its name.

The outbox calls ``check_outbound`` before a message is queued, so an agent learns at once
that a web form cannot be answered or that a WhatsApp window has closed, instead of the
provider refusing it minutes later. A vendor's channel gets exactly the same treatment as
ours because the rules read only ``Capabilities``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tidings.errors import NotAllowed
from tidings.models import Capabilities, OutboundMessage

TEMPLATE = "template"
MESSAGE_TAG = "message_tag"
OUTSIDE_WINDOW_WORDS = frozenset({TEMPLATE, MESSAGE_TAG})
"""The words ``Capabilities.outside_window`` may contain."""


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _window_problems(
    caps: Capabilities,
    message: OutboundMessage,
    last_inbound_at: datetime | None,
    now: datetime,
) -> list[str]:
    problems: list[str] = []
    if message.template is not None and TEMPLATE not in caps.outside_window:
        problems.append("this channel has no provider templates: send free text instead")
    if message.message_tag is not None and MESSAGE_TAG not in caps.outside_window:
        problems.append("this channel has no message tags: send without a tag")
    if caps.reply_window is None or problems:
        return problems
    inside = last_inbound_at is not None and (
        _aware(now) - _aware(last_inbound_at) <= caps.reply_window
    )
    if inside:
        return problems
    if message.template is not None or message.message_tag is not None:
        return problems
    hours = caps.reply_window.total_seconds() / 3600
    allowed = [w for w in caps.outside_window if w in OUTSIDE_WINDOW_WORDS]
    how = (
        " or ".join("an approved template" if w == TEMPLATE else "a message tag" for w in allowed)
        or "nothing"
    )
    since = (
        "the customer has never written"
        if last_inbound_at is None
        else "the customer's last message is older than that"
    )
    problems.append(
        f"free text is only allowed within {hours:g} h of the customer's last message and "
        f"{since}; outside the window this channel allows {how}"
    )
    return problems


def _attachment_problems(caps: Capabilities, message: OutboundMessage) -> list[str]:
    if not message.attachments:
        return []
    limits = caps.attachments
    if limits is None:
        return ["this channel cannot send attachments"]
    problems: list[str] = []
    if len(message.attachments) > limits.max_count:
        problems.append(
            f"{len(message.attachments)} attachments, this channel sends at most {limits.max_count}"
        )
    for att in message.attachments:
        if att.size is not None and att.size > limits.max_bytes:
            problems.append(
                f"attachment {att.filename!r} is {att.size} bytes, the limit is {limits.max_bytes}"
            )
        if not limits.allows(att.content_type):
            allowed = ", ".join(limits.content_types)
            problems.append(
                f"attachment {att.filename!r} is {att.content_type}, this channel sends "
                f"only {allowed}"
            )
    return problems


def outbound_problems(
    capabilities: Capabilities,
    message: OutboundMessage,
    *,
    is_reply: bool,
    last_inbound_at: datetime | None,
    now: datetime,
) -> list[str]:
    """Every reason ``message`` may not be sent, so the agent can fix them all at once.

    ``is_reply`` is True when the message answers a conversation the customer started;
    ``last_inbound_at`` is when the customer last wrote on this conversation (``None`` if
    never) and ``now`` the current time — passed in so the rule is pure and testable.
    """
    caps = capabilities
    if is_reply and not caps.can_reply:
        return [
            "this channel cannot send replies (e.g. a web form or a voicemail): answer the "
            "customer on another channel"
        ]
    if not is_reply and not caps.can_initiate:
        return ["this channel cannot start a conversation: the customer must write first"]
    problems: list[str] = []
    if not (message.text.strip() or message.html or message.attachments or message.template):
        problems.append("the message is empty")
    problems += _window_problems(caps, message, last_inbound_at, now)
    if caps.max_text_length is not None and len(message.text) > caps.max_text_length:
        problems.append(
            f"the text has {len(message.text)} characters, this channel allows at most "
            f"{caps.max_text_length}"
        )
    if message.subject and not caps.subject:
        problems.append("this channel has no subject line")
    if (message.cc or message.bcc) and not caps.cc_bcc:
        problems.append("this channel has no CC or BCC")
    if message.html is not None and not caps.html:
        problems.append("this channel sends plain text only, not HTML")
    problems += _attachment_problems(caps, message)
    return problems


def check_outbound(
    capabilities: Capabilities,
    message: OutboundMessage,
    *,
    is_reply: bool,
    last_inbound_at: datetime | None,
    now: datetime,
) -> None:
    """Raise ``NotAllowed`` naming every rule ``message`` breaks; return when it may go."""
    problems = outbound_problems(
        capabilities, message, is_reply=is_reply, last_inbound_at=last_inbound_at, now=now
    )
    if problems:
        raise NotAllowed("; ".join(problems))
