"""The outbox benchmark: throughput of one and two ``tidings worker`` processes on one
PostgreSQL outbox, and the latency the pipeline adds to a message (issue 5).

    .venv/bin/python bench/outbox.py [--messages 10000] [--latency-messages 200]
        [--provider-latency 0] [--workers 1,2]

The provider is the local Twilio-shaped server (``twilio_server.py``, its own process);
the workers are real ``tidings worker`` subprocesses with a ``tidings.toml`` pointing at a
throwaway PostgreSQL server (``common.Postgres``) and at that server.

* **throughput** — ``--messages`` messages wait in the outbox, held back (``not_before``
  in the future) while the workers start; one UPDATE releases them all, and the clock
  runs until the outbox is empty. A few hundred are composed through
  ``Conversations.send``, the rest are SQL copies of those rows (same conversations,
  numbered bodies) so the run measures sending, not composing (``bench/sms.py`` times
  composing). Reported: messages/s from release to empty, messages/s as the provider saw
  them (first to last arrival), and the workers' CPU per message (``/proc``, all worker
  processes together). The provider checks that every message arrived exactly once.
* **latency** — one worker running (it looks for due messages every 0.5 s when idle);
  messages composed one by one, 20 a second. For each, the time from ``Conversations.send``
  returning (committed) to the provider receiving it, p50/p95/max; next to it a direct
  POST to the same server, the floor of any pipeline.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import anyio
import psycopg
import sqlalchemy as sa
from common import Postgres, percentile, say
from sms import ACCOUNT, PUBLIC_URL, config_data, customer, runtime_for
from twilio_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    TwilioServer,
    basic_auth,
)

from tidings.conversations import Draft
from tidings.runtime import Runtime
from tidings.store import tables

m, o = tables.messages, tables.outbox
COMPOSED = 200
FAR = timedelta(days=1)


def toml(database_url: str, base_url: str) -> str:
    (account,) = config_data(database_url, base_url)["accounts"]
    lines = [f'database_url = "{database_url}"', f'public_url = "{PUBLIC_URL}"', "",
             "[[accounts]]"] + [f'{k} = "{v}"' for k, v in account.items()]  # fmt: skip
    return "\n".join(lines) + "\n"


# --- workers as processes --------------------------------------------------------------------


@contextmanager
def workers(config: Path, count: int, logs: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {**os.environ, "TIDINGS_PLUGINS": "sms_twilio"}
    env.pop("TIDINGS_CONFIG", None)
    tidings = Path(sys.executable).with_name("tidings")
    procs = []
    try:
        for n in range(count):
            with (logs / f"worker-{n}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen([str(tidings), "worker", "--config", str(config)],
                                     env=env, stdout=log, stderr=subprocess.STDOUT)
                )  # fmt: skip
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


async def wait_connected(url: str, count: int, procs: list[subprocess.Popen[bytes]]) -> None:
    """Until ``count`` other sessions are connected: the workers have started their loops."""
    async with await psycopg.AsyncConnection.connect(libpq(url), autocommit=True) as conn:
        for _ in range(1200):
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a worker exited at start-up (see its log)")
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            row = await cur.fetchone()
            if row is not None and row[0] >= count:
                return
            await anyio.sleep(0.05)
    raise SystemExit("the workers did not connect within a minute")


# --- throughput ------------------------------------------------------------------------------


async def fill(runtime: Runtime, actor_id: int, n: int) -> None:
    """``n`` messages in the outbox, held back: ``COMPOSED`` through the service, the rest
    copied from them in SQL."""
    actor = await runtime.conversations.actor(actor_id)
    later = datetime.now(UTC) + FAR
    composed = min(COMPOSED, n)
    for i in range(composed):
        draft = Draft(text=f"Parcel {i} is on its way", to=(customer(i),))
        await runtime.conversations.send(actor, draft, account_id=ACCOUNT, send_at=later)
    copies = -(-n // composed) - 1
    if copies:
        copy = sa.func.generate_series(1, copies).table_valued("n").render_derived(name="copy")
        columns = [c for c in m.c if c.name != "id"]
        values = [
            (m.c.text + " (copy " + sa.cast(copy.c.n, sa.String) + ")").label("text")
            if c.name == "text"
            else c
            for c in columns
        ]
        async with runtime.store.write() as conn:
            await conn.execute(
                sa.insert(m).from_select(
                    [c.name for c in columns],
                    sa.select(*values).select_from(m.join(copy, sa.true()))
                    .where(m.c.direction == "out"),
                )
            )  # fmt: skip
            await conn.execute(
                sa.insert(o).from_select(
                    ["message_id", "account_id", "state", "not_before", "created_at"],
                    sa.select(m.c.id, m.c.account_id, sa.literal("pending"), sa.literal(later),
                              sa.literal(later))
                    .where(m.c.direction == "out", ~sa.exists().where(o.c.message_id == m.c.id))
                    .order_by(m.c.id)
                    .limit(n - composed),
                )
            )  # fmt: skip
            # Copies beyond n (the last round) are not queued: drop them.
            await conn.execute(
                sa.delete(m).where(
                    m.c.direction == "out", ~sa.exists().where(o.c.message_id == m.c.id)
                )
            )


async def outbox_count(runtime: Runtime) -> int:
    async with runtime.store.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(o))).scalar_one())


@dataclass
class Throughput:
    workers: int
    messages: int
    seconds: float
    provider_seconds: float
    cpu: float


async def throughput(
    pg: Postgres, server: TwilioServer, n: int, count: int, tmp: Path
) -> Throughput:
    url = pg.database("bench_outbox")
    config = tmp / f"tidings-{count}.toml"
    config.write_text(toml(url, server.base_url))
    async with runtime_for(url, server.base_url) as (runtime, actor):
        await fill(runtime, actor.id, n)
        server.reset()
        with workers(config, count, tmp) as procs:
            await wait_connected(url, count, procs)
            cpu = sum(cpu_seconds(p.pid) for p in procs)
            start = time.perf_counter()
            async with runtime.store.write() as conn:
                await conn.execute(sa.update(o).values(not_before=datetime.now(UTC)))
            while True:
                if not await outbox_count(runtime):
                    break
                if any(p.poll() is not None for p in procs):
                    raise SystemExit("a worker exited (see its log)")
                await anyio.sleep(0.05)
            seconds = time.perf_counter() - start
            cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu
    stats = server.stats(full=True)
    if stats["distinct"] != n or stats["duplicate_count"] or stats["requests"] != n:
        seen = (stats["requests"], stats["distinct"], stats["duplicate_count"])
        raise SystemExit(f"{count} workers: (requests, messages, duplicates) = {seen}")
    arrivals = [t for r in stats["received"] for t in r["times"]]
    return Throughput(count, n, seconds, max(arrivals) - min(arrivals), cpu)


# --- latency ---------------------------------------------------------------------------------


async def latency(
    pg: Postgres, server: TwilioServer, n: int, rate: float, tmp: Path
) -> list[float]:
    """Milliseconds from ``Conversations.send`` returning to the provider receiving."""
    url = pg.database("bench_outbox_latency")
    config = tmp / "tidings-latency.toml"
    config.write_text(toml(url, server.base_url))
    composed: dict[str, float] = {}
    async with runtime_for(url, server.base_url) as (runtime, actor):
        with workers(config, 1, tmp) as procs:
            await wait_connected(url, 1, procs)
            # Warm-up: the worker's first sends import the HTTP stack and open connections.
            for i in range(5):
                draft = Draft(text=f"Warm-up {i}.", to=(customer(900_000 + i),))
                await runtime.conversations.send(actor, draft, account_id=ACCOUNT)
            while await outbox_count(runtime):  # noqa: ASYNC110 (the worker drains it)
                await anyio.sleep(0.05)
            server.reset()
            for i in range(n):
                text = f"Your appointment {i} is confirmed."
                await runtime.conversations.send(
                    actor, Draft(text=text, to=(customer(i),)), account_id=ACCOUNT
                )
                composed[text] = time.time()
                await anyio.sleep(1.0 / rate)
            for _ in range(600):
                if not await outbox_count(runtime):
                    break
                await anyio.sleep(0.05)
    stats = server.stats(full=True)
    if stats["distinct"] != n or stats["duplicate_count"]:
        raise SystemExit(f"latency run: the provider saw {stats}")
    return [(r["times"][0] - composed[r["body"]]) * 1000.0 for r in stats["received"]]


async def direct_posts(server: TwilioServer, n: int) -> list[float]:
    """One POST at a time with aiohttp: what sending costs without any pipeline."""
    auth = basic_auth(ACCOUNT_SID, AUTH_TOKEN)
    samples = []
    async with aiohttp.ClientSession() as session:
        for i in range(n + 5):
            form = {"To": customer(500_000 + i), "From": FROM_NUMBER, "Body": f"direct {i}"}
            start = time.perf_counter()
            async with session.post(server.messages_url, data=form,
                                    headers={"Authorization": auth}) as response:  # fmt: skip
                await response.read()
            if i >= 5:  # the first ones open the connection
                samples.append((time.perf_counter() - start) * 1000.0)
    return samples


# --- running ---------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="tidings-bench-outbox-") as tmp, Postgres() as pg:
        with TwilioServer(args.provider_latency) as server:
            results = [
                await throughput(pg, server, args.messages, k, Path(tmp)) for k in args.workers
            ]
            say(f"\nthroughput, PostgreSQL, {args.messages:,} messages, provider latency "
                f"{args.provider_latency:g} ms")  # fmt: skip
            say(f"  {'workers':>7} {'msg/s':>8} {'provider msg/s':>15} {'CPU ms/msg':>11} "
                f"{'wall s':>7}")  # fmt: skip
            for r in results:
                say(f"  {r.workers:>7} {r.messages / r.seconds:>8,.0f} "
                    f"{r.messages / r.provider_seconds:>15,.0f} {r.cpu / r.messages * 1000:>11.3f} "
                    f"{r.seconds:>7.2f}")  # fmt: skip
            delays = await latency(pg, server, args.latency_messages, 20.0, Path(tmp))
            direct = await direct_posts(server, args.latency_messages)
        say(f"\nlatency, compose → provider receives, {args.latency_messages} messages at 20/s, "
            "one worker polling every 0.5 s when idle")  # fmt: skip
        say(f"  {'':<34} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, xs in (("pipeline (compose → provider)", delays),
                         ("baseline: one direct POST", direct)):  # fmt: skip
            say(f"  {name:<34} {percentile(xs, 50):>8.1f} {percentile(xs, 95):>8.1f} "
                f"{max(xs):>8.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--latency-messages", type=int, default=200)
    parser.add_argument("--provider-latency", type=float, default=0.0)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    args = parser.parse_args()
    say(f"bench/outbox.py: {args.messages:,} messages, workers {args.workers}, "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")  # fmt: skip
    anyio.run(main_async, args)


if __name__ == "__main__":
    main()
