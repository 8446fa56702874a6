"""SQLite's full-text indexes are kept in few segments, in the background."""

from __future__ import annotations

import anyio
import pytest
import sqlalchemy as sa
from conversation_world import World, world  # noqa: F401

from tidings.conversations import Filters, View
from tidings.service.worker import compact_search, compact_until_done
from tidings.store import search

pytestmark = pytest.mark.anyio


async def segments(w: World) -> int:
    """Segments of the message index: FTS5 lists each segment's terms in its ``_idx``."""
    async with w.store.read() as conn:
        found = await conn.execute(sa.text("SELECT count(DISTINCT segid) FROM message_search_idx"))
        return int(found.scalar_one())


async def hits(w: World, query: str) -> list[int]:
    """The conversations a search finds; ``+…``: those a participant's address finds."""
    filters = Filters(participant=query) if query.startswith("+") else Filters(search=query)
    return [s.id for s in await w.svc.view(w.boss, View.ALL, filters)]


async def fill(w: World, count: int) -> None:
    """``count`` inbound messages, each committed in a transaction of its own: FTS5 writes
    one index segment per transaction."""
    for i in range(count):
        w.later(minutes=1)
        await w.sms(f"+48600{i % 7:06d}", f"Zamówienie paczka{i} kurier paczkomat")


async def test_compaction_merges_segments_and_changes_no_answer(world: World) -> None:
    if world.store.dialect != "sqlite":
        async with world.store.write() as conn:
            assert await search.compact_step(conn) is False  # autovacuum's work there
        return
    async with world.store.read() as conn:
        setting = await conn.execute(
            sa.text("SELECT v FROM message_search_config WHERE k = 'usermerge'")
        )
        assert setting.scalar_one() == 2  # migration 0020
    await fill(world, 40)
    queries = ["kurier paczkomat", "paczka17", "paczka3", "+48600000003", "+4860000000"]
    before = {q: await hits(world, q) for q in queries}
    many = await segments(world)
    assert many >= 4  # what FTS5's own merging (four per level) leaves

    assert await compact_until_done(world.store) > 0
    assert await segments(world) < many
    assert await segments(world) <= 2  # one per level at most, two levels here
    assert await compact_until_done(world.store) == 0  # nothing left to merge
    assert {q: await hits(world, q) for q in queries} == before
    assert len(before["kurier paczkomat"]) == len(before["+4860000000"]) == 7
    assert before["paczka17"] == before["+48600000003"] != before["paczka3"]  # 17 = 3 (mod 7)


async def test_the_worker_compacts_in_the_background(world: World) -> None:
    if world.store.dialect != "sqlite":
        return  # run_worker starts no compaction there: nothing to merge
    await fill(world, 24)
    many = await segments(world)
    assert many >= 4

    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(compact_search, world.store, stop, 0.01)
        with anyio.fail_after(10):
            while await segments(world) >= many:  # noqa: ASYNC110 (the database's state)
                await anyio.sleep(0.01)
        stop.set()
    assert await segments(world) < many
