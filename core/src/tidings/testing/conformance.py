"""The channel conformance suite: abstract checks a vendor's channel must pass.

Vendors add channels and deployments must be able to trust them, so the suite is built to
make a broken channel fail loudly (each rule has its own named check) while a correct one
passes with a handful of fixtures. A vendor enables the plugin and subclasses
``ChannelConformance`` in a module whose name starts with ``test_``::

    pytest_plugins = ["tidings.testing.conformance"]

    class TestAcmeConformance(ChannelConformance):
        plugin = "sms_acme"          # the entry-point name in the "tidings" group
        channel_name = "sms_acme"
        signature_headers = ("x-acme-signature",)

        @pytest.fixture
        def account_settings(self) -> dict[str, Any]: ...

The base class's name does not start with ``Test``, so it never runs on its own. Checks
that do not apply to a channel (delivery reports on a channel that has none, signature
checks on a polled channel…) are deselected at collection with the reason printed in the
summary — never skipped — so a green run means every applicable rule was exercised. See
``docs/conformance.md`` for every fixture and flag, and ``tidings conformance PLUGIN`` for
running an installed plugin's suite.

Store-backed checks: by default every channel is also run through the core's ingestion
(``StoreIngestion``: the channel's ``receive`` then ``Conversations.ingest`` on a temporary
SQLite store), so the redelivery check asserts that a provider's retry stores nothing new and
the signature and garbage checks that a refused request stores nothing at all. Override the
``ingestion`` fixture with another object following ``Ingestion`` (or ``None``).

Polled channels get two more checks, fed by ``polled_batches`` (the ``PolledBatch`` samples)
and, when the vendor gives one, a live ``poll_source`` the account's ``poll`` reads from.

Every assertion here carries its own message, so the module opts out of pytest's assertion
rewriting (PYTEST_DONT_REWRITE): vendors import it before pytest sees ``pytest_plugins``, and
it must behave the same whichever comes first.
"""

from __future__ import annotations

import inspect
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pytest

from tidings import loop
from tidings.channel import Account, Channel, ChannelSettings
from tidings.config import AccountEntry, Config, build_account
from tidings.errors import (
    ConfigError,
    MalformedPayload,
    NotAllowed,
    PermanentSendError,
    PluginError,
    SignatureError,
    TransientSendError,
    WebhookError,
)
from tidings.hookspecs import PROJECT
from tidings.models import (
    Address,
    Attachment,
    Capabilities,
    DeliveryStatus,
    Endpoint,
    InboundMessage,
    OutboundMessage,
    PolledBatch,
    PolledItem,
    SendResult,
    StatusUpdate,
    WebhookReply,
    WebhookRequest,
    advances,
)
from tidings.outbound.rules import OUTSIDE_WINDOW_WORDS
from tidings.plugins import ChannelHandle, Plugins, load_plugins

PLUGIN_NAME = __name__
POLL_TIMEOUT = 60.0
"""Seconds a ``poll(follow=False)`` may take in the suite before it counts as hanging."""
UNKNOWN_WORD = "conformance-unheard-of"
"""A status word no provider uses: it must come back as ``unknown`` with the word kept."""

ProviderMock = Callable[[], AbstractContextManager[Any]]
Arrange = Callable[[Any], object]


# --- what a vendor describes -----------------------------------------------------------


@dataclass(frozen=True)
class ExpectedAttachment:
    """An attachment as the suite compares it: what an agent sees in the conversation."""

    filename: str
    content_type: str
    size: int

    @classmethod
    def of(cls, attachment: Attachment) -> ExpectedAttachment:
        return cls(attachment.filename, attachment.content_type, attachment.size or -1)


@dataclass(frozen=True)
class ExpectedMessage:
    """What one inbound message must normalise to. ``None`` fields are not compared."""

    sender_key: str
    provider_id: str | None = None
    text: str | None = None
    attachments: tuple[ExpectedAttachment, ...] = ()


@dataclass(frozen=True)
class InboundSample:
    """A request in the provider's own documented shape and the messages it carries.

    Webhook requests are passed through the ``sign`` fixture before use, so samples are
    written unsigned. ``arrange`` prepares the provider mock for calls ``receive`` makes
    (downloading an attachment, say).
    """

    name: str
    request: WebhookRequest | PolledBatch
    expect: tuple[ExpectedMessage, ...]
    arrange: Arrange | None = None


@dataclass(frozen=True)
class MalformedSample:
    """A request the provider could never send; it must raise ``MalformedPayload``."""

    name: str
    request: WebhookRequest | PolledBatch


@dataclass(frozen=True)
class BadSettings:
    """Settings changes (applied over the valid ones) that must be refused naming ``field``.

    A value of ``None`` in ``changes`` removes the key.
    """

    name: str
    changes: Mapping[str, Any]
    field: str


@dataclass(frozen=True)
class ExpectedStatus:
    provider_id: str
    status: DeliveryStatus
    raw_status: str | None


@dataclass(frozen=True)
class StatusSample:
    """A status report in the provider's shape and the updates it must give, in order."""

    name: str
    request: WebhookRequest | PolledBatch
    expect: tuple[ExpectedStatus, ...]


@dataclass(frozen=True)
class SendScenario:
    """How to make the provider mock answer one way, and what ``send`` must make of it.

    For success, ``provider_id``/``status`` are the expected result; for failures,
    ``code`` and ``retry_after`` the expected classification (``None``: not compared).
    ``message`` replaces the default ``outbound_message``.
    """

    name: str
    arrange: Arrange
    provider_id: str | None = None
    status: DeliveryStatus | None = None
    code: str | None = None
    retry_after: float | None = None
    message: OutboundMessage | None = None


class Unsignable(Exception):
    """Raised by a vendor's ``sign`` for a body the provider's algorithm cannot sign.

    Twilio signs the parsed form of a form POST, so a body that is not a form has no
    signature anyone could compute. Such garbage is unsigned garbage: the channel may
    refuse it with ``SignatureError`` as well as ``MalformedPayload``.
    """


class Ingestion(Protocol):
    """Extension point for store-backed checks: the path from a request to the store.

    ``deliver`` runs the full path — channel, dedupe, commit — and returns how many new
    messages were stored; it raises what the channel raised. ``stored`` counts the
    account's messages in the store, so the suite can see that a refusal wrote nothing.
    """

    async def deliver(self, account: Account[Any], request: WebhookRequest | PolledBatch) -> int:
        """Ingest ``request`` for ``account``; the number of messages newly stored."""
        ...

    async def stored(self, account: Account[Any]) -> int:
        """How many inbound messages of ``account`` the store holds."""
        ...


class StoreIngestion:
    """The default ``ingestion``: the channel's ``receive``, then the core's ``ingest``.

    The store is a real one (a temporary SQLite database by default), so dedupe by
    ``provider_id``, threading and contact lookup run exactly as in a deployment. A refused
    request (``SignatureError``, ``MalformedPayload``) must leave the store as it was; the
    counts before and after are compared here too, so the core's own path is held to the
    rule the channel is.
    """

    def __init__(self, store: Any, plugins: Plugins) -> None:
        self.store = store
        self.plugins = plugins

    async def stored(self, account: Account[Any]) -> int:
        import sqlalchemy as sa

        from tidings.store import tables

        m = tables.messages
        query = sa.select(sa.func.count()).where(
            m.c.account_id == account.id, m.c.direction == "in"
        )
        async with self.store.read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def deliver(self, account: Account[Any], request: WebhookRequest | PolledBatch) -> int:
        from tidings.conversations import Conversations

        before = await self.stored(account)
        try:
            messages = await self.plugins.channel(account.channel).receive(account, request)
        except (SignatureError, MalformedPayload):
            after = await self.stored(account)
            assert after == before, f"a refused request changed the store: {before} -> {after}"
            raise
        conversations = Conversations(self.store, self.plugins, {account.id: account})
        result = await conversations.ingest(account.id, messages)
        return len(result.stored)


