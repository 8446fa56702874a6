"""The email benchmark: a full initial mailbox sync against a plain-imaplib baseline.

    .venv/bin/python bench/mail_sync.py [--messages 10000] [--backend sqlite|postgresql|both]
        [--chunk 50] [--seed 8]

It starts the Dovecot the tests use (``tidings.testing.mailservers``), fills one mailbox
with realistic mail built from the email_imap test corpus — plain text, HTML-only,
Outlook HTML with inline images, Thunderbird attachments, calendar invites, forwards,
Gmail replies quoting the history, out-of-office answers, a few large PDFs — arranged in
threads and interleaved by date as a real support mailbox is, then measures in separate
processes (so each one's peak RSS is its own):

* the baseline: stdlib ``imaplib`` fetching every message (``BODY.PEEK[]``, the same chunk
  size) and parsing it with ``email.message_from_bytes(policy=policy.default)``, walking
  every part and decoding it — what any Python mail reader must at least do;
* tidings: ``sync_account`` into a fresh store — fetch, parse, sanitise HTML, thread,
  store messages, attachments and sources, index for search, commit each batch with its
  cursor, then flag the batch ``\\Seen``.

The baseline runs before and after tidings (it only peeks, so the mailbox stays unread
for tidings) and the faster run counts. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from common import Postgres, say

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "email_imap" / "tests"))
import email_imap_samples as samples  # noqa: E402

ACCOUNT = "bench-mail"
AIM_RSS_MB = 200.0

WORDS = [
    *[
        "order",
        "parcel",
        "invoice",
        "refund",
        "delivery",
        "size",
        "exchange",
        "address",
        "account",
        "password",
    ],
    *["payment", "subscription", "contract", "warranty", "repair", "courier", "tracking", "number"],
    *[
        "please",
        "thanks",
        "hello",
        "regards",
        "urgent",
        "again",
        "still",
        "waiting",
        "yesterday",
        "tomorrow",
    ],
    *["week", "received", "missing", "broken", "colour", "model", "replacement", "receipt", "bank"],
    *["transfer", "card", "discount", "voucher", "store", "online"],
]


# --- the mailbox -------------------------------------------------------------------------


def restamp(raw: bytes, headers: dict[str, str | None]) -> bytes:
    """``raw`` with the named headers replaced (``None`` removes one), body untouched."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    names = {name.lower() for name in headers}
    kept: list[bytes] = []
    dropping = False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.split(b":", 1)[0].decode("ascii", "replace").lower() in names
        if not dropping:
            kept.append(line)
    new = [f"{name}: {value}".encode() for name, value in headers.items() if value is not None]
    return b"\r\n".join(new + kept) + sep + body


def prose(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = rng.choices(WORDS, k=rng.randint(6, 16))
        out.append(" ".join(words).capitalize() + ".")
    return "\n".join(" ".join(out[i : i + 3]) for i in range(0, len(out), 3))


def big_attachment(rng: random.Random, message_id: str) -> bytes:
    """A message with a scanned-document-sized PDF (100-400 KB), as customers send."""
    msg = EmailMessage()
    msg["Message-ID"] = message_id
    msg.set_content(prose(rng, 4))
    pdf = b"%PDF-1.4\n" + rng.randbytes(rng.randint(100_000, 400_000)) + b"\n%%EOF\n"
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="scan.pdf")
    return msg.as_bytes(policy=policy.SMTP)


def opening(rng: random.Random, message_id: str) -> bytes:
    """The first message of a thread: one of the corpus' shapes."""
    kind = rng.choices(
        ["text", "html", "outlook", "attachments", "invite", "forward", "big"],
        weights=[40, 15, 15, 15, 5, 7, 3],
    )[0]
    if kind == "text":
        return samples.simple(message_id=message_id, text=prose(rng, rng.randint(2, 12)))
    if kind == "html":
        return samples.html_only(message_id=message_id)
    if kind == "outlook":
        return samples.outlook_reply_inline_image(message_id=message_id)
    if kind == "attachments":
        return samples.thunderbird_attachments(message_id=message_id)
    if kind == "invite":
        return samples.calendar_invite(message_id=message_id)
    if kind == "forward":
        return samples.forward_with_eml(message_id=message_id)
    return big_attachment(rng, message_id)


