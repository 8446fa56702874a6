"""The assembled system a command or server runs: configuration, plugins, accounts, store.

Built once at start-up so that every configuration and plugin error surfaces before the
first request, not in the middle of one.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidings.channel import Account
from tidings.clock import Clock, system_clock
from tidings.config import Config, build_accounts, load_config
from tidings.conversations import Conversations
from tidings.outbound.outbox import Outbox
from tidings.plugins import ChannelHandle, Plugins, load_plugins
from tidings.routing.service import Routing
from tidings.store import Store

log = logging.getLogger("tidings.runtime")


def freeze_startup_objects() -> None:
    """Put every object alive after start-up out of the garbage collector's reach.

    A started process holds ~140,000 long-lived objects (modules, plugins, SQLAlchemy's
    tables and compiled statements), and every full collection walked them all again: in
    the SMS pipeline that was 0.04-0.08 ms of CPU per outbound message, 0.026-0.031 with
    them frozen (``bench/README.md``). Only for commands that start once and run long
    (``serve``, ``worker``, ``sync``): frozen objects are never freed.
    """
    gc.collect()
    gc.freeze()


@dataclass
class Runtime:
    config: Config
    plugins: Plugins
    accounts: dict[str, Account[Any]]
    store: Store
    clock: Clock = system_clock

    def __post_init__(self) -> None:
        # Routing first: building it installs the plugins' rule kinds that ingestion uses.
        self.routing = Routing(self.store, self.plugins, clock=self.clock)
        self.conversations = Conversations(
            self.store, self.plugins, self.accounts, clock=self.clock
        )
        rates = {e.id: e.send_rate for e in self.config.accounts if e.send_rate}
        self.outbox = Outbox(self.store, self.plugins, self.accounts, clock=self.clock, rates=rates)

    @classmethod
    def start(
        cls,
        config: Config | None = None,
        *,
        plugins: Plugins | None = None,
        config_path: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Runtime:
        env = os.environ if env is None else env
        plugins = plugins or load_plugins(env)
        config = config or load_config(config_path, env)
        accounts = build_accounts(config, plugins)
        return cls(config, plugins, accounts, Store.open(config.database_url))

    def account(self, account_id: str) -> Account[Any]:
        try:
            return self.accounts[account_id]
        except KeyError:
            self.config.account_entry(account_id)  # raises the ConfigError naming known ids
            raise

    def channel_for(self, account: Account[Any]) -> ChannelHandle:
        return self.plugins.channel(account.channel)

    async def close(self) -> None:
        """Release channels' connections, then the store's."""
        for handle in self.plugins.channels.values():
            try:
                await handle.channel.aclose()
            except Exception:
                log.exception("closing channel %s failed", handle.name)
        await self.store.close()