# --- applicability: checks that do not apply are deselected, never skipped ---------------


@dataclass(frozen=True)
class Facts:
    """What the suite knows about the channel when deciding which checks exist."""

    capabilities: Capabilities
    implemented: frozenset[str]
    plugin_hooks: frozenset[str]
    cls: type[ChannelConformance]

    @property
    def can_send(self) -> bool:
        return self.capabilities.can_reply or self.capabilities.can_initiate


@dataclass(frozen=True)
class Rule:
    applies: Callable[[Facts], bool]
    reason: str


RULES: dict[str, Rule] = {}


def _when(applies: Callable[[Facts], bool], reason: str) -> Callable[[Any], Any]:
    def mark(func: Any) -> Any:
        RULES[func.__name__] = Rule(applies, reason)
        return func

    return mark


def _signed(facts: Facts) -> bool:
    return not facts.capabilities.polled and facts.cls.unsigned_webhooks_reason is None


_facts_cache: dict[type[Any], Facts | None] = {}


def _facts(cls: type[ChannelConformance]) -> Facts | None:
    """The channel's declarations, or ``None`` when it cannot be loaded (then every check
    runs and the registration check says why)."""
    if cls not in _facts_cache:
        try:
            plugins = cls.load()
            handle = plugins.channel(cls.channel_name)
            hooks = {
                impl_name
                for impl_name in ("lookup_contacts", "register_commands")
                for impl in getattr(plugins.pm.hook, impl_name).get_hookimpls()
                if impl.plugin_name == cls.plugin
            }
            _facts_cache[cls] = Facts(
                handle.channel.capabilities, handle.implemented, frozenset(hooks), cls
            )
        except Exception:
            _facts_cache[cls] = None
    return _facts_cache[cls]


# --- small helpers ----------------------------------------------------------------------


def _may_hold_secret(annotation: Any) -> bool:
    """Whether a settings field's type is ``SecretStr`` (optional or in a union)."""
    from typing import get_args

    from pydantic import SecretStr

    return annotation is SecretStr or any(_may_hold_secret(a) for a in get_args(annotation))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _default_provider_mock() -> AbstractContextManager[Any]:
    """A fresh respx router: unrouted calls raise, so an unexpected request fails loudly.

    It patches ``httpx.AsyncClient`` itself (``using="httpx"``), not httpx's default
    transport, so a channel that puts another transport under httpx (aiohttp, say) is
    mocked just the same.
    """
    import respx

    return respx.mock(assert_all_called=False, assert_all_mocked=True, using="httpx")


async def _maybe_await(value: object) -> object:
    if inspect.isawaitable(value):
        return await value
    return value


def _json_round_trip(cursor: object) -> str | None:
    """Why ``cursor`` cannot be saved as the channel's state, or ``None`` when it can."""
    if cursor is None:
        return None
    if not isinstance(cursor, Mapping):
        return f"cursor is {type(cursor).__name__}, not a mapping"
    try:
        again = json.loads(json.dumps(cursor))
    except (TypeError, ValueError) as exc:
        return f"cursor {cursor!r} is not JSON-serialisable: {exc}"
    if again != dict(cursor):
        return f"cursor {cursor!r} does not survive JSON (comes back as {again!r})"
    return None


def _calls_made(provider: Any) -> int | None:
    calls = getattr(provider, "calls", None)
    return len(calls) if calls is not None else None


async def _expect_raises(
    kind: type[BaseException] | tuple[type[BaseException], ...],
    call: Callable[[], Any],
    what: str,
) -> BaseException | str:
    """Run ``call``; return the exception of ``kind``, or a sentence saying what happened."""
    names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
    try:
        result = await call()
    except kind as exc:
        return exc
    except Exception as exc:
        return f"{what}: raised {type(exc).__name__}({exc}) instead of {names}"
    return f"{what}: returned {_summary(result)} instead of raising {names}"


def _summary(value: object) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return f"{len(value)} item(s)"
    return type(value).__name__


def _tampered_value(value: str) -> str:
    if not value:
        return "forged"
    last = value[-1]
    return value[:-1] + ("A" if last != "A" else "B")


_SAMPLE_TYPES = {
    "image": "image/png",
    "audio": "audio/mpeg",
    "video": "video/mp4",
    "text": "text/plain",
    "application": "application/pdf",
}


def _allowed_type(patterns: Sequence[str]) -> str:
    for pattern in patterns:
        major, _, minor = pattern.partition("/")
        if minor != "*":
            return pattern
        if major != "*":
            return _SAMPLE_TYPES.get(major, f"{major}/octet-stream")
    return "application/pdf"


_EXTENSIONS = {"image/png": "png", "application/pdf": "pdf", "text/plain": "txt"}


# --- the abstract checks ------------------------------------------------------------------


