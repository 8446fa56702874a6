"""Helpers every benchmark in ``bench/`` shares: timing, percentiles, printing, databases.

Benchmarks are scripts (``python bench/<name>.py``), so this module is imported as
``common`` from the script's own folder. A benchmark prints its figures next to a baseline
measured in the same run on the same machine, because absolute numbers from a shared
2-core box say little on their own; the ratio to the baseline is what travels.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

AIM_MS = 50.0
"""The issue's aim: every view and search under this p95 at full size."""


def percentile(samples: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile by linear interpolation between closest ranks.

    Interpolating (rather than nearest rank) keeps p95 of 50 samples from simply being the
    third-largest sample, which would make two runs of the same query jump around.
    """
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Latency:
    """Latencies of one named operation, in milliseconds."""

    name: str
    samples: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """CPU time of this process per run (ms): SQLite runs in-process, so on a busy shared
    machine this is the figure that does not include waiting for a core."""
    note: str = ""
    rows: int = 0
    """Rows the last run returned: a view that returns nothing is fast for a bad reason."""

    @property
    def p50(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p95(self) -> float:
        return percentile(self.samples, 95)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def cpu_p50(self) -> float:
        return percentile(self.cpu, 50) if self.cpu else 0.0


async def measure(
    name: str,
    run: Callable[[int], Awaitable[int]],
    *,
    repeat: int,
    warmup: int = 2,
    note: str = "",
) -> Latency:
    """Time ``run(i)`` ``repeat`` times after ``warmup`` untimed calls.

    ``run`` gets the iteration number (to vary the agent or the argument) and returns the
    number of rows it produced. Calls run one after another: this is the latency one agent
    sees, not throughput under load.
    """
    for i in range(warmup):
        await run(-1 - i)
    result = Latency(name, note=note)
    for i in range(repeat):
        cpu = time.process_time()
        start = time.perf_counter()
        result.rows = await run(i)
        result.samples.append((time.perf_counter() - start) * 1000.0)
        result.cpu.append((time.process_time() - cpu) * 1000.0)
    return result


class Stopwatch:
    """Accumulated time of the timed parts only (setup between them is not counted)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


class Progress:
    """A progress line at most every ``every`` seconds, so long loads show they are alive."""

    def __init__(self, label: str, total: int, every: float = 10.0) -> None:
        self.label = label
        self.total = total
        self.every = every
        self.started = time.perf_counter()
        self.last = self.started

    def update(self, done: int, rate: float | None = None, *, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.started
        shown = rate if rate is not None else (done / elapsed if elapsed else 0.0)
        pct = 100.0 * done / self.total if self.total else 100.0
        say(f"  {self.label}: {done:,}/{self.total:,} ({pct:.0f}%), {shown:,.0f}/s, "
            f"{elapsed:,.0f} s elapsed")  # fmt: skip


def say(text: str) -> None:
    print(text, flush=True)


def print_latencies(title: str, results: Sequence[Latency], baseline: Latency | None) -> None:
    """A table of p50/p95/max, each row's p95 against the aim, the baseline on top."""
    say(f"\n{title}")
    head = (f"  {'operation':<58} {'n':>4} {'rows':>5} {'p50 ms':>8} {'p95 ms':>8} "
            f"{'max ms':>8} {'cpu p50':>8}")  # fmt: skip
    say(head)
    say("  " + "-" * (len(head) - 2))
    rows = ([baseline] if baseline is not None else []) + list(results)
    for r in rows:
        flag = "" if r is baseline else ("  ok" if r.p95 < AIM_MS else "  OVER AIM")
        say(f"  {r.name:<58} {len(r.samples):>4} {r.rows:>5} {r.p50:>8.2f} {r.p95:>8.2f} "
            f"{r.max:>8.2f} {r.cpu_p50:>8.2f}{flag}")  # fmt: skip
        if r.note:
            say(f"      {r.note}")
    if baseline is not None:
        say(f"  (baseline: {baseline.name}, p50 {baseline.p50:.2f} ms)")


class Postgres:
    """A throwaway PostgreSQL server for a benchmark, outside pytest.

    Reuses the test server of ``tidings.testing.servers`` (a private ``initdb`` cluster,
    run as the ``postgres`` user when we are root). Like the test server it runs without
    fsync: the figures measure the database work, not this machine's disk flushes.
    """

    def __init__(self) -> None:
        from tidings.testing.servers import PostgresServer

        self.server = PostgresServer.from_environment()
        self.databases: list[str] = []

    def __enter__(self) -> Postgres:
        self.server.start()
        return self

    def database(self, prefix: str) -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        url = self.server.create_database(name)
        self.databases.append(name)
        return url

    def __exit__(self, *exc: object) -> None:
        try:
            for name in self.databases:
                with contextlib.suppress(Exception):
                    self.server.drop_database(name)
        finally:
            self.server.stop()


def results_dir() -> Path:
    """``bench/results`` (git-ignored), for runs kept with ``> bench/results/…``."""
    path = Path(__file__).resolve().parent / "results"
    path.mkdir(exist_ok=True)
    return path


def fail(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
    raise SystemExit(2)
