"""tidings channel plugin ``email_imap``: email read over IMAP, sent over SMTP.

Inbound mail is polled (``poll`` → ``receive`` / ``delivery_status`` → ``acknowledge``);
bounces (RFC 3464 reports) become delivery-status updates of the message they bounce.
"""

from __future__ import annotations

from tidings_email_imap.settings import EmailSettings, Security

__all__ = ["EmailSettings", "Security"]
