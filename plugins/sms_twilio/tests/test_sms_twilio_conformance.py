"""The Twilio channel passes the conformance suite (the class ships in the package, so
``tidings conformance sms_twilio`` runs the very same checks)."""

from tidings_sms_twilio.conformance import TestTwilioConformance

pytest_plugins = ["tidings.testing.conformance"]

__all__ = ["TestTwilioConformance"]
