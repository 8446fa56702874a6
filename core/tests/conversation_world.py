"""A small contact center for conversation tests: two channels, projects and agents.

``world`` runs on both stores (it builds on the ``store`` fixture) with a manual clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidings import (
    Account,
    Address,
    Capabilities,
    Channel,
    ChannelSettings,
    InboundMessage,
    OutboundMessage,
    SendResult,
    ThreadHeaders,
    Threading,
    hookimpl,
)
from tidings.clock import ManualClock
from tidings.conversations import Actor, Conversations, IngestResult, Role
from tidings.plugins import load_plugins
from tidings.routing import add_agent
from tidings.store import Store

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


class NumberSettings(ChannelSettings):
    number: str


class SmsLike(Channel):
    name = "t_sms"
    kind = "sms"
    settings_model = NumberSettings
    capabilities = Capabilities(threading=Threading.ADDRESS)

    def own_address(self, account: Account[Any]) -> Address:
        return Address.phone(account.settings.number)

    @hookimpl
    def send(self, account: Account[Any], message: OutboundMessage) -> SendResult:
        return SendResult(provider_id=message.id)


class MailSettings(ChannelSettings):
    address: str


class MailLike(Channel):
    name = "t_mail"
    kind = "email"
    settings_model = MailSettings
    capabilities = Capabilities(threading=Threading.MESSAGE_HEADERS, subject=True, cc_bcc=True)

    def own_address(self, account: Account[Any]) -> Address:
        return Address.email(account.settings.address)

    @hookimpl
    def send(self, account: Account[Any], message: OutboundMessage) -> SendResult:
        return SendResult(provider_id=message.id)


class Both:
    @hookimpl
    def register_channels(self) -> list[Channel]:
        return [SmsLike(), MailLike()]


def account(account_id: str, channel: type[Channel], project: str, **settings: str) -> Account[Any]:
    return Account[Any](
        id=account_id,
        channel=channel.name,
        project=project,
        settings=channel.settings_model.model_validate(settings),
    )


ACCOUNTS = {
    "sms-pl": account("sms-pl", SmsLike, "support", number="+48221000000"),
    "sms-de": account("sms-de", SmsLike, "support", number="+49301000000"),
    "mail": account("mail", MailLike, "support", address="help@shop.example"),
    "sales-sms": account("sales-sms", SmsLike, "sales", number="+48221000099"),
}


@dataclass
class World:
    svc: Conversations
    store: Store
    clock: ManualClock
    alice: Actor
    bob: Actor
    carol: Actor
    dave: Actor
    boss: Actor
    _ids: Any = None

    def next_id(self) -> str:
        if self._ids is None:
            self._ids = itertools.count(1)
        return f"P{next(self._ids)}"

    async def sms(
        self,
        sender: str,
        text: str = "hello",
        *,
        account: str = "sms-pl",
        provider_id: str | None = None,
        at: datetime | None = None,
        name: str | None = None,
    ) -> IngestResult:
        msg = InboundMessage(
            provider_id=provider_id or self.next_id(),
            sender=Address.phone(sender, name=name),
            recipients=(Address.phone(ACCOUNTS[account].settings.number),),
            text=text,
            sent_at=at or self.clock(),
        )
        return await self.svc.ingest(account, [msg])

    async def mail(
        self,
        sender: str,
        subject: str,
        message_id: str,
        *,
        in_reply_to: Sequence[str] = (),
        references: Sequence[str] = (),
        text: str = "",
        at: datetime | None = None,
        name: str | None = None,
        cc: Sequence[str] = (),
    ) -> IngestResult:
        msg = InboundMessage(
            provider_id=message_id,
            sender=Address.email(sender, name=name),
            recipients=(Address.email("help@shop.example"),),
            cc=tuple(Address.email(x) for x in cc),
            subject=subject,
            text=text or subject,
            sent_at=at or self.clock(),
            thread=ThreadHeaders(
                message_id=message_id,
                in_reply_to=tuple(in_reply_to),
                references=tuple(references),
            ),
        )
        return await self.svc.ingest("mail", [msg])

    def later(self, **delta: float) -> datetime:
        return self.clock.advance(**delta)

    def ago(self, **delta: float) -> datetime:
        return self.clock() - timedelta(**delta)


@pytest.fixture
async def world(store: Store) -> World:
    clock = ManualClock(START)
    plugins = load_plugins({}, extra=[("both", Both())], entry_points_enabled=False)
    svc = Conversations(store, plugins, ACCOUNTS, clock=clock)
    both = [("support", "sms"), ("support", "email")]
    ids = {
        "alice": await add_agent(store, "alice", permissions=both, clock=clock),
        "bob": await add_agent(store, "bob", permissions=both, clock=clock),
        "carol": await add_agent(store, "carol", permissions=[("support", "sms")], clock=clock),
        "dave": await add_agent(store, "dave", permissions=[("sales", "sms")], clock=clock),
        "boss": await add_agent(
            store, "boss", role=Role.SUPERVISOR, can_view_all=True,
            permissions=[*both, ("sales", "sms")], clock=clock,
        ),
    }  # fmt: skip
    actors = {name: await svc.actor(agent_id) for name, agent_id in ids.items()}
    return World(svc=svc, store=store, clock=clock, **actors)