class ChannelConformance:
    """Subclass as ``Test…`` and override the fixtures below; every ``test_`` is a check.

    Class attributes:

    * ``plugin`` — the entry-point name in the ``tidings`` group (required);
    * ``channel_name`` — the channel's ``name`` (required);
    * ``signature_headers`` — lower-cased header names carrying the webhook signature;
    * ``signature_covers_body`` — False when the signature is a shared secret that does
      not depend on the body (Telegram's secret token);
    * ``unsigned_webhooks_reason`` — for providers that cannot sign at all (a plain web
      form): the signature check is deselected with this reason;
    * ``receives_attachments`` — False for channels that never receive files;
    * ``outbound_media_by_url`` — True when the provider fetches outbound files from public
      URLs (Twilio's ``MediaUrl``) instead of receiving their bytes: the suite then gives
      each attachment a ``url`` and ``sent_attachments`` returns the URLs the provider got.
    """

    plugin: ClassVar[str]
    channel_name: ClassVar[str]
    signature_headers: ClassVar[tuple[str, ...]] = ()
    signature_covers_body: ClassVar[bool] = True
    unsigned_webhooks_reason: ClassVar[str | None] = None
    receives_attachments: ClassVar[bool] = True
    outbound_media_by_url: ClassVar[bool] = False
    account_id: ClassVar[str] = "conformance"

    @classmethod
    def load(cls) -> Plugins:
        """The plugin loaded alone, through its entry point, as a deployment loads it."""
        return load_plugins({"TIDINGS_PLUGINS": cls.plugin})

    # -- fixtures every vendor overrides --------------------------------------------------

    def _override(self, fixture: str, why: str) -> Any:
        pytest.fail(
            f"{type(self).__name__} must override the fixture {fixture!r}: {why}", pytrace=False
        )

    @pytest.fixture
    def account_settings(self) -> Mapping[str, Any]:
        """Valid settings as written in tidings.toml (secrets as plain strings)."""
        return self._override("account_settings", "valid settings of one account")  # type: ignore[no-any-return]

    @pytest.fixture
    def bad_settings(self) -> Sequence[BadSettings]:
        """Invalid values, each with the field the error must name."""
        return self._override("bad_settings", "at least one invalid value and its field")  # type: ignore[no-any-return]

    @pytest.fixture
    def inbound_samples(self, account: Account[Any]) -> Sequence[InboundSample]:
        return self._override("inbound_samples", "provider-shaped requests with messages")  # type: ignore[no-any-return]

    @pytest.fixture
    def sign(self, account: Account[Any]) -> Callable[[WebhookRequest], WebhookRequest]:
        """Return a copy of a request with a valid signature for its url and body."""
        facts = _facts(type(self))
        if facts is not None and not _signed(facts):
            return lambda request: request
        return self._override("sign", "sign a request the way the provider does")  # type: ignore[no-any-return]

    @pytest.fixture
    def malformed_samples(self, account: Account[Any]) -> Sequence[MalformedSample]:
        """Provider-specific bodies that are not what the provider documents."""
        return ()

    @pytest.fixture
    def recipient(self) -> Address:
        return self._override("recipient", "a valid customer address for send")  # type: ignore[no-any-return]

    @pytest.fixture
    def outbound_message(self, recipient: Address) -> OutboundMessage:
        return OutboundMessage(id="conformance-1", to=(recipient,), text="Hello from tidings")

    @pytest.fixture
    def send_success(self) -> SendScenario:
        return self._override("send_success", "arrange the mock to accept a message")  # type: ignore[no-any-return]

    @pytest.fixture
    def send_transient(self) -> Sequence[SendScenario]:
        return self._override("send_transient", "rate limit / 5xx arrangements")  # type: ignore[no-any-return]

    @pytest.fixture
    def send_permanent(self) -> Sequence[SendScenario]:
        return self._override("send_permanent", "invalid recipient / refused arrangements")  # type: ignore[no-any-return]

    @pytest.fixture
    def sent_attachments(self) -> Callable[[Any], Sequence[ExpectedAttachment | str]]:
        """Read back from the provider mock the attachments a send uploaded (their URLs
        when ``outbound_media_by_url``)."""
        return self._override("sent_attachments", "parse the attachments the mock received")  # type: ignore[no-any-return]

    @pytest.fixture
    def status_words(self) -> Mapping[str, DeliveryStatus]:
        """Every status word the provider documents and its normalised status."""
        return self._override("status_words", "the provider's status words")  # type: ignore[no-any-return]

    @pytest.fixture
    def status_report(
        self, account: Account[Any]
    ) -> Callable[[str, str], WebhookRequest | PolledBatch]:
        """Build a provider-shaped report (unsigned) of ``word`` for message ``provider_id``."""
        return self._override("status_report", "build a report for (provider_id, word)")  # type: ignore[no-any-return]

    @pytest.fixture
    def status_samples(self, account: Account[Any]) -> Sequence[StatusSample]:
        """Full reports as documented (several updates, error codes…)."""
        return ()

    @pytest.fixture
    def sent_provider_id(self) -> Callable[[int], str]:
        """The provider's id of our outbound message number ``n``, written the way the
        provider writes ids (``SM…`` sids, ``<…@domain>`` Message-IDs); status reports are
        built for these ids and must come back with them."""
        return lambda n: f"conformance-msg-{n}"

    @pytest.fixture
    def polled_batches(self, inbound_samples: Sequence[InboundSample]) -> Sequence[PolledBatch]:
        """Batches as ``poll`` yields them; by default the ``PolledBatch`` inbound samples."""
        return [s.request for s in inbound_samples if isinstance(s.request, PolledBatch)]

    @pytest.fixture
    def poll_source(self) -> Callable[[Sequence[PolledBatch]], object] | None:
        """Optional live source: a function (may be async) that puts the items of the given
        batches where the account's ``poll`` finds them (append them to the test mailbox,
        say). ``None``: the poll checks use the samples alone."""
        return None

    # -- fixtures with working defaults ---------------------------------------------------

    @pytest.fixture
    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        """The loop ``tidings serve`` and ``worker`` run on (``tidings.loop``)."""
        return loop.anyio_backend()

    @pytest.fixture(autouse=True)
    def _conformance_plugin_enabled(self, request: pytest.FixtureRequest) -> None:
        if not request.config.pluginmanager.has_plugin(PLUGIN_NAME):
            pytest.fail(
                f'add pytest_plugins = ["{PLUGIN_NAME}"] to the test module or conftest '
                "(it decides which checks apply to the channel)",
                pytrace=False,
            )

    @pytest.fixture
    def provider_mock(self) -> ProviderMock:
        """A factory of fresh provider mocks; each scenario gets its own.

        The default is a respx router that refuses unrouted calls; channels that do not
        speak HTTP return their own context manager (an SMTP server fixture, say).
        """
        return _default_provider_mock

    @pytest.fixture
    def plugins(self) -> Plugins:
        return type(self).load()

    @pytest.fixture
    def channel(self, plugins: Plugins) -> ChannelHandle:
        return plugins.channel(self.channel_name)

    @pytest.fixture
    def account(self, plugins: Plugins, account_settings: Mapping[str, Any]) -> Account[Any]:
        entry = AccountEntry.model_validate(
            {
                **account_settings,
                "id": self.account_id,
                "channel": self.channel_name,
                "project": "conformance",
            }
        )
        return build_account(entry, Config(public_url="https://tidings.example"), plugins)

    @pytest.fixture
    async def ingestion(
        self, plugins: Plugins, tmp_path: Path, anyio_backend: Any
    ) -> AsyncIterator[Ingestion | None]:
        """The core's ingestion over a temporary SQLite store (override: another, or None)."""
        from tidings.store import Store

        store = Store.open(f"sqlite:///{tmp_path / 'conformance-ingestion.db'}")
        try:
            await store.upgrade()
            yield StoreIngestion(store, plugins)
        finally:
            await store.close()

    @pytest.fixture
    def lookup_addresses(self, inbound_samples: Sequence[InboundSample]) -> Sequence[Address]:
        return ()

    # -- registration and settings -------------------------------------------------------

    def test_registers_through_entry_point(self) -> None:
        """The plugin registers through the "tidings" entry point and loads cleanly."""
        found = [ep for ep in entry_points(group=PROJECT) if ep.name == self.plugin]
        assert found, f"no entry point {self.plugin!r} in group {PROJECT!r}: is it installed?"
        assert len(found) == 1, f"entry point {self.plugin!r} is declared {len(found)} times"
        assert found[0].dist is not None, "the entry point belongs to no distribution"
        try:
            plugins = type(self).load()
        except PluginError as exc:
            pytest.fail(f"load_plugins refused the plugin: {exc}", pytrace=False)
        rows = [r for r in plugins.info() if r.name == self.plugin]
        assert rows, f"plugin {self.plugin!r} was not registered"
        assert self.channel_name in rows[0].channels, (
            f"plugin {self.plugin!r} registers {rows[0].channels}, not {self.channel_name!r}"
        )
        channel = plugins.channel(self.channel_name).channel
        assert isinstance(channel, Channel)
        assert issubclass(channel.settings_model, ChannelSettings)
        assert channel.settings_model.model_config.get("extra") == "forbid", (
            "the settings model must refuse unknown keys (subclass tidings.ChannelSettings)"
        )
        for endpoint, kind in channel.webhooks.items():
            assert isinstance(kind, Endpoint), f"webhook {endpoint!r} is not an Endpoint"

    def test_settings_accept_a_valid_account_and_hide_secrets(
        self, account: Account[Any], account_settings: Mapping[str, Any]
    ) -> None:
        """Valid settings build an account, and secret values never appear in reprs."""
        shown = repr(account) + str(account) + repr(account.settings)
        for name, info in type(account.settings).model_fields.items():
            value = getattr(account.settings, name)
            secret = getattr(value, "get_secret_value", None)
            if secret is not None:
                assert secret() not in shown, f"the secret {name!r} appears in a repr"
            elif _may_hold_secret(info.annotation):
                continue  # an optional SecretStr that this account leaves unset
            elif "secret" in name or "token" in name or "password" in name:
                pytest.fail(
                    f"settings field {name!r} looks secret but is {info.annotation}: use SecretStr",
                    pytrace=False,
                )

    def test_settings_reject_bad_values(
        self,
        plugins: Plugins,
        account_settings: Mapping[str, Any],
        bad_settings: Sequence[BadSettings],
    ) -> None:
        """Each bad configuration is refused with a ConfigError naming account and field."""
        model = plugins.channel(self.channel_name).channel.settings_model
        cases = list(bad_settings)
        assert cases or not model.model_fields, "give at least one BadSettings in bad_settings"
        cases += [
            BadSettings(f"missing {name}", {name: None}, name)
            for name, info in model.model_fields.items()
            if info.is_required() and name in account_settings
        ]
        cases.append(BadSettings("unknown key", {"conformance_typo": "x"}, "conformance_typo"))
        problems = []
        for case in cases:
            settings = {**account_settings, **case.changes}
            settings = {k: v for k, v in settings.items() if v is not None}
            entry = AccountEntry.model_validate(
                {**settings, "id": self.account_id, "channel": self.channel_name, "project": "p"}
            )
            try:
                build_account(entry, Config(), plugins)
            except ConfigError as exc:
                if exc.account != self.account_id or exc.field != case.field:
                    problems.append(
                        f"{case.name}: error names account {exc.account!r} field "
                        f"{exc.field!r}, expected field {case.field!r}"
                    )
            except Exception as exc:
                problems.append(f"{case.name}: raised {type(exc).__name__}, not ConfigError")
            else:
                problems.append(f"{case.name}: accepted {dict(case.changes)!r}")
        assert not problems, "settings: " + "; ".join(problems)

    # -- receiving -----------------------------------------------------------------------

    async def _receive(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        sample: InboundSample,
        sign: Callable[[WebhookRequest], WebhookRequest],
        provider_mock: ProviderMock,
    ) -> list[InboundMessage]:
        request = sample.request
        if isinstance(request, WebhookRequest):
            request = sign(request)
        with provider_mock() as provider:
            if sample.arrange is not None:
                sample.arrange(provider)
            return await channel.receive(account, request)

    @pytest.mark.anyio
    async def test_receive_normalises_samples(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        inbound_samples: Sequence[InboundSample],
        sign: Callable[[WebhookRequest], WebhookRequest],
        provider_mock: ProviderMock,
    ) -> None:
        """Every sample becomes the expected messages: provider id, sender key, text."""
        assert inbound_samples, "inbound_samples is empty"
        assert any(s.expect for s in inbound_samples), "no sample carries a message"
        problems: list[str] = []
        for sample in inbound_samples:
            messages = await self._receive(channel, account, sample, sign, provider_mock)
            if len(messages) != len(sample.expect):
                problems.append(
                    f"{sample.name}: {len(messages)} messages, expected {len(sample.expect)}"
                )
                continue
            ids = [m.provider_id for m in messages]
            if len(set(ids)) != len(ids):
                problems.append(f"{sample.name}: provider ids repeat within one request: {ids}")
            for got, want in zip(messages, sample.expect, strict=True):
                if want.provider_id is not None and got.provider_id != want.provider_id:
                    problems.append(
                        f"{sample.name}: provider_id {got.provider_id!r}, "
                        f"expected {want.provider_id!r}"
                    )
                if got.sender.key != want.sender_key:
                    problems.append(
                        f"{sample.name}: sender {got.sender.key!r}, expected {want.sender_key!r}"
                    )
                if want.text is not None and got.text != want.text:
                    problems.append(f"{sample.name}: text {got.text!r}, expected {want.text!r}")
            if isinstance(sample.request, WebhookRequest):
                reply = channel.channel.reply(account, sign(sample.request))
                if not isinstance(reply, WebhookReply):
                    problems.append(f"{sample.name}: Channel.reply returned {reply!r}")
        assert not problems, "; ".join(problems)

    @pytest.mark.anyio
    async def test_redelivery_yields_the_same_provider_ids(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        inbound_samples: Sequence[InboundSample],
        sign: Callable[[WebhookRequest], WebhookRequest],
        provider_mock: ProviderMock,
        ingestion: Ingestion | None,
    ) -> None:
        """A provider's retry of the same request yields the same provider ids and, through
        the store, stores nothing new."""
        assert inbound_samples, "inbound_samples is empty"
        distinct: set[str] = set()
        for sample in inbound_samples:
            first = await self._receive(channel, account, sample, sign, provider_mock)
            again = await self._receive(channel, account, sample, sign, provider_mock)
            assert [m.provider_id for m in first] == [m.provider_id for m in again], (
                f"{sample.name}: redelivery gave other provider ids — the core would store "
                "the messages twice"
            )
            distinct.update(m.provider_id for m in first)
        if ingestion is None:
            return
        problems = []
        for sample in inbound_samples:
            request = sample.request
            if isinstance(request, WebhookRequest):
                request = sign(request)
            with provider_mock() as provider:
                if sample.arrange is not None:
                    sample.arrange(provider)
                await ingestion.deliver(account, request)
                before = await ingestion.stored(account)
                stored = await ingestion.deliver(account, request)
                after = await ingestion.stored(account)
            if stored != 0 or after != before:
                problems.append(
                    f"{sample.name}: redelivery stored {stored} new messages "
                    f"({before} -> {after} in the store)"
                )
        total = await ingestion.stored(account)
        if total != len(distinct):
            problems.append(
                f"the samples carry {len(distinct)} distinct messages but the store holds "
                f"{total}: provider ids collide across requests or messages were lost"
            )
        assert not problems, "store: " + "; ".join(problems)

    @pytest.mark.anyio
    @_when(_signed, "the channel is polled or its provider cannot sign (unsigned_webhooks_reason)")
    async def test_rejects_unsigned_and_forged_requests(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        inbound_samples: Sequence[InboundSample],
        sign: Callable[[WebhookRequest], WebhookRequest],
        provider_mock: ProviderMock,
        ingestion: Ingestion | None,
    ) -> None:
        """Missing or wrong signatures raise SignatureError before anything is parsed."""
        assert self.signature_headers, (
            "set signature_headers (or unsigned_webhooks_reason when the provider cannot sign)"
        )
        names = [h.lower() for h in self.signature_headers]
        forged: list[tuple[str, WebhookRequest]] = []
        for sample in inbound_samples:
            if not isinstance(sample.request, WebhookRequest):
                continue
            good = sign(sample.request)
            headers = dict(good.headers)
            missing = [n for n in names if n not in headers]
            assert not missing, f"{sample.name}: sign() did not set {missing}"
            unsigned = {k: v for k, v in headers.items() if k not in names}
            forged.append(
                (f"{sample.name} unsigned", good.model_copy(update={"headers": unsigned}))
            )
            for name in names:
                wrong = {**headers, name: _tampered_value(headers[name])}
                forged.append(
                    (f"{sample.name} wrong {name}", good.model_copy(update={"headers": wrong}))
                )
            if self.signature_covers_body:
                body = good.body + b" "
                forged.append(
                    (f"{sample.name} body changed", good.model_copy(update={"body": body}))
                )
        assert forged, "no webhook sample to forge"
        problems = []
        for name, request in forged:
            with provider_mock() as provider:
                outcome = await _expect_raises(
                    SignatureError, partial(channel.receive, account, request), name
                )
                if isinstance(outcome, str):
                    problems.append(outcome)
                elif _calls_made(provider):
                    problems.append(f"{name}: called the provider before refusing")
            if ingestion is not None:
                problems += await self._refused_by_store(
                    ingestion, account, request, name, SignatureError, provider_mock
                )
        assert not problems, "; ".join(problems)

    async def _refused_by_store(
        self,
        ingestion: Ingestion,
        account: Account[Any],
        request: WebhookRequest | PolledBatch,
        name: str,
        kind: type[WebhookError] | tuple[type[WebhookError], ...],
        provider_mock: ProviderMock,
    ) -> list[str]:
        """Deliver a request that must be refused: the same error, and the store unchanged."""
        before = await ingestion.stored(account)
        with provider_mock():
            outcome = await _expect_raises(kind, partial(ingestion.deliver, account, request), name)
        after = await ingestion.stored(account)
        problems = []
        if isinstance(outcome, str):
            problems.append(f"through the store: {outcome}")
        if after != before:
            problems.append(f"{name}: the store went from {before} to {after} messages")
        return problems

    def _garbage(
        self, channel: ChannelHandle, account: Account[Any], samples: Sequence[InboundSample]
    ) -> list[MalformedSample]:
        content_types = {
            s.request.endpoint: s.request.headers.get("content-type", "")
            for s in samples
            if isinstance(s.request, WebhookRequest)
        }
        bodies = {
            "not UTF-8": b"\xff\xfe\x00\x9c garbage",
            "truncated JSON": b'{"truncated": ',
            "JSON array": b"[1, 2, 3]",
            "JSON null": b"null",
            "empty object": b"{}",
        }
        out = []
        for endpoint in channel.channel.webhooks:
            headers = {"content-type": content_types.get(endpoint) or "application/json"}
            for what, body in bodies.items():
                request = WebhookRequest(
                    url=account.webhook_url(endpoint), endpoint=endpoint, headers=headers, body=body
                )
                out.append(MalformedSample(f"{what} to {endpoint or '/'}", request))
        if channel.channel.capabilities.polled and not channel.channel.webhooks:
            stray = WebhookRequest(
                url=account.webhook_url("conformance"),
                endpoint="conformance",
                headers={"content-type": "application/json"},
                body=b'{"conformance": true}',
            )
            out.append(MalformedSample("a webhook request to a polled channel", stray))
        return out

    def _polled_garbage(
        self, channel: ChannelHandle, account: Account[Any]
    ) -> list[MalformedSample]:
        if not channel.channel.capabilities.polled:
            return []
        items = {
            "empty item": b"",
            "not UTF-8 item": b"\xff\xfe\x00\x9c garbage",
            "truncated JSON item": b'{"truncated": ',
            "one endless line": b"x" * 100_000,
        }
        return [
            MalformedSample(
                f"polled {what}",
                PolledBatch(items=(PolledItem(id=f"conformance-{i}", data=data),)),
            )
            for i, (what, data) in enumerate(items.items())
        ]

    @pytest.mark.anyio
    async def test_malformed_payloads_raise_malformed_payload(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        inbound_samples: Sequence[InboundSample],
        malformed_samples: Sequence[MalformedSample],
        sign: Callable[[WebhookRequest], WebhookRequest],
        provider_mock: ProviderMock,
        ingestion: Ingestion | None,
    ) -> None:
        """Signed garbage raises MalformedPayload — never KeyError, TypeError or a crash —
        and stores nothing."""
        samples = [*self._garbage(channel, account, inbound_samples), *malformed_samples]
        assert samples, "give malformed_samples"
        problems = []
        for sample in samples:
            request = sample.request
            refusals: tuple[type[WebhookError], ...] = (MalformedPayload,)
            if isinstance(request, WebhookRequest):
                try:
                    request = sign(request)
                except Unsignable:
                    refusals = (MalformedPayload, SignatureError)
                kind = channel.channel.webhooks.get(request.endpoint, Endpoint.MESSAGES)
            else:
                kind = Endpoint.MESSAGES
            hook = channel.delivery_status if kind is Endpoint.STATUSES else channel.receive
            with provider_mock():
                outcome = await _expect_raises(
                    refusals, partial(hook, account, request), sample.name
                )
            if isinstance(outcome, str):
                problems.append(outcome)
            elif ingestion is not None and kind is not Endpoint.STATUSES:
                problems += await self._refused_by_store(
                    ingestion, account, request, sample.name, refusals, provider_mock
                )
        for sample in self._polled_garbage(channel, account):
            # Unreadable items may be refused, or kept as messages an agent can open (mail
            # the parser cannot read must not block a mailbox) — but never crash.
            with provider_mock():
                try:
                    await channel.receive(account, sample.request)
                except MalformedPayload:
                    pass
                except Exception as exc:
                    problems.append(
                        f"{sample.name}: raised {type(exc).__name__}({exc}) instead of "
                        "MalformedPayload or messages"
                    )
        assert not problems, "; ".join(problems)

    @pytest.mark.anyio
    @_when(lambda f: f.cls.receives_attachments, "receives_attachments = False")
    async def test_inbound_attachments_keep_name_type_and_size(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        inbound_samples: Sequence[InboundSample],
        sign: Callable[[WebhookRequest], WebhookRequest],
        provider_mock: ProviderMock,
    ) -> None:
        """Inbound files arrive as Attachments with the provider's name, type and size."""
        with_files = [s for s in inbound_samples if any(m.attachments for m in s.expect)]
        assert with_files, (
            "no inbound sample expects attachments (or set receives_attachments = False)"
        )
        for sample in with_files:
            messages = await self._receive(channel, account, sample, sign, provider_mock)
            got = [[ExpectedAttachment.of(a) for a in m.attachments] for m in messages]
            want = [list(m.attachments) for m in sample.expect]
            assert got == want, f"{sample.name}: attachments {got}, expected {want}"

    # -- polling ---------------------------------------------------------------------------

    async def _poll_all(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        cursor: Mapping[str, Any] | None,
        provider_mock: ProviderMock,
    ) -> list[PolledBatch]:
        """Every batch ``poll(follow=False)`` yields from ``cursor`` (bounded in time)."""
        import anyio

        out: list[PolledBatch] = []
        with provider_mock(), anyio.fail_after(POLL_TIMEOUT):
            async for batch in channel.poll(account, cursor, follow=False):
                out.append(batch)
        return out

    async def _live(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        polled_batches: Sequence[PolledBatch],
        poll_source: Callable[[Sequence[PolledBatch]], object],
        provider_mock: ProviderMock,
    ) -> list[PolledBatch]:
        await _maybe_await(poll_source(polled_batches))
        live = await self._poll_all(channel, account, None, provider_mock)
        assert all(isinstance(b, PolledBatch) for b in live), (
            f"poll yielded {[type(b).__name__ for b in live]}, not PolledBatch objects"
        )
        want = sum(len(b.items) for b in polled_batches)
        got = sum(len(b.items) for b in live)
        assert got == want, f"poll_source was given {want} items but poll yielded {got}"
        return live

    @pytest.mark.anyio
    @_when(lambda f: f.capabilities.polled, "the channel is pushed through webhooks, not polled")
    async def test_polled_batches_carry_json_cursors(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        polled_batches: Sequence[PolledBatch],
        poll_source: Callable[[Sequence[PolledBatch]], object] | None,
        provider_mock: ProviderMock,
    ) -> None:
        """Cursors are JSON mappings (saved as the channel's state); item ids are unique."""
        assert polled_batches, "polled_batches is empty: give PolledBatch inbound samples"
        batches = list(polled_batches)
        if poll_source is not None:
            batches += await self._live(
                channel, account, polled_batches, poll_source, provider_mock
            )
        problems = []
        for number, batch in enumerate(batches, 1):
            why = _json_round_trip(batch.cursor)
            if why is not None:
                problems.append(f"batch {number}: {why}")
            ids = [item.id for item in batch.items]
            if len(set(ids)) != len(ids):
                problems.append(f"batch {number}: item ids repeat: {ids}")
        assert not problems, "; ".join(problems)

    @pytest.mark.anyio
    @_when(lambda f: f.capabilities.polled, "the channel is pushed through webhooks, not polled")
    async def test_polled_items_need_no_acknowledge_and_keep_their_ids(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        polled_batches: Sequence[PolledBatch],
        poll_source: Callable[[Sequence[PolledBatch]], object] | None,
        provider_mock: ProviderMock,
        ingestion: Ingestion | None,
    ) -> None:
        """receive works on batches never acknowledged, the same batch gives the same ids,
        and resuming from the last cursor brings back nothing already seen."""
        assert polled_batches, "polled_batches is empty: give PolledBatch inbound samples"
        problems = []

        async def ids(batch: PolledBatch) -> list[str]:
            with provider_mock():
                return [m.provider_id for m in await channel.receive(account, batch)]

        for number, batch in enumerate(polled_batches, 1):
            first, repeat = await ids(batch), await ids(batch)
            if first != repeat:
                problems.append(f"sample batch {number}: ids {first}, then {repeat}")
        if poll_source is None:
            assert not problems, "; ".join(problems)
            return
        live = await self._live(channel, account, polled_batches, poll_source, provider_mock)
        # Nothing acknowledged yet: polling again from the start finds the same items.
        again = await self._poll_all(channel, account, None, provider_mock)
        items = [[i.id for i in b.items] for b in live]
        if [[i.id for i in b.items] for b in again] != items:
            problems.append(
                f"polling twice without acknowledge gave {items}, then "
                f"{[[i.id for i in b.items] for b in again]}"
            )
        live_ids = [pid for b in live for pid in await ids(b)]
        sample_ids = [pid for b in polled_batches for pid in await ids(b)]
        if sorted(live_ids) != sorted(sample_ids):
            problems.append(f"polled items gave ids {live_ids}, the samples {sample_ids}")
        if [pid for b in again for pid in await ids(b)] != live_ids:
            problems.append("re-receiving the polled batches gave other provider ids")
        if ingestion is not None:
            for batch in live:
                await ingestion.deliver(account, batch)
            before = await ingestion.stored(account)
            if before != len(set(live_ids)):
                problems.append(f"{len(set(live_ids))} polled messages, {before} stored")
            redelivered = [await ingestion.deliver(account, b) for b in again]
            if any(redelivered):
                problems.append(f"re-polled batches stored {sum(redelivered)} new messages")
        for batch in live:
            with provider_mock():
                try:
                    await channel.acknowledge(account, batch)
                except Exception as exc:
                    problems.append(f"acknowledge raised {type(exc).__name__}: {exc}")
        if live and live[-1].cursor is not None:
            seen = {i.id for b in live for i in b.items}
            rest = await self._poll_all(channel, account, live[-1].cursor, provider_mock)
            back = sorted(seen & {i.id for b in rest for i in b.items})
            if back:
                problems.append(f"resuming from the last cursor brought back items {back}")
        assert not problems, "; ".join(problems)

    # -- sending ---------------------------------------------------------------------------

    @pytest.mark.anyio
    @_when(lambda f: f.can_send, "the channel can neither reply nor initiate")
    async def test_send_returns_provider_id_and_status(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        outbound_message: OutboundMessage,
        send_success: SendScenario,
        provider_mock: ProviderMock,
    ) -> None:
        """A successful send returns a SendResult with the provider's id and a status."""
        with provider_mock() as provider:
            send_success.arrange(provider)
            result = await channel.send(account, send_success.message or outbound_message)
        assert isinstance(result, SendResult), f"send returned {type(result).__name__}"
        if send_success.provider_id is not None:
            assert result.provider_id == send_success.provider_id, (
                f"provider_id {result.provider_id!r}, expected {send_success.provider_id!r}"
            )
        if send_success.status is not None:
            assert result.status == send_success.status, (
                f"status {result.status}, expected {send_success.status}"
            )
        info = channel.channel.compose_info(account, outbound_message)
        assert isinstance(info, dict), f"compose_info returned {type(info).__name__}"
        json.dumps(info)  # shown in the UI: must be plain data

    async def _classify(
        self,
        kind: type[TransientSendError] | type[PermanentSendError],
        scenarios: Sequence[SendScenario],
        channel: ChannelHandle,
        account: Account[Any],
        message: OutboundMessage,
        provider_mock: ProviderMock,
    ) -> list[str]:
        problems = []
        for scenario in scenarios:
            with provider_mock() as provider:
                scenario.arrange(provider)
                outcome = await _expect_raises(
                    kind,
                    partial(channel.send, account, scenario.message or message),
                    scenario.name,
                )
            if isinstance(outcome, str):
                problems.append(outcome)
                continue
            assert isinstance(outcome, kind)
            if not outcome.reason:
                problems.append(f"{scenario.name}: no reason for the agent")
            if scenario.code is not None and outcome.code != scenario.code:
                problems.append(
                    f"{scenario.name}: code {outcome.code!r}, expected {scenario.code!r}"
                )
            if (
                scenario.retry_after is not None
                and getattr(outcome, "retry_after", None) != scenario.retry_after
            ):
                problems.append(
                    f"{scenario.name}: retry_after {getattr(outcome, 'retry_after', None)!r}, "
                    f"expected {scenario.retry_after!r}"
                )
        return problems

    @pytest.mark.anyio
    @_when(lambda f: f.can_send, "the channel can neither reply nor initiate")
    async def test_send_transient_failures_are_classified(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        outbound_message: OutboundMessage,
        send_transient: Sequence[SendScenario],
        provider_mock: ProviderMock,
    ) -> None:
        """Rate limits, 5xx and timeouts raise TransientSendError (with retry_after if told)."""
        assert send_transient, "send_transient is empty"
        scenarios = list(send_transient)
        with provider_mock() as probe:
            is_respx = type(probe).__module__.startswith("respx")
        if is_respx:
            import httpx

            def timeout(router: Any) -> None:
                router.route().mock(side_effect=httpx.ConnectTimeout("conformance: timed out"))

            scenarios.append(SendScenario("connection timeout", timeout))
        problems = await self._classify(
            TransientSendError, scenarios, channel, account, outbound_message, provider_mock
        )
        assert not problems, "; ".join(problems)

    @pytest.mark.anyio
    @_when(lambda f: f.can_send, "the channel can neither reply nor initiate")
    async def test_send_permanent_failures_are_classified(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        outbound_message: OutboundMessage,
        send_permanent: Sequence[SendScenario],
        provider_mock: ProviderMock,
    ) -> None:
        """Refusals raise PermanentSendError with the provider's code and reason."""
        assert send_permanent, "send_permanent is empty"
        problems = await self._classify(
            PermanentSendError, send_permanent, channel, account, outbound_message, provider_mock
        )
        assert not problems, "; ".join(problems)

    @pytest.mark.anyio
    @_when(
        lambda f: f.can_send and f.capabilities.attachments is not None,
        "the channel declares no outbound attachments",
    )
    async def test_outbound_attachments_reach_the_provider(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        outbound_message: OutboundMessage,
        send_success: SendScenario,
        sent_attachments: Callable[[Any], Sequence[ExpectedAttachment | str]],
        provider_mock: ProviderMock,
    ) -> None:
        """Attachments within the declared limits reach the provider with name, type, size
        (or, for providers fetching media, with their URL)."""
        limits = channel.channel.capabilities.attachments
        assert limits is not None
        content_type = _allowed_type(limits.content_types)
        ext = _EXTENSIONS.get(content_type, "bin")
        size = min(1000, limits.max_bytes)
        files = tuple(
            Attachment(
                filename=f"conformance-{i}.{ext}",
                content_type=content_type,
                size=size,
                **(
                    {"url": f"https://media.conformance.test/{i}/conformance-{i}.{ext}"}
                    if self.outbound_media_by_url
                    else {"data": bytes((i + j) % 256 for j in range(size))}
                ),
            )
            for i in range(min(2, limits.max_count))
        )
        message = (send_success.message or outbound_message).model_copy(
            update={"attachments": files}
        )
        with provider_mock() as provider:
            send_success.arrange(provider)
            await channel.send(account, message)
            got = sorted(sent_attachments(provider), key=str)
        want: list[ExpectedAttachment | str] = [
            (a.url or "") if self.outbound_media_by_url else ExpectedAttachment.of(a) for a in files
        ]
        want.sort(key=str)
        assert got == want, f"the provider received {got}, expected {want}"

    # -- declared capabilities ---------------------------------------------------------

    def test_capabilities_are_consistent(self, channel: ChannelHandle) -> None:
        """The declared capabilities agree with each other and with the implemented hooks."""
        caps = channel.channel.capabilities
        implemented = channel.implemented
        kinds = set(channel.channel.webhooks.values())
        problems = []
        unknown = set(caps.outside_window) - OUTSIDE_WINDOW_WORDS
        if unknown:
            problems.append(f"outside_window has unknown words {sorted(unknown)}")
        if caps.outside_window and caps.reply_window is None:
            problems.append("outside_window is declared without a reply_window")
        if caps.reply_window is not None and not caps.can_reply:
            problems.append("a reply_window on a channel that cannot reply")
        if caps.read_receipts and not caps.delivery_status:
            problems.append("read_receipts without delivery_status")
        if caps.delivery_status and "delivery_status" not in implemented:
            problems.append("delivery_status declared but the hook is not implemented")
        if "delivery_status" in implemented and not caps.delivery_status:
            problems.append("the delivery_status hook is implemented but not declared")
        if caps.polled != ("poll" in implemented):
            problems.append("polled must be declared exactly when the poll hook is implemented")
        if not caps.polled and not kinds & {Endpoint.MESSAGES, Endpoint.EVENTS}:
            problems.append("a pushed channel needs a MESSAGES or EVENTS webhook endpoint")
        if (
            caps.delivery_status
            and not caps.polled
            and not kinds
            & {
                Endpoint.STATUSES,
                Endpoint.EVENTS,
            }
        ):
            problems.append("delivery_status declared but no STATUSES or EVENTS endpoint")
        if not (caps.can_reply or caps.can_initiate):
            outbound = {
                "attachments": caps.attachments is not None,
                "subject": caps.subject,
                "cc_bcc": caps.cc_bcc,
                "html": caps.html,
                "max_text_length": caps.max_text_length is not None,
                "delivery_status": caps.delivery_status,
            }
            declared = [name for name, on in outbound.items() if on]
            if declared:
                problems.append(f"cannot send but declares outbound abilities {declared}")
        if caps.max_text_length is not None and caps.max_text_length < 1:
            problems.append("max_text_length must be at least 1")
        assert not problems, "; ".join(problems)

    @pytest.mark.anyio
    @_when(lambda f: not f.can_send, "the channel may send (can_reply or can_initiate)")
    async def test_refuses_to_send_where_capabilities_say_no(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        outbound_message: OutboundMessage,
        provider_mock: ProviderMock,
    ) -> None:
        """A channel declaring it can neither reply nor initiate never delivers a message."""
        if "send" not in channel.implemented:
            return
        outcome = "returned"
        with provider_mock() as provider:
            if type(provider).__module__.startswith("respx"):
                provider.route().respond(200, json={})  # record, rather than refuse, a call
            try:
                result: object = await channel.send(account, outbound_message)
            except (NotAllowed, PermanentSendError):
                result, outcome = None, "refused"
            except Exception as exc:
                result, outcome = exc, f"raised {type(exc).__name__}"
            calls = _calls_made(provider)
        assert not calls, (
            f"can_reply=False and can_initiate=False, yet send called the provider {calls} "
            "time(s) and delivered a message: remove the send hook or refuse with NotAllowed"
        )
        assert outcome == "refused", (
            f"can_reply=False and can_initiate=False: send {outcome} ({result!r}) instead of "
            "raising NotAllowed"
        )

    # -- delivery status ---------------------------------------------------------------

    async def _statuses(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        request: WebhookRequest | PolledBatch,
        sign: Callable[[WebhookRequest], WebhookRequest],
        provider_mock: ProviderMock,
    ) -> list[StatusUpdate]:
        if isinstance(request, WebhookRequest):
            request = sign(request)
        with provider_mock():
            return await channel.delivery_status(account, request)

    @pytest.mark.anyio
    @_when(lambda f: f.capabilities.delivery_status, "the channel has no delivery reports")
    async def test_status_words_map_into_delivery_status(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        status_words: Mapping[str, DeliveryStatus],
        status_report: Callable[[str, str], WebhookRequest | PolledBatch],
        status_samples: Sequence[StatusSample],
        sign: Callable[[WebhookRequest], WebhookRequest],
        provider_mock: ProviderMock,
        sent_provider_id: Callable[[int], str],
    ) -> None:
        """Every documented status word maps as expected, with the raw word kept."""
        assert status_words, "status_words is empty"
        problems = []
        sent = sent_provider_id(1)
        for word, expected in status_words.items():
            report = status_report(sent, word)
            updates = await self._statuses(channel, account, report, sign, provider_mock)
            got = [(u.provider_id, u.status, u.raw_status) for u in updates]
            if got != [(sent, expected, word)]:
                problems.append(f"{word!r}: {got}, expected [({sent!r}, {expected})]")
        for sample in status_samples:
            updates = await self._statuses(channel, account, sample.request, sign, provider_mock)
            got_s = [ExpectedStatus(u.provider_id, u.status, u.raw_status) for u in updates]
            if got_s != list(sample.expect):
                problems.append(f"{sample.name}: {got_s}, expected {list(sample.expect)}")
        assert not problems, "; ".join(problems)

    @pytest.mark.anyio
    @_when(lambda f: f.capabilities.delivery_status, "the channel has no delivery reports")
    async def test_unknown_status_word_is_kept_as_unknown(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        status_report: Callable[[str, str], WebhookRequest | PolledBatch],
        sign: Callable[[WebhookRequest], WebhookRequest],
        provider_mock: ProviderMock,
        sent_provider_id: Callable[[int], str],
    ) -> None:
        """A word the channel does not know becomes ``unknown`` with the word — not dropped."""
        sent = sent_provider_id(2)
        report = status_report(sent, UNKNOWN_WORD)
        updates = await self._statuses(channel, account, report, sign, provider_mock)
        got = [(u.provider_id, u.status, u.raw_status) for u in updates]
        assert got == [(sent, DeliveryStatus.UNKNOWN, UNKNOWN_WORD)], (
            f"an unknown word gave {got}: it must be one update, unknown, raw word kept"
        )

    @pytest.mark.anyio
    @_when(lambda f: f.capabilities.delivery_status, "the channel has no delivery reports")
    async def test_status_replay_in_any_order_never_regresses(
        self,
        channel: ChannelHandle,
        account: Account[Any],
        status_words: Mapping[str, DeliveryStatus],
        status_report: Callable[[str, str], WebhookRequest | PolledBatch],
        sign: Callable[[WebhookRequest], WebhookRequest],
        provider_mock: ProviderMock,
        sent_provider_id: Callable[[int], str],
    ) -> None:
        """Reports applied in any order end at the most advanced status the words imply."""
        reports = []
        for word in status_words:
            request = status_report(sent_provider_id(3), word)
            reports += await self._statuses(channel, account, request, sign, provider_mock)
        expected_rank = max(s.rank for s in status_words.values())
        orders = [list(reports), list(reversed(reports))]
        rng = random.Random(20250301)  # noqa: S311 (fixed seed: a failure must reproduce)
        for _ in range(8):
            order = list(reports)
            rng.shuffle(order)
            orders.append(order)
        for order in orders:
            current: DeliveryStatus | None = None
            for update in order:
                if advances(current, update.status):
                    current = update.status
            words = [u.raw_status for u in order]
            best = [s for s in status_words.values() if s.rank == expected_rank]
            assert current is not None, f"replaying {words} gives no status at all"
            assert current.rank == expected_rank, (
                f"replaying {words} ends at {current}, expected one of {best}"
            )

    # -- contacts ----------------------------------------------------------------------

    @pytest.mark.anyio
    @_when(lambda f: "lookup_contacts" in f.plugin_hooks, "the plugin does not look up contacts")
    async def test_lookup_contacts_follows_the_contract(
        self,
        plugins: Plugins,
        lookup_addresses: Sequence[Address],
        inbound_samples: Sequence[InboundSample],
        tmp_path: Path,
    ) -> None:
        """Answers map address keys to ContactMatch sequences (or are None), only for the
        addresses asked about; unknown addresses never raise."""
        from tidings.store import Store

        addresses = [*lookup_addresses, Address.handle("conformance-nobody-knows")]
        asked = {a.key for a in addresses}
        store = Store.open(f"sqlite:///{tmp_path / 'conformance.db'}")
        await store.upgrade()
        impls = [
            i
            for i in plugins.pm.hook.lookup_contacts.get_hookimpls()
            if i.plugin_name == self.plugin
        ]
        try:
            for impl in impls:
                kwargs = {"addresses": addresses, "store": store}
                try:
                    value = impl.function(**{k: kwargs[k] for k in impl.argnames})
                    if inspect.isawaitable(value):
                        value = await value
                except Exception as exc:
                    pytest.fail(
                        f"lookup_contacts(...) raised {type(exc).__name__}: {exc}", pytrace=False
                    )
                assert value is None or isinstance(value, Mapping), (
                    f"lookup_contacts returned {type(value).__name__}, not a mapping of keys"
                )
                for key, matches in (value or {}).items():
                    assert key in asked, f"lookup_contacts answered for {key!r}, not asked"
                    assert isinstance(matches, Sequence), (
                        f"lookup_contacts[{key!r}] is {type(matches).__name__}, not a sequence"
                    )
                    assert not isinstance(matches, str | bytes), (
                        f"lookup_contacts[{key!r}] is text, not a sequence of matches"
                    )
                    bad = [m for m in matches if not _is_contact(m)]
                    assert not bad, f"lookup_contacts[{key!r}] has non-matches {bad}"
        finally:
            await store.close()


