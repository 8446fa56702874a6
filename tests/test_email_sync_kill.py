"""A mailbox sync killed with SIGKILL halfway and restarted (issue 8).

The real ``tidings sync ACCOUNT --once`` runs as a subprocess against the test Dovecot
with a SQLite store; the test watches the database from outside and kills the process
when about half of the mailbox is stored. Exactly-once rests on two promises of the core
and the channel: a batch's messages and its cursor commit in one transaction, and
``\\Seen`` is set only after that commit. So right after the kill every ``\\Seen``
message must be stored (nothing acknowledged that was not stored), and after a restart
every message is stored once and marked read.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "plugins" / "email_imap" / "tests"))
import email_imap_samples as samples

from tidings.testing.mailservers import DovecotServer, MailUser

TOTAL = 5000
THREADS = 250
ACCOUNT = "support-mail"
TIDINGS = str(Path(sys.executable).with_name("tidings"))


def mailbox(total: int) -> list[bytes]:
    """Customers writing in threads: a first message, then replies referencing it.

    Threads keep the store's work per batch realistic (most messages join a conversation
    instead of opening one), which keeps the test's run time reasonable for CI.
    """
    raws = []
    for i in range(total):
        thread, turn = i % THREADS, i // THREADS
        root = f"<kill-{thread}-0@example.org>"
        raws.append(
            samples.simple(
                message_id=f"<kill-{thread}-{turn}@example.org>",
                sender=f"customer{thread}@example.org",
                subject=f"Re: Order {thread}" if turn else f"Order {thread}",
                text=f"Message {turn} about order {thread}.\nRegards",
                date=f"Mon, 03 Mar 2025 {10 + turn // 60:02d}:{turn % 60:02d}:00 +0100",
            ).replace(
                b"MIME-Version:",
                f"In-Reply-To: {root}\r\nReferences: {root}\r\nMIME-Version:".encode()
                if turn
                else b"MIME-Version:",
                1,
            )
        )
    return raws


def write_config(path: Path, imap: DovecotServer, user: MailUser) -> Path:
    config = path / "tidings.toml"
    config.write_text(
        f'database_url = "sqlite:///{path / "tidings.db"}"\n'
        "\n[[accounts]]\n"
        f'id = "{ACCOUNT}"\nchannel = "email_imap"\nproject = "support"\n'
        f'address = "{user.address}"\nimap_host = "{imap.host}"\n'
        f'imap_port = {imap.imap_port}\nimap_security = "plain"\n'
        'imap_password = "${MAILBOX_PASSWORD}"\n'
        'smtp_host = "127.0.0.1"\nsmtp_security = "plain"\nidle = false\n'
    )
    return config


def stored_ids(database: Path) -> list[str]:
    """Provider ids of the stored inbound messages, read by a second process's eyes."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute(
            "SELECT provider_id FROM messages WHERE account_id = ? AND direction = 'in'",
            (ACCOUNT,),
        ).fetchall()
    return [row[0] for row in rows]


def count_stored(database: Path) -> int:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as conn:
            return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the schema is being created, or a writer holds the lock right now


def seen_ids(imap: DovecotServer, user: MailUser, by_uid: dict[int, str]) -> set[str]:
    return {by_uid[uid] for uid, flags in imap.flags(user).items() if "\\Seen" in flags}


def test_sync_killed_halfway_and_restarted_stores_each_message_once(
    imap_server: DovecotServer, tmp_path: Path
) -> None:
    user = imap_server.add_user()
    raws = mailbox(TOTAL)
    uids = imap_server.append_many(user, raws)
    by_uid = {uid: f"<kill-{i % THREADS}-{i // THREADS}@example.org>" for i, uid in enumerate(uids)}
    config = write_config(tmp_path, imap_server, user)
    database = tmp_path / "tidings.db"
    env = {**os.environ, "MAILBOX_PASSWORD": user.password, "TIDINGS_PLUGINS": "email_imap"}
    subprocess.run(
        [TIDINGS, "db", "upgrade", "-c", str(config)], env=env, check=True, capture_output=True
    )
    sync = [TIDINGS, "sync", ACCOUNT, "--once", "-c", str(config)]

    log = (tmp_path / "first.log").open("wb")
    first = subprocess.Popen(sync, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    try:
        while count_stored(database) < TOTAL // 2:
            assert first.poll() is None, "the sync ended before it was killed"
            assert time.monotonic() < deadline, "the sync did not get halfway in time"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(timeout=60)
        log.close()
    assert first.returncode == -signal.SIGKILL

    # Right after the kill: part of the mailbox is stored, and nothing was acknowledged
    # (marked \Seen) that is not stored.
    halfway = stored_ids(database)
    assert len(halfway) == len(set(halfway))
    assert TOTAL // 2 <= len(halfway) < TOTAL
    acknowledged = seen_ids(imap_server, user, by_uid)
    assert acknowledged <= set(halfway)
    assert acknowledged, "no batch was acknowledged before the kill"

    second = subprocess.run(sync, env=env, capture_output=True, timeout=600, check=False)
    assert second.returncode == 0, second.stderr.decode(errors="replace")[-3000:]

    final = stored_ids(database)
    assert len(final) == TOTAL
    assert set(final) == set(by_uid.values())  # each message once, by its Message-ID
    assert seen_ids(imap_server, user, by_uid) == set(final)  # nothing stored left unread
    with sqlite3.connect(database) as conn:
        sources = conn.execute("SELECT count(*) FROM message_sources").fetchone()[0]
        doubled = conn.execute(
            "SELECT count(*) FROM messages GROUP BY provider_id HAVING count(*) > 1"
        ).fetchall()
    assert sources == TOTAL
    assert doubled == []
