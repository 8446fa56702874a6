"""The plugin contract: every hook, dispatch to the owning channel, and loud failures."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import pytest
from conftest import PluginDists
from contract_channels import (
    AsyncJsonChannel,
    ChannelsPlugin,
    PolledMailboxChannel,
    SyncFormChannel,
    sign,
)

from tidings import (
    Account,
    Address,
    Capabilities,
    Channel,
    ContactMatch,
    ContactType,
    DeliveryStatus,
    Endpoint,
    MalformedPayload,
    OutboundMessage,
    PolledBatch,
    SendResult,
    SignatureError,
    WebhookRequest,
    hookimpl,
)
from tidings.contacts import add_contact
from tidings.errors import PluginError
from tidings.plugins import Plugins, load_plugins
from tidings.store import Store

SECRET = "s3cret"


@pytest.fixture
def plugin() -> ChannelsPlugin:
    return ChannelsPlugin()


@pytest.fixture
def plugins(plugin: ChannelsPlugin) -> Plugins:
    return load_plugins({}, extra=[("test_channels", plugin)], entry_points_enabled=False)


def json_account(account_id: str = "acct-a") -> Account[Any]:
    settings = AsyncJsonChannel.settings_model.model_validate({"secret": SECRET})
    return Account[Any](id=account_id, channel="test_json", project="p", settings=settings)


def signed(payload: dict[str, Any], endpoint: str = "in", secret: str = SECRET) -> WebhookRequest:
    body = json.dumps(payload).encode()
    return WebhookRequest(
        url=f"https://t.example/webhooks/acct-a/{endpoint}",
        endpoint=endpoint,
        headers={"x-signature": sign(secret, body), "content-type": "application/json"},
        body=body,
    )


def outbound(mid: str = "m1") -> OutboundMessage:
    return OutboundMessage(id=mid, to=(Address.phone("+48600100200"),), text="hi")


# --- one test per hook (test_docs checks that each hook spec has one) ---------------------


def test_hook_register_channels(plugins: Plugins, plugin: ChannelsPlugin) -> None:
    assert plugins.channel("test_json").channel is plugin.json
    assert plugins.channel("test_form").channel is plugin.form
    (row,) = [r for r in plugins.info() if r.name == "test_channels"]
    assert row.channels == ("test_form", "test_json")
    assert set(row.hooks) == {"register_channels", "receive", "send", "delivery_status"}
    with pytest.raises(PluginError, match="'nope' is not installed"):
        plugins.channel("nope")


@pytest.mark.anyio
async def test_hook_receive(plugins: Plugins) -> None:
    handle = plugins.channel("test_json")
    messages = await handle.receive(
        json_account(), signed({"messages": [{"id": "SM1", "from": "+48 600 100 200"}]})
    )
    assert [(m.provider_id, m.sender.value) for m in messages] == [("SM1", "+48600100200")]
    with pytest.raises(SignatureError):
        await handle.receive(json_account(), signed({"messages": []}, secret="wrong"))
    with pytest.raises(MalformedPayload):
        await handle.receive(json_account(), signed({"messages": [{"id": "x"}]}))
    # A plain (sync) implementation works through the same call.
    form = WebhookRequest(url="u", endpoint="", body=b"email=A%40Example.COM&message=hello")
    (msg,) = await plugins.channel("test_form").receive(json_account(), form)
    assert msg.sender.value == "A@example.com"
    assert msg.text == "hello"


@pytest.mark.anyio
async def test_hook_send(plugins: Plugins, plugin: ChannelsPlugin) -> None:
    result = await plugins.channel("test_json").send(json_account(), outbound())
    assert result == SendResult(provider_id="acct-a-m1", status=DeliveryStatus.QUEUED)
    assert plugin.json.sent == [("acct-a", "m1")]
    # The form channel cannot send and does not implement the hook: a clear error.
    with pytest.raises(PluginError, match="does not implement the send hook"):
        await plugins.channel("test_form").send(json_account(), outbound())


@pytest.mark.anyio
async def test_hook_delivery_status(plugins: Plugins) -> None:
    request = signed(
        {"statuses": [{"id": "SM1", "status": "delivered"}, {"id": "SM2", "status": "odd"}]},
        endpoint="status",
    )
    updates = await plugins.channel("test_json").delivery_status(json_account(), request)
    assert [(u.provider_id, u.status, u.raw_status) for u in updates] == [
        ("SM1", DeliveryStatus.DELIVERED, "delivered"),
        ("SM2", DeliveryStatus.UNKNOWN, "odd"),
    ]


class CrmPlugin:
    """An async CRM answering for one address, and a broken one that raises."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    @hookimpl
    async def lookup_contacts(self, addresses: list[Address]) -> dict[str, list[ContactMatch]]:
        self.calls.append([a.key for a in addresses])
        return {
            a.key: [ContactMatch(source="crm", external_id="C-9", display_name="Jan (CRM)")]
            for a in addresses
            if a.value == "+48600100200"
        }


