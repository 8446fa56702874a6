"""Two ``tidings worker`` processes drain one PostgreSQL outbox: every message sent once.

The workers are real subprocesses started with a ``tidings.toml`` that points at the test
session's PostgreSQL server and at a local Twilio-shaped HTTP server (``bench/
twilio_server.py``, its own process), which answers like Twilio's Messages resource and
records every (To, Body) it receives with the sid it gave. Exactly once is then checked
from both sides: the provider saw each message one time, and each message in the database
carries the sid the provider gave it for that very request.

10,000 messages: a few hundred are composed through ``Conversations.send`` and the rest
are copies of those rows made in SQL (same conversations, numbered bodies), so the test
spends its time in the workers rather than in composing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))
from twilio_server import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioServer

from tidings.config import load_config
from tidings.conversations import Draft
from tidings.conversations.models import Role
from tidings.plugins import load_plugins
from tidings.routing import add_agent
from tidings.runtime import Runtime
from tidings.store import Store, tables

pytestmark = pytest.mark.anyio

MESSAGES = 10_000
COMPOSED = 200
ACCOUNT = "twilio-load"
DRAIN_TIMEOUT = 240.0
m, o = tables.messages, tables.outbox


def customer(i: int) -> str:
    return f"+48601{i:06d}"


@pytest.fixture
def twilio() -> Iterator[TwilioServer]:
    with TwilioServer() as server:
        yield server


def write_config(path: Path, database_url: str, base_url: str) -> Path:
    path.write_text(
        textwrap.dedent(f"""\
            database_url = "{database_url}"
            public_url = "https://tidings.example.com"

            [[accounts]]
            id = "{ACCOUNT}"
            channel = "sms_twilio"
            project = "support"
            account_sid = "{ACCOUNT_SID}"
            auth_token = "{AUTH_TOKEN}"
            from_number = "{FROM_NUMBER}"
            base_url = "{base_url}"
            """)
    )
    return path


async def compose_and_copy(runtime: Runtime) -> None:
    """``COMPOSED`` messages through the service, then copies up to ``MESSAGES``."""
    agent = await add_agent(runtime.store, "sender", role=Role.AGENT,
                            permissions=[("support", "sms")])  # fmt: skip
    actor = await runtime.conversations.actor(agent)
    for i in range(COMPOSED):
        draft = Draft(text=f"Parcel {i} is on its way", to=(customer(i),))
        await runtime.conversations.send(actor, draft, account_id=ACCOUNT)
    copies = sa.func.generate_series(1, MESSAGES // COMPOSED - 1)
    copy = copies.table_valued("n").render_derived(name="copy")
    columns = [c for c in m.c if c.name != "id"]
    values = [
        (m.c.text + " (copy " + sa.cast(copy.c.n, sa.String) + ")").label("text")
        if c.name == "text"
        else c
        for c in columns
    ]
    now = datetime.now(UTC)
    async with runtime.store.write() as conn:
        await conn.execute(
            sa.insert(m).from_select(
                [c.name for c in columns],
                sa.select(*values)
                .select_from(m.join(copy, sa.true()))
                .where(m.c.direction == "out"),
            )
        )
        await conn.execute(
            sa.insert(o).from_select(
                ["message_id", "account_id", "state", "not_before", "created_at"],
                sa.select(m.c.id, m.c.account_id, sa.literal("pending"), sa.literal(now),
                          sa.literal(now))
                .where(m.c.direction == "out", ~sa.exists().where(o.c.message_id == m.c.id)),
            )
        )  # fmt: skip


async def scalar(store: Store, query: Any) -> Any:
    async with store.read() as conn:
        return (await conn.execute(query)).scalar_one()


def start_worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TIDINGS_PLUGINS": "sms_twilio"}
    env.pop("TIDINGS_CONFIG", None)
    tidings = Path(sys.executable).with_name("tidings")
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(tidings), "worker", "--config", str(config)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def stop(workers: list[subprocess.Popen[bytes]]) -> list[int]:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    codes = []
    for worker in workers:
        try:
            codes.append(worker.wait(timeout=60))
        except subprocess.TimeoutExpired:
            worker.kill()
            codes.append(worker.wait())
    return codes


async def test_two_workers_send_every_message_exactly_once(
    postgres_url: str, twilio: TwilioServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "tidings.toml", postgres_url, twilio.base_url)
    plugins = load_plugins({"TIDINGS_PLUGINS": "sms_twilio"})
    runtime = Runtime.start(load_config(config, {}), plugins=plugins)
    try:
        await runtime.store.upgrade()
        await compose_and_copy(runtime)
        count = sa.select(sa.func.count()).select_from(o)
        assert await scalar(runtime.store, count) == MESSAGES

        logs = [tmp_path / f"worker-{n}.log" for n in (1, 2)]
        workers = [start_worker(config, log) for log in logs]
        claimants: set[str] = set()
        try:
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while await scalar(runtime.store, count):
                async with runtime.store.read() as conn:
                    claimed = await conn.execute(
                        sa.select(o.c.claimed_by).distinct().where(o.c.state == "sending")
                    )
                    claimants.update(x for x in claimed.scalars() if x)
                crashed = [w for w in workers if w.poll() is not None]
                assert not crashed, "a worker exited:\n" + "\n".join(
                    log.read_text() for log in logs
                )
                assert time.monotonic() < deadline, "the outbox was not drained in time"
                await anyio.sleep(0.1)
        finally:
            codes = await anyio.to_thread.run_sync(stop, workers)
        assert codes == [0, 0], "\n".join(log.read_text() for log in logs)
        assert len(claimants) == 2, f"only {claimants} claimed messages"

        stats = await anyio.to_thread.run_sync(lambda: twilio.stats(full=True))
        assert (stats["requests"], stats["created"], stats["rejected"]) == (MESSAGES, MESSAGES, 0)
        assert (stats["distinct"], stats["duplicate_count"]) == (MESSAGES, 0)
        received = {(r["to"], r["body"]): r["sids"] for r in stats["received"]}

        async with runtime.store.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(m.c.id, m.c.recipients, m.c.text, m.c.provider_id, m.c.status).where(
                        m.c.direction == "out"
                    )
                )
            ).all()
            delivered = await conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.count(sa.distinct(tables.events.c.data["message"].as_integer())),
                ).where(tables.events.c.kind == "delivered_to_provider")
            )
            events, distinct_events = delivered.one()
        stored = {
            (row.recipients["to"][0].removeprefix("phone:"), row.text): [row.provider_id]
            for row in rows
        }
        assert len(rows) == MESSAGES
        assert stored == received  # each message has the one sid its one request was given
        assert {row.status for row in rows} == {"queued"}
        assert (events, distinct_events) == (MESSAGES, MESSAGES)
    finally:
        await runtime.close()
