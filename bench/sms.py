"""The SMS benchmark: the whole outbox pipeline against a bare aiohttp loop (issue 9).

    .venv/bin/python bench/sms.py [--messages 5000] [--concurrency 50] [--latency 0,20]
        [--backend sqlite|postgresql|both] [--rounds 3] [--loop auto|uvloop|asyncio]

For each added provider latency it starts the local Twilio-shaped server
(``twilio_server.py``, its own process) and measures, in this process:

* **pipeline** — a real tidings ``Runtime`` (store, plugins, the ``sms_twilio`` channel
  from its entry point, its default transport) with an account whose ``base_url`` is the
  local server. ``--messages`` messages, each to its own customer, are composed through
  ``Conversations.send`` (timed on their own, once), then the outbox worker loop
  (``Outbox.run``) sends them at ``--concurrency`` until the outbox is empty; later rounds
  put the same messages back in the outbox (SQL) and send them again;
* **bare aiohttp** — one ``aiohttp.ClientSession``, ``--concurrency`` tasks POSTing the same
  form bodies with Basic auth and reading the sid: the yardstick of issue 9;
* **official Twilio SDK** — twilio-python's async client (``messages.create_async``, a
  development dependency) sending the same messages at the same concurrency: the issue's
  other yardstick, what a Python contact center would otherwise send with.

All count messages per second of wall time and CPU seconds of this process per message
(``time.process_time``, every thread: SQLite's driver thread included; the PostgreSQL
server's own CPU is not). Beside them, the CPU the Twilio-shaped server's process spent
per message meanwhile (``/proc``): the provider shares this machine's cores, so on a busy
machine a sender's rate depends on the provider's CPU as much as on its own. The server
checks that every message arrived exactly once.
Each of ``--rounds`` rounds runs bare aiohttp, the channel's send hook alone, the Twilio
SDK and the pipeline one after another, so each round's ratios compare figures taken under
the same load of this shared machine; the last lines give their range over the rounds.
Everything runs on one event loop, chosen as ``tidings worker`` chooses its own
(``tidings.loop``: uvloop where installed); ``--loop asyncio`` measures asyncio's own loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import sqlalchemy as sa
from common import Postgres, say
from twilio_server import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    TwilioServer,
    basic_auth,
)

from tidings import Account, Address, OutboundMessage
from tidings.config import parse_config
from tidings.conversations import Actor, Draft
from tidings.conversations.models import Role
from tidings.loop import run, uses_uvloop
from tidings.metrics import METRICS
from tidings.plugins import load_plugins
from tidings.routing import add_agent
from tidings.runtime import Runtime, freeze_startup_objects
from tidings.store import tables
from tidings_sms_twilio import TwilioSettings, TwilioSms

ACCOUNT = "bench-twilio"
PUBLIC_URL = "https://tidings.example.com"


def customer(i: int) -> str:
    """A distinct Polish mobile number per message (E.164)."""
    return f"+48600{i:06d}"


def body(tag: str, i: int) -> str:
    return f"Your order {tag}-{i} has shipped and will arrive tomorrow."


@dataclass
class Phase:
    name: str
    messages: int
    seconds: float
    cpu: float
    provider_cpu: float | None = None
    """CPU seconds of the Twilio-shaped server process meanwhile (its own process)."""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_ms(self) -> float:
        return self.cpu / self.messages * 1000.0


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) of process ``pid`` so far, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def timed(
    name: str, messages: int, into: list[Phase], server: TwilioServer | None = None
) -> Iterator[None]:
    pid = server.process.pid if server is not None and server.process is not None else None
    before = process_cpu(pid) if pid is not None else 0.0
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    phase = Phase(name, messages, time.perf_counter() - wall, time.process_time() - cpu)
    if pid is not None:
        phase.provider_cpu = process_cpu(pid) - before
    into.append(phase)


# --- the pipeline ----------------------------------------------------------------------------


def config_data(database_url: str, base_url: str) -> dict[str, Any]:
    return {
        "database_url": database_url,
        "public_url": PUBLIC_URL,
        "accounts": [
            {
                "id": ACCOUNT, "channel": "sms_twilio", "project": "support",
                "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                "from_number": FROM_NUMBER, "base_url": base_url,
            }
        ],
    }  # fmt: skip


@asynccontextmanager
async def runtime_for(database_url: str, base_url: str) -> AsyncIterator[tuple[Runtime, Actor]]:
    """A migrated tidings runtime with the Twilio account and an agent allowed to send."""
    config = parse_config(config_data(database_url, base_url), {})
    runtime = Runtime.start(config, plugins=load_plugins({"TIDINGS_PLUGINS": "sms_twilio"}))
    try:
        await runtime.store.upgrade()
        agent = await add_agent(
            runtime.store, "bench-agent", role=Role.AGENT, permissions=[("support", "sms")]
        )
        freeze_startup_objects()  # as `tidings worker` does once started
        yield runtime, await runtime.conversations.actor(agent)
    finally:
        await runtime.close()


async def compose(runtime: Runtime, actor: Actor, tag: str, start: int, n: int) -> list[int]:
    """``n`` new messages, each to its own customer, through the service API."""
    ids = []
    for i in range(start, start + n):
        sent = await runtime.conversations.send(
            actor, Draft(text=body(tag, i), to=(customer(i),)), account_id=ACCOUNT
        )
        ids.append(sent.message_id)
    return ids


async def outbox_size(runtime: Runtime) -> int:
    async with runtime.store.read() as conn:
        return int(
            (await conn.execute(sa.select(sa.func.count()).select_from(tables.outbox))).scalar_one()
        )


def recorded(channel: str = "sms_twilio") -> float:
    """Messages handed to providers so far: the worker's Prometheus counter, bumped after
    each recording commit (watching it costs no database query)."""
    value = METRICS.registry.get_sample_value("tidings_messages_out_total", {"channel": channel})
    return value or 0.0


async def drain(runtime: Runtime, concurrency: int, expect: int, poll: float = 0.01) -> None:
    """Run the worker loop (``Outbox.run``, as ``tidings worker`` does) until ``expect``
    more messages are recorded as sent, then stop it; the outbox must then be empty. It
    looks every ``poll`` seconds: at most 10 ms late on runs of seconds, and each look
    costs CPU that is counted as the pipeline's."""
    stop = anyio.Event()
    target = recorded() + expect
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: runtime.outbox.run(stop, concurrency=concurrency))
        while recorded() < target:  # noqa: ASYNC110 (a counter, not an event, is what moves)
            await anyio.sleep(poll)
        stop.set()
    left = await outbox_size(runtime)
    if left:
        raise SystemExit(f"the outbox still holds {left} messages")


