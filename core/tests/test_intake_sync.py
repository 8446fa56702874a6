"""`sync_account`: each polled batch committed, then acknowledged while the next one is
taken in; nothing acknowledged that is not stored."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from contract_channels import PolledMailboxChannel

from tidings import (
    Account,
    InboundMessage,
    MalformedPayload,
    PolledBatch,
    WebhookRequest,
    hookimpl,
)
from tidings.config import parse_config
from tidings.intake import sync_account
from tidings.plugins import load_plugins
from tidings.runtime import Runtime
from tidings.store import Store, tables

pytestmark = pytest.mark.anyio

MAILBOX = [(uid, f"customer{uid}@x.org\nmessage {uid}") for uid in range(1, 8)]


class Register:
    def __init__(self, channel: object) -> None:
        self.channel = channel

    @hookimpl
    def register_channels(self) -> list[object]:
        return [self.channel]


class WatchedMailbox(PolledMailboxChannel):
    """Acknowledgements that check what is stored when they run, and that can be held."""

    def __init__(self, store: Store, mailbox: list[tuple[int, str]]) -> None:
        super().__init__(mailbox, batch_size=2)
        self.store = store
        self.stored_at_ack: list[set[str]] = []
        self.release = anyio.Event()
        self.hold_first = False
        self.failing: set[str] = set()
        self.unreadable: str | None = None

    @hookimpl
    def receive(
        self, account: Account[Any], request: WebhookRequest | PolledBatch
    ) -> list[InboundMessage]:
        if isinstance(request, PolledBatch) and request.items[0].id == self.unreadable:
            raise MalformedPayload("unreadable batch")
        return super().receive(account, request)

    @hookimpl
    async def acknowledge(self, account: Account[Any], batch: PolledBatch) -> None:
        async with self.store.read() as conn:
            found = await conn.execute(sa.select(tables.messages.c.provider_id))
            self.stored_at_ack.append(set(found.scalars()))
        if self.hold_first and not self.acknowledged:
            await self.release.wait()
        if batch.items[0].id in self.failing:
            raise ConnectionError("the mailbox went away")
        self.acknowledged.extend(item.id for item in batch.items)


@pytest.fixture
async def runtime(store: Store, tmp_path: Path) -> Any:
    channel = WatchedMailbox(store, MAILBOX)
    plugins = load_plugins({}, extra=[("p", Register(channel))], entry_points_enabled=False)
    config = parse_config({"database_url": "sqlite://"}, {}, tmp_path / "tidings.toml")
    settings = channel.settings_model.model_validate({})
    account = Account[Any](id="mbox", channel="test_polled", project="p", settings=settings)
    return Runtime(config, plugins, {"mbox": account}, store), channel


async def test_each_batch_is_acknowledged_after_its_commit_in_order(runtime: Any) -> None:
    rt, channel = runtime
    batches: list[list[str]] = []
    total = await sync_account(
        rt, rt.accounts["mbox"], on_batch=lambda b, _: batches.append([i.id for i in b.items])
    )
    assert len(total.messages.stored) == 7
    assert batches == [["1", "2"], ["3", "4"], ["5", "6"], ["7"]]
    # Every acknowledgement is done when the sync returns, in the order of the batches...
    assert channel.acknowledged == ["1", "2", "3", "4", "5", "6", "7"]
    # ...and each found its batch stored.
    for batch, stored in zip(batches, channel.stored_at_ack, strict=True):
        assert set(batch) <= stored


async def test_the_next_batch_is_taken_in_while_one_is_acknowledged(runtime: Any) -> None:
    rt, channel = runtime
    channel.hold_first = True
    stored: list[str] = []

    def taken(batch: PolledBatch, _: Any) -> None:
        stored.extend(item.id for item in batch.items)
        if len(stored) >= 4:  # the second batch is committed: the first may end now
            channel.release.set()

    with anyio.fail_after(10):  # waiting for the first acknowledgement would never end
        await sync_account(rt, rt.accounts["mbox"], on_batch=taken)
    # The first acknowledgement ended only after the second batch was committed.
    assert channel.acknowledged == ["1", "2", "3", "4", "5", "6", "7"]


async def test_a_failed_acknowledgement_is_logged_and_the_sync_goes_on(
    runtime: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rt, channel = runtime
    channel.failing = {"3"}
    with caplog.at_level(logging.ERROR, logger="tidings.intake"):
        total = await sync_account(rt, rt.accounts["mbox"])
    assert len(total.messages.stored) == 7
    assert channel.acknowledged == ["1", "2", "5", "6", "7"]
    assert "acknowledging a batch of mbox failed" in caplog.text
    # Stored but not acknowledged: the next sync starts from the committed cursor.
    assert await rt.store.get_state("mbox", "poll") == {"last_uid": 7}


async def test_a_failing_batch_stops_the_sync_and_is_not_acknowledged(runtime: Any) -> None:
    rt, channel = runtime
    channel.unreadable = "5"
    with pytest.raises(MalformedPayload):
        await sync_account(rt, rt.accounts["mbox"])
    assert await rt.store.get_state("mbox", "poll") == {"last_uid": 4}
    # Those committed before may be acknowledged (or come again next time); never the rest.
    assert channel.acknowledged == ["1", "2", "3", "4"][: len(channel.acknowledged)]
