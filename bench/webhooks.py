"""The webhook benchmark: signed Twilio webhooks into ``tidings serve``, against a bare app.

    .venv/bin/python bench/webhooks.py [--seconds 15] [--connections 16]
        [--backend sqlite|postgresql|both] [--no-worker] [--keep DIR]

Per target it starts a server process on 127.0.0.1 and points a load generator (aiohttp,
in this process, ``--connections`` keep-alive connections) at it for ``--seconds``. Every
request is an inbound-SMS webhook exactly as Twilio sends it — the documented form
parameters, a distinct MessageSid, ``X-Twilio-Signature`` computed with the documented
algorithm for the server's public URL — so ``tidings serve`` checks the signature, parses
the form, files the message into a conversation and commits before it answers.

The baseline, measured in the same run with the same load: a bare Starlette app under the
same uvicorn settings answering the same POSTs with the same TwiML and doing nothing else.
It is the ceiling of HTTP + ASGI + this load generator on this machine; the ratio to it
is what travels (see ``bench/README.md``).

Afterwards every MessageSid that got a 2xx is looked up in the database: each must be
stored exactly once, or the run fails.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import anyio
import httpx
import sqlalchemy as sa
from common import Postgres, fail, percentile, say

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "sms_twilio" / "tests"))
import sms_twilio_samples as tw

from tidings import Account
from tidings.store import Store, tables
from tidings_sms_twilio import TwilioSettings

ACCOUNT = "twilio-bench"
BIN = Path(sys.executable).parent
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

BASELINE_APP = f'''
"""The baseline: answers the webhook POSTs with Twilio's empty TwiML, nothing else."""
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def webhook(request: Request) -> Response:
    await request.body()
    return Response({TWIML!r}, media_type="text/xml")