async def unsent(runtime: Runtime, ids: list[int]) -> int:
    m = tables.messages
    async with runtime.store.read() as conn:
        return int(
            (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(m)
                    .where(m.c.id.in_(ids), m.c.provider_id.is_(None))
                )
            ).scalar_one()
        )


async def composed(
    runtime: Runtime, actor: Actor, server: TwilioServer, n: int, concurrency: int
) -> tuple[list[int], Phase]:
    """Warm the worker up (imports, connections, caches), then compose ``n`` messages
    through ``Conversations.send``; returns their ids and the timed compose phase."""
    tag = secrets.token_hex(3)
    warm = await compose(runtime, actor, tag + "w", 900_000, min(200, n))
    await drain(runtime, concurrency, len(warm))
    phases: list[Phase] = []
    with timed("compose (Conversations.send)", n, phases):
        ids = await compose(runtime, actor, tag, 0, n)
    return ids, phases[0]


async def requeue(runtime: Runtime, ids: list[int]) -> None:
    """Put sent messages back in the outbox as composing left them (``queued``, no provider
    id), so later rounds send the same messages without composing them again (composing
    5,000 takes minutes)."""
    m, o = tables.messages, tables.outbox
    now = sa.bindparam("now", datetime.now(UTC), type_=o.c.created_at.type)
    async with runtime.store.write() as conn:
        await conn.execute(
            sa.update(m).where(m.c.id.in_(ids))
            .values(provider_id=None, status="queued", status_raw=None, status_at=None)
        )  # fmt: skip
        await conn.execute(
            sa.insert(o).from_select(
                ["message_id", "account_id", "state", "not_before", "created_at"],
                sa.select(m.c.id, m.c.account_id, sa.literal("pending"), now, now)
                .where(m.c.id.in_(ids)),
            )
        )  # fmt: skip


async def pipeline(
    runtime: Runtime, server: TwilioServer, ids: list[int], concurrency: int, phases: list[Phase]
) -> None:
    """The outbox worker sends every message of ``ids`` (waiting in the outbox)."""
    server.reset()
    with timed("pipeline (outbox worker)", len(ids), phases, server):
        await drain(runtime, concurrency, len(ids))
    check(server, len(ids), "pipeline")
    missing = await unsent(runtime, ids)
    if missing:
        raise SystemExit(f"pipeline: {missing} messages have no provider id")


# --- the baseline ----------------------------------------------------------------------------