class BrokenCrm:
    @hookimpl
    def lookup_contacts(self, addresses: list[Address]) -> None:
        raise RuntimeError("CRM is down")


class SloppyCrm:
    @hookimpl
    def lookup_contacts(self, addresses: list[Address]) -> list[str]:
        return ["not a mapping"]


@pytest.mark.anyio
async def test_hook_lookup_contacts(store: Store) -> None:
    crm = CrmPlugin()
    plugins = load_plugins(
        {},
        extra=[("crm", crm), ("broken", BrokenCrm()), ("sloppy", SloppyCrm())],
        entry_points_enabled=False,
    )
    jan = Address.phone("+48600100200")
    ewa = Address.email("ewa@example.com")
    nobody = Address.phone("+48600999999")
    contact_id = await add_contact(
        store, type=ContactType.PERSON, display_name="Jan Kowalski", addresses=[jan, ewa]
    )
    answers = await plugins.lookup_contacts([jan, ewa, nobody, jan], store)
    assert crm.calls == [[jan.key, ewa.key, nobody.key]]  # one call per batch, no repeats
    assert [(m.source, m.external_id, m.display_name) for m in answers[jan.key]] == [
        ("builtin", str(contact_id), "Jan Kowalski"),
        ("crm", "C-9", "Jan (CRM)"),
    ]
    assert [m.external_id for m in answers[ewa.key]] == [str(contact_id)]
    assert answers[nobody.key] == []
    assert await plugins.lookup_contacts([], store) == {}


# --- dispatch -----------------------------------------------------------------------------


class OtherSmsChannel(Channel):
    name = "test_other"
    kind = "sms"

    def __init__(self) -> None:
        self.sent: list[str] = []

    @hookimpl
    def send(self, account: Account[Any], message: OutboundMessage) -> SendResult:
        self.sent.append(message.id)
        return SendResult(provider_id="other-" + message.id)


class OtherPlugin:
    def __init__(self) -> None:
        self.channel = OtherSmsChannel()

    @hookimpl
    def register_channels(self) -> list[Channel]:
        return [self.channel]


@pytest.mark.anyio
async def test_send_reaches_only_the_owning_channel(plugin: ChannelsPlugin) -> None:
    other = OtherPlugin()
    plugins = load_plugins({}, extra=[("a", plugin), ("b", other)], entry_points_enabled=False)
    assert (
        await plugins.channel("test_other").send(json_account(), outbound("x"))
    ).provider_id == ("other-x")
    assert plugin.json.sent == []
    assert (await plugins.channel("test_json").send(json_account(), outbound("y"))).provider_id == (
        "acct-a-y"
    )
    assert other.channel.sent == ["x"]


