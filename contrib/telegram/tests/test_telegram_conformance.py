"""The Telegram channel passes the conformance suite (the class ships in the package)."""

from tidings_telegram.conformance import TestTelegramConformance

pytest_plugins = ["tidings.testing.conformance"]

__all__ = ["TestTelegramConformance"]
