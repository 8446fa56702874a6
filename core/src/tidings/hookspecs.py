"""The plugin contract of tidings: every hook a plugin may implement.

This is the file a vendor reads first. The marker name ``tidings`` is shared by these specs,
by ``hookimpl`` and by the entry-point group, so a plugin declares::

    [project.entry-points.tidings]
    my_channel = "tidings_my_channel"

and marks its functions or methods with ``@tidings.hookimpl``.

There are two kinds of hook:

* **Plugin hooks** (``register_channels``, ``register_commands``, ``lookup_contacts``) are
  module-level functions of a plugin; the core calls every implementation.
* **Channel hooks** (``receive``, ``send``, ``delivery_status``, and for polled channels
  ``poll`` and ``acknowledge``) are methods of a
  ``tidings.Channel`` object returned by ``register_channels``. The core calls them only on
  the channel that owns the account in question — never on other channels — so an
  implementation never checks whether an account is its own. They may be ``async def``
  (the core awaits the result) or plain functions.

``check_pending()`` runs at start-up, so a misspelled hook name fails loudly. The docs page
``docs/plugin_hooks.md`` has an entry for each hook, and a test fails if one is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from datetime import datetime

    import typer

    from tidings.channel import Account, Channel
    from tidings.models import (
        Address,
        ContactMatch,
        InboundMessage,
        OutboundMessage,
        PolledBatch,
        SendResult,
        StatusUpdate,
        WebhookRequest,
    )
    from tidings.routing.rules import ActionKind, ConditionKind
    from tidings.store import Store

PROJECT = "tidings"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

CHANNEL_HOOKS = ("receive", "send", "delivery_status", "poll", "acknowledge")
"""Hooks implemented by channel objects and dispatched to the owning channel only."""


@hookspec
def register_channels() -> Sequence[Channel]:
    """``register_channels() -> Sequence[Channel]``

    Called once when the plugins are loaded. Return the channel objects this plugin
    provides (instances of ``tidings.Channel`` subclasses), or an empty sequence. Each
    channel's ``name`` must be unique across all plugins; a duplicate stops start-up.
    """
    raise NotImplementedError


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """``register_commands(cli) -> None``

    Called once when the ``tidings`` command starts. Add sub-commands to ``cli`` (a
    ``typer.Typer``), e.g. ``cli.add_typer(email_app, name="email")``. The return value is
    ignored.
    """


@hookspec(firstresult=True)
def receive(
    account: Account[Any], request: WebhookRequest | PolledBatch
) -> Sequence[InboundMessage] | Awaitable[Sequence[InboundMessage]]:
    """``receive(account, request) -> Sequence[InboundMessage]`` (may be async)

    Called on the owning channel, before anything is stored, for every webhook request to
    an endpoint declared as ``Endpoint.MESSAGES`` or ``Endpoint.EVENTS`` (including GET
    handshakes), and — for polled channels — for every ``PolledBatch`` that ``poll``
    yields (turn its raw items into messages). Check a webhook's signature first and raise
    ``SignatureError`` when it is missing or wrong; raise ``MalformedPayload`` when the
    input is not what the provider documents. Return the inbound messages it carries
    (possibly none). The core stores them in one transaction, deduplicated by
    ``provider_id``, and answers the provider with ``Channel.reply()`` only after the commit.
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
    account: Account[Any], request: WebhookRequest | PolledBatch
) -> Sequence[StatusUpdate] | Awaitable[Sequence[StatusUpdate]]:
    """``delivery_status(account, request) -> Sequence[StatusUpdate]`` (may be async)

    Called on the owning channel for every webhook request to an endpoint declared as
    ``Endpoint.STATUSES`` or ``Endpoint.EVENTS``, and for every ``PolledBatch`` of a polled
    channel that implements it (e.g. bounces found in a mailbox). Check the signature as in
    ``receive``. Return one ``StatusUpdate`` per reported message, its provider word mapped into
    ``DeliveryStatus`` (``unknown`` for words you do not know — never drop them) and the raw
    word and error code kept beside it. Order does not matter: the core never moves a
    message's status backwards.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def poll(
    account: Account[Any], cursor: Mapping[str, Any] | None, follow: bool
) -> AsyncIterator[PolledBatch]:
    """``poll(account, cursor, follow) -> AsyncIterator[PolledBatch]`` (an async generator)

    Called by the worker on the owning channel of a polled account (``capabilities.polled``).
    ``cursor`` is the ``PolledBatch.cursor`` of the last committed batch (``None`` the first
    time). Yield batches of raw items in order, each with the cursor that is true once it
    is stored. With ``follow=False`` return when nothing new is left (``tidings sync
    --once``); with ``follow=True`` keep waiting for new items (IMAP IDLE or a polling
    interval) until cancelled. Bound every network call with a timeout and let connection
    errors propagate: the worker reconnects by calling ``poll`` again with the last saved
    cursor, so nothing is lost or doubled.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def acknowledge(account: Account[Any], batch: PolledBatch) -> Awaitable[None] | None:
    r"""``acknowledge(account, batch) -> None`` (may be async)

    Called on the owning channel after everything ``batch`` carried is committed, so the
    channel can mark its items as handled at the source (IMAP ``\Seen``). It is never called
    for a batch that was not committed. Return nothing; an exception is logged and the
    items are acknowledged again after the next ``poll`` (they are deduplicated on arrival).
    """
    raise NotImplementedError