class SendObserver:
    """A wrapper sees every channel's sends without being a channel (metrics, tracing)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl(wrapper=True)
    def send(self, account: Account[Any], message: OutboundMessage) -> Generator[None, Any, Any]:
        self.seen.append(message.id)
        return (yield)


@pytest.mark.anyio
async def test_wrappers_observe_every_channel(plugin: ChannelsPlugin) -> None:
    observer = SendObserver()
    plugins = load_plugins(
        {}, extra=[("a", plugin), ("b", OtherPlugin()), ("obs", observer)],
        entry_points_enabled=False,
    )  # fmt: skip
    await plugins.channel("test_json").send(json_account(), outbound("1"))
    await plugins.channel("test_other").send(json_account(), outbound("2"))
    assert observer.seen == ["1", "2"]


# --- loud failures ------------------------------------------------------------------------


class Misspelled:
    @hookimpl
    def lookup_contact(self, addresses: list[Address]) -> None:  # the spec is lookup_contacts
        return None


def test_misspelled_hook_fails_naming_it() -> None:
    with pytest.raises(PluginError, match="lookup_contact") as info:
        load_plugins({}, extra=[("typo", Misspelled())], entry_points_enabled=False)
    assert "misspelled" in str(info.value)


class WrongArgument:
    @hookimpl
    def lookup_contacts(self, addr: list[Address]) -> None:
        return None


def test_hook_with_unknown_argument_fails() -> None:
    with pytest.raises(PluginError, match="addr"):
        load_plugins({}, extra=[("bad", WrongArgument())], entry_points_enabled=False)


class ModuleLevelSend:
    @hookimpl
    def send(self, account: Account[Any], message: OutboundMessage) -> SendResult:
        return SendResult(provider_id="x")


def test_channel_hook_outside_a_channel_fails() -> None:
    with pytest.raises(PluginError, match="implement it as a method of a Channel"):
        load_plugins({}, extra=[("loose", ModuleLevelSend())], entry_points_enabled=False)


def test_duplicate_channel_name_fails(plugin: ChannelsPlugin) -> None:
    with pytest.raises(PluginError, match="'test_json' is registered twice"):
        load_plugins({}, extra=[("a", plugin), ("b", ChannelsPlugin())], entry_points_enabled=False)


class NoSendChannel(Channel):
    name = "test_nosend"
    kind = "sms"
    webhooks = {"in": Endpoint.MESSAGES}

    @hookimpl
    def receive(self, account: Account[Any], request: WebhookRequest) -> list[Any]:
        return []


class Registers:
    def __init__(self, *channels: object) -> None:
        self.channels = channels

    @hookimpl
    def register_channels(self) -> list[object]:
        return list(self.channels)


def test_channel_missing_a_promised_hook_fails() -> None:
    # Capabilities default to can_reply=True, which needs send.
    with pytest.raises(PluginError, match="need the hook\\(s\\) send"):
        load_plugins({}, extra=[("p", Registers(NoSendChannel()))], entry_points_enabled=False)


def test_register_channels_must_return_channels() -> None:
    with pytest.raises(PluginError, match=r"not a tidings\.Channel instance"):
        load_plugins({}, extra=[("p", Registers("sms"))], entry_points_enabled=False)


def test_channel_names_are_checked_at_class_creation() -> None:
    with pytest.raises(TypeError, match="must match"):

        class BadName(Channel):
            name = "Bad Name"
            kind = "sms"


class LyingChannel(Channel):
    name = "test_liar"
    kind = "webform"
    capabilities = Capabilities(can_reply=False, can_initiate=False)
    webhooks = {"": Endpoint.MESSAGES}

    @hookimpl
    async def receive(self, account: Account[Any], request: WebhookRequest) -> Any:
        return {"not": "a list of messages"}


@pytest.mark.anyio
async def test_wrong_return_type_is_a_plugin_error() -> None:
    plugins = load_plugins({}, extra=[("p", Registers(LyingChannel()))], entry_points_enabled=False)
    with pytest.raises(PluginError, match="must return a sequence of InboundMessage"):
        await plugins.channel("test_liar").receive(
            json_account(), WebhookRequest(url="u", endpoint="")
        )


# --- entry points, allow and block lists, uninstalling ------------------------------------

SMS_PLUGIN = """
from tidings import Channel, SendResult, hookimpl

class Sms(Channel):
    name = "ep_sms"
    kind = "sms"

    @hookimpl
    async def send(self, account, message):
        return SendResult(provider_id="ep-" + message.id)

@hookimpl
def register_channels():
    return [Sms()]
"""

CRM_PLUGIN = """
from tidings import hookimpl

@hookimpl
def lookup_contacts(addresses):
    return {}