async def bare(server: TwilioServer, n: int, concurrency: int, phases: list[Phase]) -> None:
    """Concurrent POSTs with aiohttp alone: what the pipeline is compared with."""
    tag = secrets.token_hex(3)
    headers = {"Authorization": basic_auth(ACCOUNT_SID, AUTH_TOKEN)}
    callback = f"{PUBLIC_URL}/webhooks/{ACCOUNT}/status"
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(i: int) -> str:
            form = {"To": customer(i), "From": FROM_NUMBER, "Body": body(tag, i),
                    "StatusCallback": callback}  # fmt: skip
            async with session.post(server.messages_url, data=form, headers=headers) as response:
                if response.status != 201:
                    raise SystemExit(f"bare aiohttp: HTTP {response.status}")
                sid: str = (await response.json())["sid"]
                return sid

        async def run(numbers: Iterator[int]) -> None:
            async def worker() -> None:
                for i in numbers:
                    await post(i)

            await asyncio.gather(*(worker() for _ in range(concurrency)))

        await run(iter(range(900_000, 900_000 + min(200, n))))  # warm-up
        server.reset()
        with timed("bare aiohttp loop", n, phases, server):
            await run(iter(range(n)))
    check(server, n, "bare aiohttp")


async def channel_only(server: TwilioServer, n: int, concurrency: int, phases: list[Phase]) -> None:
    """The channel's ``send`` hook alone (its default transport), no outbox: splits the gap
    between the pipeline and bare aiohttp into the channel's HTTP stack and the rest."""
    tag = secrets.token_hex(3)
    channel = TwilioSms()
    settings = TwilioSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                              from_number=FROM_NUMBER, base_url=server.base_url)  # fmt: skip
    account = Account[TwilioSettings](
        id=ACCOUNT, channel="sms_twilio", project="support", settings=settings,
        public_url=PUBLIC_URL,
    )  # fmt: skip

    def messages(numbers: range) -> list[OutboundMessage]:
        """Built before the clock starts: the outbox hands the hook ready messages too."""
        return [OutboundMessage(id=str(i), to=(Address.phone(customer(i)),), text=body(tag, i))
                for i in numbers]  # fmt: skip

    async def run(queue: list[OutboundMessage]) -> None:
        todo = iter(queue)

        async def worker() -> None:
            for message in todo:
                await channel.send(account, message)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    try:
        await run(messages(range(900_000, 900_000 + min(200, n))))  # warm-up
        server.reset()
        queue = messages(range(n))
        with timed("channel send hook alone", n, phases, server):
            await run(queue)
    finally:
        await channel.aclose()
    check(server, n, "channel send hook")


async def twilio_sdk(server: TwilioServer, n: int, concurrency: int, phases: list[Phase]) -> None:
    """The official Twilio SDK's async client (twilio-python: ``messages.create_async`` over
    its ``AsyncTwilioHttpClient``, an aiohttp session) at the same concurrency: the issue's
    other yardstick, measured beside the pipeline rather than quoted from another run."""
    from twilio.http.async_http_client import AsyncTwilioHttpClient  # type: ignore[import-untyped]
    from twilio.rest import Client  # type: ignore[import-untyped]

    tag = secrets.token_hex(3)
    http = AsyncTwilioHttpClient()
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http)
    client.api.base_url = server.base_url  # the local Twilio-shaped server, not api.twilio.com
    callback = f"{PUBLIC_URL}/webhooks/{ACCOUNT}/status"

    async def run(numbers: Iterator[int]) -> None:
        async def worker() -> None:
            for i in numbers:
                sent = await client.messages.create_async(
                    to=customer(i), from_=FROM_NUMBER, body=body(tag, i), status_callback=callback
                )
                if not sent.sid:
                    raise SystemExit("Twilio SDK: no sid in the answer")

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    try:
        await run(iter(range(900_000, 900_000 + min(200, n))))  # warm-up
        server.reset()
        with timed("official Twilio SDK (async)", n, phases, server):
            await run(iter(range(n)))
    finally:
        await http.close()
    check(server, n, "Twilio SDK")


def check(server: TwilioServer, n: int, what: str) -> None:
    stats = server.stats()
    if stats["distinct"] != n or stats["duplicate_count"] or stats["rejected"]:
        raise SystemExit(f"{what}: the server saw {stats}")


# --- running ---------------------------------------------------------------------------------