def _is_contact(value: object) -> bool:
    from tidings.models import ContactMatch

    return isinstance(value, ContactMatch)


# --- the pytest plugin: deselect what does not apply, report per check --------------------


@dataclass
class _Report:
    path: Path | None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_applicable: list[dict[str, str]] = field(default_factory=list)


_REPORT = pytest.StashKey[_Report]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--conformance-report",
        default=None,
        help="write the conformance checks' outcomes to this JSON file",
    )


def pytest_configure(config: pytest.Config) -> None:
    try:
        path = config.getoption("--conformance-report")
    except ValueError:  # registered after option parsing (pytest_plugins in a module)
        path = None
    config.stash[_REPORT] = _Report(Path(path) if path else None)


def _conformance_class(item: pytest.Item) -> type[ChannelConformance] | None:
    cls = getattr(item, "cls", None)
    if isinstance(cls, type) and issubclass(cls, ChannelConformance):
        return cls
    return None


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    report = config.stash.get(_REPORT, None)
    keep, dropped = [], []
    for item in items:
        cls = _conformance_class(item)
        name = getattr(item, "originalname", item.name)
        rule = RULES.get(name)
        facts = _facts(cls) if cls is not None and rule is not None else None
        if rule is not None and facts is not None and not rule.applies(facts):
            dropped.append(item)
            if report is not None:
                report.not_applicable.append(
                    {"check": name, "class": facts.cls.__name__, "reason": rule.reason}
                )
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
        if report is not None:
            for item in dropped:
                report.results.pop(item.nodeid, None)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    state = _current_report
    if state is None or "::" not in report.nodeid:
        return
    entry = state.results.get(report.nodeid)
    if entry is None:
        return
    if report.when == "call" and report.passed and entry["outcome"] == "not run":
        entry["outcome"] = "passed"
    elif report.failed and entry["outcome"] in ("not run", "passed"):
        entry["outcome"] = "failed" if report.when == "call" else "error"
        text = getattr(report.longrepr, "reprcrash", None)
        message = text.message if text is not None else str(report.longrepr)
        entry["message"] = _first_line(message)[:500]


