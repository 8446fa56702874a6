"""The email channel passes the conformance suite against the real Dovecot and SMTP servers
(the class ships in the package, so ``tidings conformance email_imap`` runs the same checks)."""

from tidings_email_imap.conformance import TestEmailImapConformance

pytest_plugins = ["tidings.testing.conformance", "tidings.testing.mailservers"]

__all__ = ["TestEmailImapConformance"]