def follow_up(rng: random.Random, message_id: str, parent: str, refs: list[str]) -> bytes:
    """A later message of a thread: a Gmail reply quoting history, a plain reply, or an
    out-of-office answer."""
    kind = rng.choices(["gmail", "text", "vacation"], weights=[50, 45, 5])[0]
    if kind == "gmail":
        return samples.gmail_reply(
            message_id=message_id, in_reply_to=parent, references=" ".join(refs)
        )
    if kind == "vacation":
        return samples.vacation_reply(message_id=message_id, in_reply_to=parent)
    raw = samples.simple(message_id=message_id, text=prose(rng, rng.randint(1, 6)))
    return restamp(raw, {"In-Reply-To": parent, "References": " ".join(refs)})


def mailbox(count: int, seed: int, to: str) -> list[bytes]:
    """``count`` messages in threads of 1-9 (about 4 on average), ordered by date."""
    rng = random.Random(seed)  # noqa: S311 (reproducible test data, not secrets)
    start = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    customers = max(1, count // 8)
    dated: list[tuple[datetime, int, bytes]] = []
    thread = 0
    while len(dated) < count:
        thread += 1
        customer = rng.randrange(customers)
        sender = f"Customer {customer} <customer{customer}@example.org>"
        subject = f"{rng.choice(WORDS).capitalize()} {rng.choice(WORDS)} #{thread}"
        at = start + timedelta(minutes=rng.randint(0, 60 * 24 * 30))
        refs: list[str] = []
        for turn in range(min(rng.randint(1, 7), count - len(dated))):
            message_id = f"<t{thread}-{turn}@customer.example>"
            if turn == 0:
                raw = opening(rng, message_id)
            else:
                raw = follow_up(rng, message_id, refs[-1], refs)
                at += timedelta(minutes=rng.randint(5, 60 * 24))
            raw = restamp(
                raw,
                {
                    "From": sender,
                    "To": f"Support <{to}>",
                    "Subject": subject if turn == 0 else f"Re: {subject}",
                    "Date": format_datetime(at),
                },
            )
            refs.append(message_id)
            dated.append((at, len(dated), raw))
    dated.sort()
    return [raw for _, _, raw in dated]


# --- the two sides, each in its own process ----------------------------------------------


@dataclass
class Run:
    name: str
    messages: int
    seconds: float
    rss_mb: float
    extra: dict[str, Any]
    cpu: float = 0.0  # CPU seconds of the side's processes (its workers included)
    worker_rss_mb: float = 0.0  # peak RSS (VmHWM) of the largest worker process it started
    total_rss_mb: float = 0.0  # peak of the side's RSS plus its workers', at one instant
    main_cpu: float = 0.0  # CPU seconds of the side's main thread (its event loop for tidings)
    threads: dict[str, float] = field(default_factory=dict)  # CPU seconds per thread name
    server_cpu: float = 0.0  # CPU seconds Dovecot's processes spent meanwhile

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.messages if self.messages else 0.0

    @property
    def main_cpu_ms(self) -> float:
        return 1000 * self.main_cpu / self.messages if self.messages else 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def stat_cpu(path: str) -> tuple[float, float]:
    """(own CPU, CPU of reaped children) in seconds from a ``/proc/…/stat`` file; zeros
    when it is gone."""
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0, 0.0
    # After the command: state is field 3, utime/stime 14/15, cutime/cstime 16/17.
    own = (int(fields[11]) + int(fields[12])) / _TICK
    return own, (int(fields[13]) + int(fields[14])) / _TICK


def thread_names() -> dict[int, str]:
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}