_current_report: _Report | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _current_report
    _current_report = session.config.stash.get(_REPORT, None)


def pytest_itemcollected(item: pytest.Item) -> None:
    state = _current_report
    if state is not None and _conformance_class(item) is not None:
        func = getattr(item, "function", None)
        state.results.setdefault(item.nodeid, {"outcome": "not run", "message": ""})
        state.results[item.nodeid]["check"] = getattr(item, "originalname", item.name)
        state.results[item.nodeid]["doc"] = _first_line(inspect.getdoc(func) or "")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    report = config.stash.get(_REPORT, None)
    if report is None or not report.not_applicable:
        return
    terminalreporter.section("conformance checks not applicable")
    for row in report.not_applicable:
        terminalreporter.write_line(f"{row['class']}::{row['check']}: {row['reason']}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    report = session.config.stash.get(_REPORT, None)
    if report is None or report.path is None:
        return
    checks = [
        {"nodeid": nodeid, **entry} for nodeid, entry in report.results.items() if "check" in entry
    ]
    report.path.write_text(
        json.dumps(
            {
                "exitstatus": int(exitstatus),
                "checks": checks,
                "not_applicable": report.not_applicable,
            },
            indent=2,
        ),
        encoding="utf-8",
    )


__all__ = [
    "BadSettings",
    "ChannelConformance",
    "ExpectedAttachment",
    "ExpectedMessage",
    "ExpectedStatus",
    "InboundSample",
    "Ingestion",
    "MalformedSample",
    "SendScenario",
    "StatusSample",
    "StoreIngestion",
    "Unsignable",
]


def iter_checks() -> Iterator[tuple[str, str]]:
    """Every check's name and one-line description (for docs and the CLI)."""
    for name, value in vars(ChannelConformance).items():
        if name.startswith("test_") and callable(value):
            yield name, _first_line(inspect.getdoc(value) or "")
