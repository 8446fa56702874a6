"""Typed errors: every refusal in tidings is one of these, never a bare ValueError.

The service layer maps them to HTTP answers (see ``tidings.service``) and the CLI to exit
codes, so a plugin that raises the right one gets the right behaviour everywhere.
"""

from __future__ import annotations


class TidingsError(Exception):
    """Base of every error tidings raises on purpose."""


class ConfigError(TidingsError):
    """The configuration file or an account's settings are invalid.

    ``account`` and ``field`` name what is wrong so an operator can fix it without
    reading a traceback.
    """

    def __init__(self, message: str, *, account: str | None = None, field: str | None = None):
        self.account = account
        self.field = field
        where = []
        if account is not None:
            where.append(f"account {account!r}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


class PluginError(TidingsError):
    """A plugin is broken: misspelled hook, wrong signature, duplicate channel name."""


class UnknownChannel(ConfigError):
    """An account names a channel that no loaded plugin provides."""


class WebhookError(TidingsError):
    """Base for refusals of inbound provider input; ``status_code`` is the HTTP answer."""

    status_code = 400


class SignatureError(WebhookError):
    """The request is unsigned or its signature does not match: nothing may be stored."""

    status_code = 403


class MalformedPayload(WebhookError):
    """The request is not what the provider documents: the channel cannot parse it."""

    status_code = 400


class PayloadTooLarge(WebhookError):
    """The request body is over the configured limit."""

    status_code = 413


class SendError(TidingsError):
    """Base for failures of the send hook, classified so the outbox knows whether to retry.

    ``code`` is the provider's error code and ``reason`` its human explanation; both are
    shown to the agent.
    """

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        self.reason = reason
        self.code = code
        super().__init__(f"{reason} (code {code})" if code else reason)


class TransientSendError(SendError):
    """Worth retrying later: timeouts, 5xx, rate limits. ``retry_after`` in seconds, if told."""

    def __init__(
        self, reason: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(reason, code=code)


class PermanentSendError(SendError):
    """Retrying cannot help: invalid number, opted out, outside the window."""


class NotAllowed(TidingsError):
    """An operation the rules or the agent's permissions refuse."""


class NotFound(TidingsError):
    """No such object — or one the agent may not see (the two are indistinguishable on
    purpose, so guessing ids reveals nothing)."""


class Forbidden(NotAllowed):
    """The agent lacks the project, channel permission or role the operation needs."""


class InvalidTransition(NotAllowed):
    """The conversation's state does not allow this (e.g. taking an assigned conversation)."""


class DecisionRequired(TidingsError):
    """Sending to a customer whose conversation belongs to another agent: the sender must
    choose one of ``choices`` (cancel, assign to me and send, send only) and call again."""

    def __init__(self, conversation_id: int, assignee_id: int, choices: tuple[str, ...]) -> None:
        self.conversation_id = conversation_id
        self.assignee_id = assignee_id
        self.choices = choices
        super().__init__(
            f"conversation {conversation_id} is assigned to another agent ({assignee_id}); "
            f"choose one of: {', '.join(choices)}"
        )


class Cancelled(TidingsError):
    """The sender chose to cancel: nothing was sent."""