"""


def test_entry_point_plugins_load_with_their_distribution(plugin_dists: PluginDists) -> None:
    plugin_dists.add("tidings-ep-sms", "tidings_ep_sms", SMS_PLUGIN, entry_point="ep_sms")
    plugins = load_plugins({})
    (row,) = [r for r in plugins.info() if r.name == "ep_sms"]
    assert (row.distribution, row.version) == ("tidings-ep-sms", "1.2.3")
    assert row.channels == ("ep_sms",)
    assert row.hooks == ("register_channels", "send")


def test_allow_and_block_lists(plugin_dists: PluginDists) -> None:
    plugin_dists.add("tidings-ep-sms", "tidings_ep_sms", SMS_PLUGIN, entry_point="ep_sms")
    plugin_dists.add("tidings-ep-crm", "tidings_ep_crm", CRM_PLUGIN, entry_point="ep_crm")

    def names(env: dict[str, str]) -> set[str]:
        return {r.name for r in load_plugins(env).info()} & {
            "ep_sms", "ep_crm", "tidings.contacts.lookup"
        }  # fmt: skip

    assert names({}) == {"ep_sms", "ep_crm", "tidings.contacts.lookup"}
    assert names({"TIDINGS_PLUGINS": "ep_crm"}) == {"ep_crm", "tidings.contacts.lookup"}
    assert names({"TIDINGS_DISABLE_PLUGINS": "ep_sms"}) == {"ep_crm", "tidings.contacts.lookup"}
    assert names({"TIDINGS_PLUGINS": "ep_sms,ep_crm", "TIDINGS_DISABLE_PLUGINS": "ep_crm"}) == {
        "ep_sms",
        "tidings.contacts.lookup",
    }
    assert names({"TIDINGS_DISABLE_PLUGINS": "tidings.contacts.lookup"}) == {"ep_sms", "ep_crm"}


def test_uninstalling_a_plugin_removes_only_its_channel(plugin_dists: PluginDists) -> None:
    sms = plugin_dists.add("tidings-ep-sms", "tidings_ep_sms", SMS_PLUGIN, entry_point="ep_sms")
    plugin_dists.add("tidings-ep-crm", "tidings_ep_crm", CRM_PLUGIN, entry_point="ep_crm")
    assert "ep_sms" in load_plugins({}).channels
    plugin_dists.uninstall(sms)
    plugins = load_plugins({})
    assert "ep_sms" not in plugins.channels
    assert {r.name for r in plugins.info()} >= {"ep_crm", "tidings.contacts.lookup"}


def test_plugin_that_fails_to_import_is_named(plugin_dists: PluginDists) -> None:
    plugin_dists.add("tidings-broken", "tidings_broken", "import does_not_exist\n")
    with pytest.raises(PluginError, match="'tidings_broken' failed to load"):
        load_plugins({})


def test_misspelled_hook_in_an_installed_plugin_fails(plugin_dists: PluginDists) -> None:
    source = "from tidings import hookimpl\n\n@hookimpl\ndef recieve(account, request):\n    pass\n"
    plugin_dists.add("tidings-typo", "tidings_typo", source)
    with pytest.raises(PluginError, match="recieve"):
        load_plugins({})


def test_sync_form_channel_is_a_channel() -> None:
    assert isinstance(SyncFormChannel(), Channel)


# --- polled channels ----------------------------------------------------------------------


def mailbox_account() -> Account[Any]:
    settings = PolledMailboxChannel.settings_model.model_validate({})
    return Account[Any](id="mbox", channel="test_polled", project="p", settings=settings)


@pytest.mark.anyio
async def test_hook_poll() -> None:
    channel = PolledMailboxChannel([(3, "a@x.org\none"), (5, "b@x.org\ntwo"), (9, "c@x.org\n3")])
    handle = load_plugins(
        {}, extra=[("p", Registers(channel))], entry_points_enabled=False
    ).channel("test_polled")
    batches = [b async for b in handle.poll(mailbox_account(), None, follow=False)]
    assert [[i.id for i in b.items] for b in batches] == [["3", "5"], ["9"]]
    assert [b.cursor for b in batches] == [{"last_uid": 5}, {"last_uid": 9}]
    resumed = [b async for b in handle.poll(mailbox_account(), {"last_uid": 5}, follow=False)]
    assert [[i.id for i in b.items] for b in resumed] == [["9"]]
    (first, _) = batches
    messages = await handle.receive(mailbox_account(), first)
    assert [(m.provider_id, m.sender.value, m.text) for m in messages] == [
        ("3", "a@x.org", "one"),
        ("5", "b@x.org", "two"),
    ]


@pytest.mark.anyio
async def test_hook_acknowledge() -> None:
    channel = PolledMailboxChannel([(1, "a@x.org\none")])
    handle = load_plugins(
        {}, extra=[("p", Registers(channel))], entry_points_enabled=False
    ).channel("test_polled")
    (batch,) = [b async for b in handle.poll(mailbox_account(), None, follow=False)]
    assert channel.acknowledged == []  # polling alone marks nothing
    await handle.acknowledge(mailbox_account(), batch)
    assert channel.acknowledged == ["1"]


class NotAGenerator(PolledMailboxChannel):
    name = "test_polled_bad"

    @hookimpl
    async def poll(  # type: ignore[override]
        self, account: Account[Any], cursor: Any, follow: bool
    ) -> list[PolledBatch]:
        return []


@pytest.mark.anyio
async def test_poll_must_be_an_async_generator() -> None:
    plugins = load_plugins(
        {}, extra=[("p", Registers(NotAGenerator([])))], entry_points_enabled=False
    )
    with pytest.raises(PluginError, match="must be an async generator"):
        async for _ in plugins.channel("test_polled_bad").poll(
            mailbox_account(), None, follow=False
        ):
            pass


class PolledWithoutAck(Channel):
    name = "test_noack"
    kind = "email"
    capabilities = Capabilities(polled=True, can_reply=False, can_initiate=False)

    @hookimpl
    def receive(self, account: Account[Any], request: Any) -> list[Any]:
        return []

    @hookimpl
    async def poll(self, account: Account[Any], cursor: Any, follow: bool) -> Any:
        yield PolledBatch()


def test_polled_channel_needs_poll_and_acknowledge() -> None:
    with pytest.raises(PluginError, match="need the hook\\(s\\) acknowledge"):
        load_plugins({}, extra=[("p", Registers(PolledWithoutAck()))], entry_points_enabled=False)