def _program(pid: str) -> bytes:
    """The command line of process ``pid`` (empty when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class MemoryWatch:
    """The peak of this process's RSS plus its children's, sampled every 50 ms, and the CPU
    of each of this process's threads.

    ``ru_maxrss`` of children is no use for a spawned worker: Linux keeps the high-water
    mark across ``exec``, so the child inherits the parent's RSS at the fork that precedes
    it. ``/proc`` VmRSS of the running processes, summed at the same instant, is what the
    machine really held (the worker's own peak, VmHWM, is kept too).

    Thread CPU is read from ``/proc/self/task`` at each sample and the last value seen is
    kept, so a thread that ended during the run (the parse worker's I/O thread) still
    counts, to within one sample.
    """

    def __init__(self) -> None:
        self.peak_total_mb = 0.0
        self.peak_child_mb = 0.0
        self._program = _program("self")
        self._names: dict[int, str] = {}
        self._start = self._threads()
        self._last: dict[int, float] = dict(self._start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-watch")
        self._thread.start()

    def _threads(self) -> dict[int, float]:
        cpu: dict[int, float] = {}
        for task in Path("/proc/self/task").iterdir():
            tid = int(task.name)
            own, _ = stat_cpu(f"{task}/stat")
            cpu[tid] = own
            if tid not in self._names:
                self._names.update(thread_names())
        return cpu

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds per thread name since the watch started (same names summed)."""
        self._last.update(self._threads())
        out: dict[str, float] = {}
        for tid, cpu in self._last.items():
            name = self._names.get(tid, f"tid {tid}")
            out[name] = out.get(name, 0.0) + cpu - self._start.get(tid, 0.0)
        return {name: cpu for name, cpu in out.items() if cpu > 0}

    @staticmethod
    def _kib(pid: str, field: str) -> float:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return float(line.split()[1])
        except OSError:
            pass
        return 0.0

    def _children(self) -> list[str]:
        """Our child processes, once they run their own program: between ``fork`` and
        ``exec`` a child is this process's copy (its RSS is our pages, counted twice; a
        sample landing there once put the worker at 92.8 MB instead of ~50)."""
        pids: list[str] = []
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError):
                pids += (task / "children").read_text().split()
        return [pid for pid in pids if _program(pid) != self._program]

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._last.update(self._threads())
            children = self._children()
            total = self._kib("self", "VmRSS") + sum(self._kib(c, "VmRSS") for c in children)
            self.peak_total_mb = max(self.peak_total_mb, total / 1024)
            for child in children:
                self.peak_child_mb = max(self.peak_child_mb, self._kib(child, "VmHWM") / 1024)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Clock:
    """Wall time and CPU time of this process plus its finished children (a parse worker:
    ``RUSAGE_CHILDREN`` counts children once they are reaped, which the sync does)."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = self._cpu()
        self.main_cpu = time.thread_time()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children = children.ru_utime + children.ru_stime
        self.memory = MemoryWatch()

    @staticmethod
    def _cpu() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    def result(self, messages: int, extra: dict[str, Any]) -> dict[str, Any]:
        seconds, cpu = time.perf_counter() - self.wall, self._cpu() - self.cpu
        main_cpu = time.thread_time() - self.main_cpu
        threads = self.memory.thread_cpu()
        self.memory.stop()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        threads["(reaped children)"] = children.ru_utime + children.ru_stime - self.children
        return {
            "messages": messages,
            "seconds": seconds,
            "cpu": cpu,
            "main_cpu": main_cpu,
            "threads": threads,
            "rss_mb": peak_rss_mb(),
            "worker_rss_mb": self.memory.peak_child_mb,
            "total_rss_mb": max(self.memory.peak_total_mb, peak_rss_mb()),
            "extra": extra,
        }


def child_baseline(args: argparse.Namespace) -> dict[str, Any]:
    import imaplib

    clock = Clock()
    conn = imaplib.IMAP4(args.host, args.port, timeout=60)
    conn.login(args.user, args.password)
    conn.select("INBOX", readonly=True)
    _, data = conn.uid("SEARCH", "ALL")
    uids = data[0].split() if data and data[0] else []
    parsed = parts = 0
    for i in range(0, len(uids), args.chunk):
        _, fetched = conn.uid("FETCH", b",".join(uids[i : i + args.chunk]).decode(),
                              "(BODY.PEEK[])")  # fmt: skip
        for item in fetched:
            if not isinstance(item, tuple):
                continue
            msg = message_from_bytes(item[1], policy=policy.default)
            for part in msg.walk():
                parts += 1
                if not part.is_multipart():
                    part.get_payload(decode=True)
            parsed += 1
    conn.logout()
    return clock.result(parsed, {"parts": parts})


async def _tidings_sync(config_path: Path) -> dict[str, Any]:
    import sqlalchemy as sa

    from tidings.intake import sync_account
    from tidings.runtime import Runtime, freeze_startup_objects
    from tidings.store import tables

    runtime = Runtime.start(config_path=config_path)
    try:
        await runtime.store.upgrade()  # schema creation is not part of the sync
        freeze_startup_objects()  # as `tidings sync` does once started
        clock = Clock()
        result = await sync_account(runtime, runtime.accounts[ACCOUNT])
        measured = clock.result(0, {})
        async with runtime.store.read() as conn:

            async def count(table: sa.Table) -> int:
                query = sa.select(sa.func.count()).select_from(table)
                return int((await conn.execute(query)).scalar_one())

            extra = {
                "conversations": await count(tables.conversations),
                "attachments": await count(tables.attachments),
                "stored": await count(tables.messages),
            }
    finally:
        await runtime.close()
    received = len(result.messages.stored) + result.messages.duplicates + result.reports
    return {**measured, "messages": received, "extra": extra}


def child_tidings(args: argparse.Namespace) -> dict[str, Any]:
    from tidings.loop import run

    # On the event loop ``tidings sync`` runs on (``tidings.loop``: uvloop where installed).
    if not args.profile:
        return run(_tidings_sync, Path(args.config))
    import cProfile

    # The sync process's main thread only (the parse worker is another interpreter, the
    # driver thread is not profiled), timed by that thread's CPU clock: where the event
    # loop's CPU goes, not counting its waits for the GIL, a core or the network.
    with cProfile.Profile(time.thread_time) as profile:
        result = run(_tidings_sync, Path(args.config))
    profile.dump_stats(args.profile)
    return result


def tree_cpu(root: int) -> float:
    """CPU seconds of process ``root`` and its descendants, the reaped ones included (as
    far as their parents reaped them: Dovecot's master reaps its imap processes)."""
    total, pending = 0.0, [root]
    while pending:
        pid = pending.pop()
        own, reaped = stat_cpu(f"/proc/{pid}/stat")
        total += own + reaped
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                pending += [int(p) for p in (task / "children").read_text().split()]
    return total


def run_child(name: str, argv: list[str], server_pid: int | None = None) -> Run:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, *argv]
    server = tree_cpu(server_pid) if server_pid else 0.0
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    server = tree_cpu(server_pid) - server if server_pid else 0.0
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Run(name, result["messages"], result["seconds"], result["rss_mb"], result["extra"],
               result["cpu"], result["worker_rss_mb"], result["total_rss_mb"],
               result["main_cpu"], result["threads"], server)  # fmt: skip


# --- the driver --------------------------------------------------------------------------


def write_config(
    path: Path,
    database_url: str,
    host: str,
    port: int,
    user: Any,
    chunk: int,
    settings: Sequence[str] = (),
) -> Path:
    config = path / "tidings.toml"
    config.write_text(
        f'database_url = "{database_url}"\n\n[[accounts]]\n'
        f'id = "{ACCOUNT}"\nchannel = "email_imap"\nproject = "support"\n'
        f'address = "{user.address}"\nimap_host = "{host}"\nimap_port = {port}\n'
        f'imap_security = "plain"\nimap_password = "{user.password}"\n'
        f'smtp_host = "{host}"\nsmtp_security = "plain"\nidle = false\nfetch_chunk = {chunk}\n'
        + "".join(f"{setting}\n" for setting in settings)
    )
    return config


def report(baseline: Run, ours: Run, backend: str, mailbox_mb: float) -> None:
    say(f"\nemail sync, {ours.messages:,} messages ({mailbox_mb:.1f} MB), backend {backend}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    say(f"  {'side':<44} {'seconds':>8} {'msg/s':>8} {'CPU ms/msg':>11} {'main thread':>12}"
        f" {'peak RSS MB':>22}")  # fmt: skip
    for run, label in (
        (baseline, "baseline: imaplib fetch + email parse"),
        (ours, "tidings: sync_account (parse, thread, store)"),
    ):
        rss = f"{run.rss_mb:.1f}"
        if run.worker_rss_mb:
            rss = f"{run.rss_mb:.1f} + worker {run.worker_rss_mb:.1f}"
        say(f"  {label:<44} {run.seconds:>8.1f} {run.rate:>8.0f} {run.cpu_ms:>11.2f}"
            f" {run.main_cpu_ms:>12.2f} {rss:>22}")  # fmt: skip
    ratio = ours.rate / baseline.rate if baseline.rate else 0.0
    total = ours.total_rss_mb
    say(f"  tidings / baseline speed: {ratio:.2f}x ({'meets' if ratio >= 1 else 'below'} the aim"
        f" of >= 1.0); CPU per message {ours.cpu_ms / baseline.cpu_ms:.2f}x the baseline's;"
        f" peak RSS {total:.0f} MB, the worker's included "
        f"({'under' if total < AIM_RSS_MB else 'OVER'} {AIM_RSS_MB:.0f} MB)")  # fmt: skip
    say(f"  tidings stored: {ours.extra}; baseline parts walked: {baseline.extra['parts']:,}")
    for run in (baseline, ours):
        if not run.messages:
            continue
        per = sorted(run.threads.items(), key=lambda item: -item[1])
        split = ", ".join(f"{name} {1000 * cpu / run.messages:.2f}" for name, cpu in per)
        say(f"  {run.name} CPU ms/msg by thread: {split}; Dovecot meanwhile "
            f"{1000 * run.server_cpu / run.messages:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--chunk", type=int, default=50, help="messages per fetch (both sides)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--account-setting", action="append", default=[], metavar="KEY=TOML",
                        help="extra account setting, e.g. parse_worker=false")  # fmt: skip
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile the tidings sync process into FILE (pstats)")  # fmt: skip
    parser.add_argument("--child", choices=["baseline", "tidings"], help=argparse.SUPPRESS)
    for name in ("--host", "--user", "--password", "--config"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child_baseline(args) if args.child == "baseline" else child_tidings(args)
        print(json.dumps(result), flush=True)
        return

    from tidings.testing.mailservers import running_mail_servers

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    with running_mail_servers() as (dovecot, _), tempfile.TemporaryDirectory() as tmp:
        raws = mailbox(args.messages, args.seed, "support@example.test")
        mailbox_mb = sum(len(r) for r in raws) / 1e6
        say(f"seeding {len(raws):,} messages ({mailbox_mb:.1f} MB) into Dovecot…")
        started = time.perf_counter()
        users = {backend: dovecot.add_user(f"bench-{backend}") for backend in backends}
        for user in users.values():
            dovecot.append_many(user, raws)
        say(f"  seeded in {time.perf_counter() - started:.1f} s")
        postgres = Postgres() if "postgresql" in backends else None
        with postgres or _nothing():
            for backend, user in users.items():
                url = (
                    postgres.database("bench_email")
                    if backend == "postgresql" and postgres is not None
                    else f"sqlite:///{tmp}/{backend}.db"
                )
                config = write_config(Path(tmp), url, dovecot.host, dovecot.imap_port, user,
                                      args.chunk, args.account_setting)  # fmt: skip
                # ``--password=…`` in one word: a generated password may begin with "-".
                imap = ["--host", dovecot.host, "--port", str(dovecot.imap_port),
                        f"--user={user.address}", f"--password={user.password}"]  # fmt: skip
                chunk = ["--chunk", str(args.chunk)]
                # Dovecot's CPU while each side runs (its imap processes are the master's
                # children): a side that makes the server work more pays for it there.
                server_pid = int((dovecot.directory / "run" / "master.pid").read_text())
                say(f"[{backend}] baseline (1st run)…")
                first = run_child("baseline", imap + chunk, server_pid)
                say(f"[{backend}] tidings sync…")
                profile = ["--profile", str(Path(args.profile).resolve())] if args.profile else []
                ours = run_child("tidings", ["--config", str(config), *profile],
                                 server_pid)  # fmt: skip
                say(f"[{backend}] baseline (2nd run)…")
                second = run_child("baseline", imap + chunk, server_pid)
                baseline = min(first, second, key=lambda r: r.seconds)
                report(baseline, ours, backend, mailbox_mb)
                flags = dovecot.flags(user)
                unread = sum(1 for f in flags.values() if "\\Seen" not in f)
                say(f"  left unread on the server after the sync: {unread}")


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