app = Starlette(routes=[Route("/webhooks/{{account_id}}/{{endpoint}}", webhook, methods=["POST"])])
'''


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- targets -------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    command: list[str]
    port: int
    cwd: Path
    env: dict[str, str]
    database_url: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def running(target: Target, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The target's server process, up and answering, stopped gracefully afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            target.command, cwd=target.cwd, env=target.env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.post(f"{target.url}/webhooks/{ACCOUNT}/nothing", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    fail(f"{target.name} did not start:\n{log.read_text(errors='replace')}")
                time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tidings_target(root: Path, database_url: str, backend: str, worker: bool) -> Target:
    port = _free_port()
    config = root / f"tidings-{backend}.toml"
    config.write_text(
        textwrap.dedent(f"""\
            database_url = "{database_url}"
            public_url = "http://127.0.0.1:{port}"

            [[accounts]]
            id = "{ACCOUNT}"
            channel = "sms_twilio"
            project = "support"
            account_sid = "{tw.ACCOUNT_SID}"
            auth_token = "{tw.AUTH_TOKEN}"
            from_number = "{tw.OUR_NUMBER}"
        """),
        encoding="utf-8",
    )
    command = [str(BIN / "tidings"), "serve", "--port", str(port)]
    if not worker:
        command.append("--no-worker")
    env = {**os.environ, "TIDINGS_CONFIG": str(config), "TIDINGS_PLUGINS": "sms_twilio"}
    return Target(f"tidings serve, {backend}", command, port, root, env, database_url)


def baseline_target(root: Path) -> Target:
    (root / "bench_baseline_app.py").write_text(BASELINE_APP, encoding="utf-8")
    port = _free_port()
    # The same uvicorn settings `tidings serve` uses (log level info, access log on).
    command = [
        str(BIN / "uvicorn"), "bench_baseline_app:app", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "info", "--timeout-graceful-shutdown", "10",
    ]  # fmt: skip
    return Target("baseline: bare Starlette app", command, port, root, dict(os.environ))


# --- the load ------------------------------------------------------------------------------


class Webhooks:
    """An endless supply of distinct, correctly signed inbound-SMS webhooks."""

    def __init__(self, public_url: str, start: int) -> None:
        self.account = Account[TwilioSettings](
            id=ACCOUNT, channel="sms_twilio", project="support",
            settings=tw.settings(), public_url=public_url,
        )  # fmt: skip
        self.next = start

    def make(self) -> tuple[str, bytes, dict[str, str]]:
        n = self.next
        self.next += 1
        sid = tw.message_sid(n)
        params = tw.inbound_sms(f"Benchmark message {n}", sid=sid, sender=f"+4860{n % 5000:07d}")
        req = tw.signed_request(self.account, "inbound", params)
        return sid, req.body, dict(req.headers)


@dataclass
class Run:
    name: str
    connections: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int | str] = field(default_factory=Counter)
    acked: list[str] = field(default_factory=list)
    stored: int | None = None
    server_cpu_ms: float | None = None
    """The server process's CPU per request."""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU a process has used (Linux ``/proc``), or None elsewhere.

    On a shared machine the server may wait for a core; its own CPU per request is the
    figure that does not depend on what else runs."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(target: Target, connections: int, seconds: float, first_sid: int, pid: int) -> Run:
    """``connections`` senders, each posting one webhook after another for ``seconds``."""
    supply = Webhooks(target.url, first_sid)
    path = f"{target.url}/webhooks/{ACCOUNT}/inbound"
    run = Run(target.name, connections)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Warm-up: open the connections and let the server import and cache what it lazily
        # does on the first requests; not counted.
        warm = Run("warm-up", connections)
        await _senders(session, path, supply, warm, connections, time.perf_counter() + 1.0)
        run.acked.extend(warm.acked)
        started, cpu = time.perf_counter(), cpu_seconds(pid)
        await _senders(session, path, supply, run, connections, started + seconds)
        run.seconds = time.perf_counter() - started
        after = cpu_seconds(pid)
        if cpu is not None and after is not None and run.latencies:
            run.server_cpu_ms = (after - cpu) * 1000.0 / len(run.latencies)
    return run


async def _senders(
    session: aiohttp.ClientSession,
    path: str,
    supply: Webhooks,
    run: Run,
    connections: int,
    until: float,
) -> None:
    async def sender() -> None:
        while time.perf_counter() < until:
            sid, body, headers = supply.make()
            start = time.perf_counter()
            try:
                async with session.post(path, data=body, headers=headers) as response:
                    await response.read()
                    status: int | str = response.status
            except aiohttp.ClientError as exc:
                status = type(exc).__name__
            run.latencies.append((time.perf_counter() - start) * 1000.0)
            run.statuses[status] += 1
            if isinstance(status, int) and 200 <= status < 300:
                run.acked.append(sid)

    async with anyio.create_task_group() as tg:
        for _ in range(connections):
            tg.start_soon(sender)


async def count_stored(database_url: str, sids: list[str]) -> tuple[int, int]:
    """(acknowledged sids found, of which stored more than once)."""
    m = tables.messages
    store = Store.open(database_url)
    try:
        found: Counter[str] = Counter()
        async with store.read() as conn:
            for i in range(0, len(sids), 500):
                chunk = sids[i : i + 500]
                rows = await conn.execute(
                    sa.select(m.c.provider_id).where(
                        m.c.account_id == ACCOUNT, m.c.direction == "in", m.c.provider_id.in_(chunk)
                    )
                )
                found.update(str(r.provider_id) for r in rows)
        return len(found), sum(1 for n in found.values() if n > 1)
    finally:
        await store.close()


async def upgrade(database_url: str) -> None:
    store = Store.open(database_url)
    try:
        await store.upgrade()
    finally:
        await store.close()


# --- the run -------------------------------------------------------------------------------


def report(runs: list[Run]) -> None:
    say("\nwebhook ingestion (signed Twilio inbound SMS, 127.0.0.1)")
    head = (f"  {'target':<34} {'conns':>5} {'requests':>8} {'req/s':>8} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'cpu ms':>7}  answers / stored")  # fmt: skip
    say(head)
    say("  " + "-" * (len(head) - 2))
    base = runs[0]
    for r in runs:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items(), key=str))
        stored = "" if r.stored is None else f" / {r.stored} of {len(r.acked)} 2xx stored once"
        cpu = "-" if r.server_cpu_ms is None else f"{r.server_cpu_ms:.2f}"
        say(f"  {r.name:<34} {r.connections:>5} {len(r.latencies):>8} {r.rate:>8.0f} "
            f"{percentile(r.latencies, 50):>8.2f} {percentile(r.latencies, 99):>8.2f} "
            f"{cpu:>7}  {answers}{stored}")  # fmt: skip
    for r in runs[1:]:
        say(f"  {r.name}: {r.rate / base.rate:.1%} of the baseline's requests/s, "
            f"p50 {percentile(r.latencies, 50) / percentile(base.latencies, 50):.1f}x")  # fmt: skip


async def measure_tidings(
    root: Path, database_url: str, backend: str, args: argparse.Namespace, first_sid: int
) -> Run:
    await upgrade(database_url)
    target = tidings_target(root, database_url, backend, args.worker)
    with running(target, root / f"serve-{backend}.log") as proc:
        say(
            f"  {target.name} (pid {proc.pid}): {args.seconds:.0f} s at {args.connections} "
            "connections…"
        )
        run = await load(target, args.connections, args.seconds, first_sid, proc.pid)
    found, doubled = await count_stored(database_url, run.acked)
    if found != len(run.acked) or doubled:
        fail(f"{target.name}: {len(run.acked)} webhooks answered 2xx, {found} stored, "
             f"{doubled} stored twice")  # fmt: skip
    run.stored = found
    return run


async def main(args: argparse.Namespace) -> None:
    say(f"tidings webhook benchmark: {args.seconds:.0f} s per target, {args.connections} "
        f"connections, backend {args.backend}, worker {'on' if args.worker else 'off'}, "
        f"{os.cpu_count()} CPUs")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tidings-bench-webhooks-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        runs: list[Run] = []
        base = baseline_target(root)
        with running(base, root / "baseline.log") as proc:
            say(f"  {base.name}: {args.seconds:.0f} s at {args.connections} connections…")
            runs.append(await load(base, args.connections, args.seconds, 1, proc.pid))
        if args.backend in ("sqlite", "both"):
            url = f"sqlite:///{root / 'bench.db'}"
            runs.append(await measure_tidings(root, url, "sqlite", args, 10_000_000))
        if args.backend in ("postgresql", "both"):
            if args.postgresql_url:
                url = args.postgresql_url
                runs.append(await measure_tidings(root, url, "postgresql", args, 20_000_000))
            else:
                with Postgres() as pg:
                    url = pg.database("bench_webhooks")
                    runs.append(await measure_tidings(root, url, "postgresql", args, 20_000_000))
        report(runs)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per target")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgresql-url", help="an existing database instead of a throwaway")
    parser.add_argument("--no-worker", dest="worker", action="store_false",
                        help="serve without the in-process outbox worker")  # fmt: skip
    parser.add_argument("--keep", help="work in this folder and keep it (logs, database)")
    return parser.parse_args()


if __name__ == "__main__":
    anyio.run(main, parse_args())
