"""The plugin contract of tidings: every hook a plugin may implement.

This is the file a vendor reads first. The marker name ``tidings`` is shared by these specs,
by ``hookimpl`` and by the entry-point group, so a plugin declares::

    [project.entry-points.tidings]
    my_channel = "tidings_my_channel"

and marks its functions or methods with ``@tidings.hookimpl``.

There are two kinds of hook:

* **Plugin hooks** (``register_channels``, ``lookup_contacts``) are module-level functions of
  a plugin; the core calls every implementation.
* **Channel hooks** (``receive``, ``send``, ``delivery_status``) are methods of a
  ``tidings.Channel`` object returned by ``register_channels``. The core calls them only on
  the channel that owns the account in question — never on other channels — so an
  implementation never checks whether an account is its own. They may be ``async def``
  (the core awaits the result) or plain functions.

``check_pending()`` runs at start-up, so a misspelled hook name fails loudly. The docs page
``docs/plugin_hooks.md`` has an entry for each hook, and a test fails if one is missing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from tidings.channel import Account, Channel
    from tidings.models import (
        Address,
        ContactMatch,
        InboundMessage,
        OutboundMessage,
        SendResult,
        StatusUpdate,
        WebhookRequest,
    )
    from tidings.store import Store

PROJECT = "tidings"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

CHANNEL_HOOKS = ("receive", "send", "delivery_status")
"""Hooks implemented by channel objects and dispatched to the owning channel only."""


@hookspec
def register_channels() -> Sequence[Channel]:
    """``register_channels() -> Sequence[Channel]``

    Called once when the plugins are loaded. Return the channel objects this plugin
    provides (instances of ``tidings.Channel`` subclasses), or an empty sequence. Each
    channel's ``name`` must be unique across all plugins; a duplicate stops start-up.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def receive(
    account: Account[Any], request: WebhookRequest
) -> Sequence[InboundMessage] | Awaitable[Sequence[InboundMessage]]:
    """``receive(account, request) -> Sequence[InboundMessage]`` (may be async)

    Called on the owning channel for every webhook request to an endpoint declared as
    ``Endpoint.MESSAGES`` or ``Endpoint.EVENTS`` (including GET handshakes), before anything
    is stored. Check the signature first and raise ``SignatureError`` when it is missing or
    wrong; raise ``MalformedPayload`` when the body is not what the provider documents.
    Return the inbound messages the request carries (possibly none). The core stores them in
    one transaction, deduplicated by ``provider_id``, and answers the provider with
    ``Channel.reply()`` only after the commit.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def send(account: Account[Any], message: OutboundMessage) -> SendResult | Awaitable[SendResult]:
    """``send(account, message) -> SendResult`` (may be async)

    Called by the outbox worker on the owning channel to deliver one outbound message.
    Return the provider's id for the message and its first status. Raise
    ``TransientSendError`` (with ``retry_after`` when the provider says) for failures worth
    retrying — timeouts, 5xx, rate limits — and ``PermanentSendError`` with the provider's
    code and reason for those that are not. Never retry inside the hook: the outbox does.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def delivery_status(
    account: Account[Any], request: WebhookRequest
) -> Sequence[StatusUpdate] | Awaitable[Sequence[StatusUpdate]]:
    """``delivery_status(account, request) -> Sequence[StatusUpdate]`` (may be async)

    Called on the owning channel for every webhook request to an endpoint declared as
    ``Endpoint.STATUSES`` or ``Endpoint.EVENTS``. Check the signature as in ``receive``.
    Return one ``StatusUpdate`` per reported message, its provider word mapped into
    ``DeliveryStatus`` (``unknown`` for words you do not know — never drop them) and the raw
    word and error code kept beside it. Order does not matter: the core never moves a
    message's status backwards.
    """
    raise NotImplementedError


@hookspec
def lookup_contacts(
    address: Address, store: Store
) -> Sequence[ContactMatch] | Awaitable[Sequence[ContactMatch]] | None:
    """``lookup_contacts(address, store) -> Sequence[ContactMatch] | None`` (may be async)

    Called for the customer address of each new inbound message and when an agent asks.
    Every implementation is called (the built-in contact store is one); return the contacts
    you know for ``address`` — an empty sequence or ``None`` when you know none. Answers are
    merged in registration order (built-ins first), duplicates (same ``source`` and
    ``external_id``) dropped.
    Raise nothing for "not found"; an exception is logged and that source skipped.
    """
    raise NotImplementedError
