"""The background work of a tidings process: the outbox and the polled channels.

``tidings serve`` runs it in-process; ``tidings worker`` runs only this. Several workers
may run against one PostgreSQL database: the outbox hands each message to one of them
(SKIP LOCKED) and each polled account is held by one worker at a time through an advisory
lock, which PostgreSQL releases when the holder's connection dies — another worker then
takes over from the last committed cursor.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import sqlalchemy as sa

from tidings.channel import Account
from tidings.intake import sync_account
from tidings.runtime import Runtime
from tidings.store import Store, search

log = logging.getLogger("tidings.worker")

RETRY_MAX = 60.0
SLA_SWEEP_EVERY = 30.0
SEARCH_COMPACT_EVERY = 60.0


def polled_accounts(runtime: Runtime) -> list[Account[Any]]:
    return [
        a for a in runtime.accounts.values() if runtime.channel_for(a).channel.capabilities.polled
    ]


def _lock_key(account_id: str) -> int:
    return zlib.crc32(f"tidings-poll:{account_id}".encode()) - 2**31


async def poll_forever(runtime: Runtime, account: Account[Any], stop: anyio.Event) -> None:
    """Keep one polled account in sync; reconnect with backoff after any failure."""
    backoff = 1.0
    while not stop.is_set():
        async with AsyncExitStack() as stack:
            if runtime.store.dialect == "postgresql":
                conn = await stack.enter_async_context(runtime.store.engine.connect())
                held = (
                    await conn.execute(
                        sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _lock_key(account.id)}
                    )
                ).scalar_one()
                await conn.commit()
                if not held:  # another worker holds this account
                    with anyio.move_on_after(5):
                        await stop.wait()
                    continue
            try:
                await sync_account(runtime, account, follow=True)
                backoff = 1.0
            except anyio.get_cancelled_exc_class():
                raise
            except Exception:
                log.exception("polling %s failed; retrying in %.0f s", account.id, backoff)
                with anyio.move_on_after(backoff):
                    await stop.wait()
                backoff = min(backoff * 2, RETRY_MAX)


async def _every(
    every: float, stop: anyio.Event, work: Callable[[], Awaitable[object]], what: str
) -> None:
    """Run ``work`` until ``stop`` is set, resting ``every`` seconds after each run; a
    failure is logged and the next run tries again."""
    while not stop.is_set():
        try:
            await work()
        except anyio.get_cancelled_exc_class():
            raise
        except Exception:
            log.exception("%s failed; trying again in %.0f s", what, every)
        with anyio.move_on_after(every):
            await stop.wait()


async def sweep_sla(runtime: Runtime, stop: anyio.Event, every: float = SLA_SWEEP_EVERY) -> None:
    """Raise SLA signals as their times pass (each once: the sweep is idempotent)."""
    await _every(every, stop, runtime.routing.check_sla, "the SLA sweep")


async def compact_until_done(store: Store) -> int:
    """Merge SQLite's full-text index segments step by step until a step finds nothing to
    merge; the number of steps that merged. Each step is its own transaction, so a writer
    waits for one step (~0.1 s) at most."""
    steps = 0
    while True:
        async with store.write() as conn:
            if not await search.compact_step(conn):
                return steps
        steps += 1
        await anyio.lowlevel.checkpoint()


async def compact_search(
    store: Store, stop: anyio.Event, every: float = SEARCH_COMPACT_EVERY
) -> None:
    """Keep SQLite's full-text indexes in few segments (``search.compact_step``)."""
    await _every(every, stop, partial(compact_until_done, store), "compacting the search index")


async def run_worker(
    runtime: Runtime, stop: anyio.Event, *, outbox: bool = True, pollers: bool = True
) -> None:
    """Run until ``stop`` is set: the outbox finishes its current batch, pollers stop
    between batches (anything not committed is simply fetched again next time)."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(sweep_sla, runtime, stop, name="sla")
        if runtime.store.dialect == "sqlite":
            tg.start_soon(compact_search, runtime.store, stop, name="compact-search")
        if pollers:
            for account in polled_accounts(runtime):
                tg.start_soon(poll_forever, runtime, account, stop, name=f"poll:{account.id}")
        if outbox:
            await runtime.outbox.run(stop)
        else:
            await stop.wait()
        tg.cancel_scope.cancel()