def report(title: str, phases: list[Phase]) -> tuple[float, float, float]:
    """Print one round; returns the pipeline's share of bare aiohttp's messages per second,
    its CPU per message as a multiple of bare aiohttp's, and its share of the Twilio SDK's
    messages per second."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    say(f"\n{title}, load average {load} on {os.cpu_count()} CPUs")
    say(
        f"  {'phase':<32} {'msg/s':>8} {'CPU ms/msg':>11} {'wall s':>8} {'provider CPU ms/msg':>20}"
    )
    for p in phases:
        provider = f"{p.provider_cpu / p.messages * 1000:>20.3f}" if p.provider_cpu else ""
        say(f"  {p.name:<32} {p.rate:>8,.0f} {p.cpu_ms:>11.3f} {p.seconds:>8.2f} {provider}")
    by = {p.name: p for p in phases}
    send, base = by["pipeline (outbox worker)"], by["bare aiohttp loop"]
    hook, sdk = by["channel send hook alone"], by["official Twilio SDK (async)"]
    say(f"  pipeline / bare aiohttp: {send.rate / base.rate:.0%} of the messages per second, "
        f"{send.cpu_ms / base.cpu_ms:.1f}x the CPU per message")  # fmt: skip
    say(f"  pipeline / official Twilio SDK: {send.rate / sdk.rate:.0%} of the messages per "
        f"second, {send.cpu_ms / sdk.cpu_ms:.1f}x the CPU per message")  # fmt: skip
    say(f"  pipeline / channel send hook alone: {send.rate / hook.rate:.0%} of the messages "
        f"per second, {send.cpu_ms / hook.cpu_ms:.1f}x the CPU per message")  # fmt: skip
    return send.rate / base.rate, send.cpu_ms / base.cpu_ms, send.rate / sdk.rate


async def main_async(args: argparse.Namespace) -> None:
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    pg = Postgres() if "postgresql" in backends else None
    n, concurrency = args.messages, args.concurrency
    with tempfile.TemporaryDirectory(prefix="tidings-bench-sms-") as tmp:
        if pg is not None:
            pg.__enter__()
        try:
            for latency in args.latency:
                with TwilioServer(latency) as server:
                    for backend in backends:
                        url = (
                            f"sqlite:///{tmp}/sms-{latency:g}-{secrets.token_hex(2)}.db"
                            if backend == "sqlite"
                            else pg.database("bench_sms")  # type: ignore[union-attr]
                        )
                        async with runtime_for(url, server.base_url) as (runtime, actor):
                            ids, compose_phase = await composed(
                                runtime, actor, server, n, concurrency
                            )
                            ratios = []
                            for r in range(args.rounds):
                                # Each round runs the four side by side, so its ratios
                                # compare figures taken under the same machine load.
                                phases: list[Phase] = []
                                await bare(server, n, concurrency, phases)
                                await channel_only(server, n, concurrency, phases)
                                await twilio_sdk(server, n, concurrency, phases)
                                if r:
                                    await requeue(runtime, ids)
                                await pipeline(runtime, server, ids, concurrency, phases)
                                if not r:
                                    phases.append(compose_phase)
                                title = (f"latency {latency:g} ms, {backend}, {n:,} messages, "
                                         f"round {r + 1} of {args.rounds}")  # fmt: skip
                                ratios.append(report(title, phases))
                        rates = sorted(x for x, _, _ in ratios)
                        cpus = sorted(y for _, y, _ in ratios)
                        sdks = sorted(z for _, _, z in ratios)
                        say(f"\nlatency {latency:g} ms, {backend}: pipeline / bare aiohttp over "
                            f"{len(ratios)} rounds: {rates[0]:.0%} to {rates[-1]:.0%} of the "
                            f"messages per second (median {statistics.median(rates):.0%}), "
                            f"{cpus[0]:.1f}x to {cpus[-1]:.1f}x the CPU per message")  # fmt: skip
                        middle = statistics.median(sdks)
                        say(f"latency {latency:g} ms, {backend}: pipeline / official Twilio SDK "
                            f"over {len(ratios)} rounds: {sdks[0]:.0%} to {sdks[-1]:.0%} of the "
                            f"messages per second (median {middle:.0%})")  # fmt: skip
        finally:
            if pg is not None:
                pg.__exit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--latency", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 20.0]
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument(
        "--rounds", type=int, default=3, help="bare, channel and pipeline side by side, N times"
    )
    parser.add_argument(
        "--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
        help="the event loop of every phase (auto: as tidings worker, uvloop where installed)",
    )  # fmt: skip
    args = parser.parse_args()
    say(f"bench/sms.py: {args.messages:,} messages, concurrency {args.concurrency}, "
        f"latency {', '.join(f'{x:g}' for x in args.latency)} ms, python {sys.version.split()[0]}, "
        f"{'uvloop' if uses_uvloop(args.loop) else 'asyncio'} event loop, "
        f"{os.cpu_count()} CPUs")  # fmt: skip
    run(main_async, args, event_loop=args.loop)


if __name__ == "__main__":
    main()
