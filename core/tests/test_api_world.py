"""The contact center the API tests drive over HTTP (fixtures only; the tests are in the
other ``test_api_*`` modules).

The conversation test world's channels, accounts and agents, plus an administrator and a
signed-webhook channel (``hook-sms``) so messages can arrive the way they do in
production. Every agent gets an API token; ``Api.as_(name)`` is an httpx client sending
it. Runs on SQLite and PostgreSQL with a manual clock.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from contract_channels import ChannelsPlugin, SignedSettings, sign
from conversation_world import ACCOUNTS, START, Both

from tidings import Account, Address, Attachment, InboundMessage
from tidings.auth import Auth
from tidings.clock import ManualClock
from tidings.config import Config, parse_config
from tidings.conversations import IngestResult, Role
from tidings.plugins import Plugins, load_plugins
from tidings.routing import add_agent
from tidings.runtime import Runtime
from tidings.service import create_app
from tidings.store import Store

HOOK_SECRET = "hook-secret-for-tests"
HOOK_ACCOUNT = Account[Any](
    id="hook-sms",
    channel="test_json",
    project="support",
    settings=SignedSettings(secret=HOOK_SECRET, sender="+48221000777"),  # type: ignore[arg-type]
)
ALL_ACCOUNTS = {**ACCOUNTS, HOOK_ACCOUNT.id: HOOK_ACCOUNT}
BODY_LIMIT = 4096


def plugins() -> tuple[Plugins, ChannelsPlugin]:
    channels = ChannelsPlugin()
    loaded = load_plugins(
        {}, extra=[("both", Both()), ("contract", channels)], entry_points_enabled=False
    )
    return loaded, channels


def config(database_url: str, tmp_path: Path) -> Config:
    return parse_config(
        {"database_url": database_url, "server": {"max_body_bytes": BODY_LIMIT}},
        {},
        tmp_path / "tidings.toml",
    )


def runtime_for(store: Store, cfg: Config, clock: ManualClock) -> tuple[Runtime, ChannelsPlugin]:
    loaded, channels = plugins()
    return Runtime(cfg, loaded, dict(ALL_ACCOUNTS), store, clock), channels


@dataclass
class Api:
    runtime: Runtime
    app: Any
    clock: ManualClock
    channels: ChannelsPlugin
    ids: dict[str, int]
    tokens: dict[str, str]
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    _next: int = 0

    def client(self, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        made = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://t", headers=headers
        )
        self.clients.append(made)
        return made

    def as_(self, name: str) -> httpx.AsyncClient:
        return self.client({"Authorization": f"Bearer {self.tokens[name]}"})

    async def sms(
        self,
        sender: str,
        text: str = "hello",
        *,
        account: str = "sms-pl",
        attachments: tuple[Attachment, ...] = (),
    ) -> IngestResult:
        """A customer's SMS stored by the conversation service (the ingestion path)."""
        self._next += 1
        msg = InboundMessage(
            provider_id=f"API{self._next}",
            sender=Address.phone(sender),
            recipients=(Address.phone(ALL_ACCOUNTS[account].settings.number),),
            text=text,
            sent_at=self.clock(),
            attachments=attachments,
        )
        return await self.runtime.conversations.ingest(account, [msg])

    async def conversation(self, sender: str, text: str = "hello", **kw: Any) -> int:
        result = await self.sms(sender, text, **kw)
        (cid,) = result.conversations
        return cid

    def webhook(self, messages: list[dict[str, str]]) -> tuple[bytes, dict[str, str]]:
        """A signed request of the ``hook-sms`` account's provider."""
        body = json.dumps({"messages": messages}).encode()
        return body, {"x-signature": sign(HOOK_SECRET, body), "content-type": "application/json"}


async def build_api(store: Store, database_url: str, tmp_path: Path) -> Api:
    clock = ManualClock(START)
    runtime, channels = runtime_for(store, config(database_url, tmp_path), clock)
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
        "admin": await add_agent(
            store, "admin", role=Role.ADMINISTRATOR, can_view_all=True,
            permissions=[*both, ("sales", "sms")], clock=clock,
        ),
    }  # fmt: skip
    auth = Auth(store, clock=clock)
    tokens = {
        name: (await auth.create_token(agent_id, name="tests")).token.get_secret_value()
        for name, agent_id in ids.items()
    }
    return Api(runtime, create_app(runtime), clock, channels, ids, tokens)


@pytest.fixture
async def api(store: Store, database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    made = await build_api(store, database_url, tmp_path)
    try:
        yield made
    finally:
        for client in made.clients:
            await client.aclose()
        await made.runtime.close()