@hookspec
def lookup_contacts(
    addresses: Sequence[Address], store: Store
) -> Mapping[str, Sequence[ContactMatch]] | Awaitable[Mapping[str, Sequence[ContactMatch]]] | None:
    """``lookup_contacts(addresses, store) -> Mapping[str, Sequence[ContactMatch]] | None``
    (may be async)

    Called with the customer addresses of each batch of new inbound messages (one call per
    batch, so a CRM can answer with one request) and when an agent asks. Every
    implementation is called, concurrently; the built-in contact store is one. Return the
    contacts you know, keyed by ``Address.key`` of the address they were found for; leave
    out addresses you know nothing about (or return ``None``). Answers are merged in
    registration order (built-ins first), duplicates (same ``source`` and ``external_id``)
    dropped. Raise nothing for "not found"; an exception is logged and that source skipped,
    so a CRM outage never stops ingestion.
    """
    raise NotImplementedError


@hookspec
def delivery_status_changed(
    account: Account[Any], message_id: int, conversation_id: int, update: StatusUpdate
) -> Awaitable[None] | None:
    """``delivery_status_changed(account, message_id, conversation_id, update) -> None``
    (may be async)

    A listener: called for every outbound message whose status moved forward (a provider
    report, a send result, a failure), after the change is committed. ``update.status`` is
    the new normalised status, with the provider's word and error beside it. Return
    nothing; an exception is logged and does not affect the message or other listeners.
    """


@hookspec
def register_rule_kinds() -> Sequence[ConditionKind | ActionKind]:
    """``register_rule_kinds() -> Sequence[ConditionKind | ActionKind]``

    Called once when the routing service starts. Return the condition and action kinds
    this plugin adds to inbound rules (``tidings.routing.rules.ConditionKind`` /
    ``ActionKind``: a unique ``name``, a pydantic ``params`` model, and ``test(params,
    facts) -> bool`` or ``apply(params, facts, outcome) -> None``), or an empty sequence.
    Rules naming a kind are validated against its ``params`` when saved. A name already
    registered (a built-in or another plugin's) stops start-up. An exception raised while
    a rule is evaluated is logged: a condition then does not match, an action is skipped.
    """
    raise NotImplementedError


@hookspec
def sla_signal(conversation_id: int, signal: str, at: datetime) -> Awaitable[None] | None:
    """``sla_signal(conversation_id, signal, at) -> None`` (may be async)

    A listener: called once per conversation and signal when the SLA sweep finds that a
    deadline passed — ``signal`` is ``reaction_missed``, ``alarm_reached`` or
    ``execution_missed`` and ``at`` the deadline — after the signal is committed (it is
    then also in the conversation's event log and filterable). Return nothing; an
    exception is logged and affects neither the signal nor other listeners.
    """
