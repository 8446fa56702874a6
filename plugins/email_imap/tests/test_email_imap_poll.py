"""poll and acknowledge against a real Dovecot (tidings.testing.mailservers)."""

from __future__ import annotations

import errno
import subprocess
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import email_imap_samples as samples
import pytest
from email_imap_helpers import account, handle

from tidings import Account, PolledBatch
from tidings.testing.mailservers import DovecotServer, MailUser
from tidings_email_imap import EmailSettings
from tidings_email_imap.channel import FETCH_AHEAD, EmailImapChannel
from tidings_email_imap.imap import ImapError

pytestmark = pytest.mark.anyio


async def drain(acct: Account[EmailSettings], cursor: Any = None) -> list[PolledBatch]:
    return [b async for b in handle().poll(acct, cursor, follow=False)]


def ids(batches: list[PolledBatch]) -> list[int]:
    return [int(item.id) for b in batches for item in b.items]


async def test_initial_and_incremental_sync(
    imap_server: DovecotServer, mail_user: MailUser
) -> None:
    uids = imap_server.append_many(mail_user, [samples.numbered(i) for i in range(3)])
    acct = account(imap_server, mail_user)
    first = await drain(acct)
    assert ids(first) == uids
    cursor = first[-1].cursor
    assert cursor == {"uidvalidity": imap_server.uidvalidity(mail_user), "last_uid": uids[-1]}
    item = first[0].items[0]
    assert item.data.startswith(b"From: Jan Kowalski")
    assert item.meta["folder"] == "INBOX"
    assert item.meta["internaldate"]
    assert item.meta["size"] == len(samples.numbered(0))
    # BODY.PEEK: fetching marked nothing as read.
    assert all("\\Seen" not in f for f in imap_server.flags(mail_user).values())
    for batch in first:
        await handle().acknowledge(acct, batch)
    assert await drain(acct, cursor) == []  # nothing new (the n:* quirk is filtered)
    more = imap_server.append_many(mail_user, [samples.numbered(i) for i in range(3, 5)])
    again = await drain(acct, cursor)
    assert ids(again) == more
    messages = await handle().receive(acct, again[0])
    assert [m.provider_id for m in messages] == ["<bulk-3@example.org>", "<bulk-4@example.org>"]


async def test_stored_but_unacknowledged_mail_comes_again(
    imap_server: DovecotServer, mail_user: MailUser
) -> None:
    """A process killed between the commit and acknowledge leaves mail unread below the
    cursor: the next poll brings it again first (the core deduplicates it and flags it),
    cursor unchanged, then what is new."""
    uids = imap_server.append_many(mail_user, [samples.numbered(i) for i in range(4)])
    acct = account(imap_server, mail_user, fetch_chunk=2, only_unread=False)
    first, second = await drain(acct)
    await handle().acknowledge(acct, first)  # the second batch was committed, never acked
    newer = imap_server.append_many(mail_user, [samples.numbered(9)])
    again = await drain(acct, second.cursor)
    assert [[int(i.id) for i in b.items] for b in again] == [uids[2:], newer]
    assert again[0].cursor == second.cursor
    assert again[1].cursor == {**second.cursor, "last_uid": newer[0]}
    for batch in again:
        await handle().acknowledge(acct, batch)
    assert await drain(acct, again[-1].cursor) == []
    assert all("\\Seen" in f for f in imap_server.flags(mail_user).values())


async def test_only_unread_versus_all(imap_server: DovecotServer, mail_user: MailUser) -> None:
    read = imap_server.append(mail_user, samples.numbered(1), flags=["\\Seen"])
    unread = imap_server.append(mail_user, samples.numbered(2))
    assert ids(await drain(account(imap_server, mail_user))) == [unread]
    assert ids(await drain(account(imap_server, mail_user, only_unread=False))) == [read, unread]


async def test_acknowledge_marks_only_acked_uids(
    imap_server: DovecotServer, mail_user: MailUser
) -> None:
    imap_server.append_many(mail_user, [samples.numbered(i) for i in range(4)])
    acct = account(imap_server, mail_user, fetch_chunk=2)
    first, second = await drain(acct)
    await handle().acknowledge(acct, first)
    flags = imap_server.flags(mail_user)
    acked = {int(i.id) for i in first.items}
    assert {uid for uid, f in flags.items() if "\\Seen" in f} == acked
    # Resuming from the first batch's cursor gives exactly the unacknowledged rest.
    assert ids(await drain(acct, first.cursor)) == [int(i.id) for i in second.items]


async def test_uidvalidity_change_resyncs_from_the_start(
    imap_server: DovecotServer, mail_user: MailUser
) -> None:
    acct = account(imap_server, mail_user, folder="Tickets", only_unread=False)
    imap_server.recreate_folder(mail_user, "Tickets")
    imap_server.append_many(mail_user, [samples.numbered(i) for i in range(2)], folder="Tickets")
    old = await drain(acct)
    old_cursor = old[-1].cursor
    assert old_cursor is not None
    imap_server.recreate_folder(mail_user, "Tickets")  # new UIDVALIDITY, UIDs restart
    new_uids = imap_server.append_many(
        mail_user, [samples.numbered(i) for i in range(5, 8)], folder="Tickets"
    )
    assert imap_server.uidvalidity(mail_user, "Tickets") != old_cursor["uidvalidity"]
    resynced = await drain(acct, old_cursor)
    assert ids(resynced) == new_uids  # not only those above the old last_uid
    assert resynced[-1].cursor == {
        "uidvalidity": imap_server.uidvalidity(mail_user, "Tickets"),
        "last_uid": new_uids[-1],
    }
    # A stale batch (old UIDVALIDITY) must not flag the new messages that reuse its UIDs.
    await handle().acknowledge(acct, old[0])
    assert all("\\Seen" not in f for f in imap_server.flags(mail_user, "Tickets").values())


async def test_streaming_keeps_batches_small(
    imap_server: DovecotServer, mail_user: MailUser
) -> None:
    count, chunk = 300, 25
    imap_server.append_many(mail_user, [samples.numbered(i, prefix="s") for i in range(count)])
    acct = account(imap_server, mail_user, fetch_chunk=chunk)
    sizes: list[int] = []
    seen: list[int] = []
    async for b in handle().poll(acct, None, follow=False):
        sizes.append(len(b.items))
        seen.extend(int(i.id) for i in b.items)
        assert b.cursor is not None
        assert b.cursor["last_uid"] == seen[-1]
    assert max(sizes) == chunk
    assert len(sizes) == count // chunk
    assert seen == sorted(seen)
    assert len(set(seen)) == count


async def test_a_backlog_is_fetched_a_bounded_number_of_batches_ahead(
    imap_server: DovecotServer, mail_user: MailUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch is yielded with at most FETCH_AHEAD fetches started after it, so a long
    backlog never piles up in memory however slowly the core stores it."""
    imap_server.append_many(mail_user, [samples.numbered(i, prefix="a") for i in range(40)])
    acct = account(imap_server, mail_user, fetch_chunk=4)
    started: list[int] = []
    fetch = EmailImapChannel._fetch

    def counted(self: EmailImapChannel, *args: Any) -> Any:
        started.append(args[3][0])  # the chunk's first UID
        return fetch(self, *args)

    monkeypatch.setattr(EmailImapChannel, "_fetch", counted)
    when_yielded: list[int] = []
    seen: list[int] = []
    async for b in handle().poll(acct, None, follow=False):
        when_yielded.append(len(started))
        seen.extend(int(i.id) for i in b.items)
        await anyio.sleep(0.01)  # a slow core: the fetches ahead run meanwhile
    assert when_yielded == [min(n + 1 + FETCH_AHEAD, 10) for n in range(10)]
    assert started == sorted(started)
    assert seen == sorted(seen)
    assert len(set(seen)) == 40


async def test_dropped_connection_then_repoll_loses_and_doubles_nothing(
    imap_server: DovecotServer, mail_user: MailUser
) -> None:
    uids = imap_server.append_many(mail_user, [samples.numbered(i) for i in range(9)])
    acct = account(imap_server, mail_user, fetch_chunk=3)
    stored: list[int] = []
    committed: Any = None
    with pytest.raises(ImapError):
        async with aclosing(handle().poll(acct, None, follow=False)) as batches:
            async for b in batches:
                stored.extend(int(i.id) for i in b.items)  # "commit" the batch and its cursor
                committed = b.cursor
                imap_server.kick(mail_user)  # the connection drops mid-poll
    # Where the drop lands depends on timing (a FETCH may already be answered when the
    # server kills the session); what must hold is that nothing came twice or out of order
    # and that the poll failed before the end.
    assert stored == uids[: len(stored)]
    assert 3 <= len(stored) < len(uids)
    # The worker polls again from the last committed cursor: the committed batches were
    # never acknowledged, so they come again first (the core finds them stored), then the
    # rest.
    again = ids(await drain(acct, committed))
    assert again == uids
    assert sorted(set(stored) | set(again)) == uids


async def test_follow_waits_with_idle_for_new_mail(
    imap_server: DovecotServer, mail_user: MailUser
) -> None:
    acct = account(imap_server, mail_user, poll_interval=30)
    first = imap_server.append(mail_user, samples.numbered(1))
    got: list[int] = []
    with anyio.fail_after(20):
        async with aclosing(handle().poll(acct, None, follow=True)) as batches:
            async for b in batches:
                got.extend(int(i.id) for i in b.items)
                if got == [first]:
                    # Delivered while the poller is (about to be) in IDLE: pushed, not polled.
                    later = await anyio.to_thread.run_sync(
                        imap_server.append, mail_user, samples.numbered(2)
                    )
                elif len(got) == 2:
                    break
    assert got == [first, later]


async def test_follow_without_idle_polls(imap_server: DovecotServer, mail_user: MailUser) -> None:
    acct = account(imap_server, mail_user, idle=False, poll_interval=0.3)
    first = imap_server.append(mail_user, samples.numbered(1))
    got: list[int] = []
    with anyio.fail_after(20):
        async with aclosing(handle().poll(acct, None, follow=True)) as batches:
            async for b in batches:
                got.extend(int(i.id) for i in b.items)
                if got == [first]:
                    later = await anyio.to_thread.run_sync(
                        imap_server.append, mail_user, samples.numbered(2)
                    )
                elif len(got) == 2:
                    break
    assert got == [first, later]


async def test_wrong_password_is_a_connection_error(
    imap_server: DovecotServer, mail_user: MailUser
) -> None:
    acct = account(imap_server, mail_user, imap_password="wrong-password-123")
    with pytest.raises(ImapError, match="refused") as info:
        await drain(acct)
    assert "wrong-password-123" not in str(info.value)


async def test_implicit_tls_and_starttls(imap_server: DovecotServer, mail_user: MailUser) -> None:
    uid = imap_server.append(mail_user, samples.numbered(1))
    for security, port in (("ssl", imap_server.imaps_port), ("starttls", imap_server.imap_port)):
        acct = account(imap_server, mail_user, imap_security=security, imap_port=port,
                       imap_host="localhost")  # fmt: skip
        assert ids(await drain(acct)) == [uid]
    # Without our CA the self-signed certificate is refused.
    untrusted = account(imap_server, mail_user, imap_security="ssl",
                        imap_port=imap_server.imaps_port, ca_file=None)  # fmt: skip
    with pytest.raises(ImapError):
        await drain(untrusted)


def corpus() -> list[bytes]:
    """Every shape of the sample corpus, a bounce and bytes no parser reads, twice over."""
    shapes = [
        samples.gmail_reply(),
        samples.outlook_reply_inline_image(),
        samples.thunderbird_attachments(),
        samples.wrong_charsets(),
        samples.forward_with_eml(),
        samples.calendar_invite(),
        samples.html_only(),
        samples.vacation_reply(),
        samples.dsn_bounce(original_message_id="<ours-1@example.test>"),
        b"\x00\xff garbage without headers",
    ]
    return shapes + [samples.numbered(i, prefix="w") for i in range(len(shapes))]


def parse_workers() -> int:
    """How many parse worker processes this process runs now (from /proc)."""
    count = 0
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue  # ended meanwhile
            count += b"tidings_email_imap.parse_worker" in cmdline
    return count


async def receive_backlog(acct: Account[EmailSettings]) -> tuple[list[Any], list[Any], int]:
    """Poll and receive through one handle, as ``sync_account`` does: the messages; the
    same batches parsed in this process (a handle without the poll's session); and how
    many worker processes ran while the backlog was read."""
    channel = handle()
    messages: list[Any] = []
    here: list[Any] = []
    workers = 0
    async with aclosing(channel.poll(acct, None, follow=False)) as batches:
        async for batch in batches:
            messages.extend(await channel.receive(acct, batch))
            workers = max(workers, parse_workers())
            here.extend(await handle().receive(acct, batch))
    return messages, here, workers


async def test_a_backlog_is_parsed_in_a_worker_process_exactly_as_in_process(
    imap_server: DovecotServer, mail_user: MailUser
) -> None:
    imap_server.append_many(mail_user, corpus())
    acct = account(imap_server, mail_user, fetch_chunk=3)
    in_worker, in_process, workers = await receive_backlog(acct)
    assert workers == 1
    assert parse_workers() == 0  # stopped with its backlog
    assert len(in_worker) == len(corpus()) - 1  # the bounce is a delivery report
    # The same messages (mail without a date is dated when it is read).
    assert [m.model_dump(exclude={"sent_at"}) for m in in_worker] == [
        m.model_dump(exclude={"sent_at"}) for m in in_process
    ]
    assert [m for m in in_worker if b"\nDate:" in m.source] == [
        m for m in in_process if b"\nDate:" in m.source
    ]


async def test_parse_worker_off_parses_here(
    imap_server: DovecotServer, mail_user: MailUser
) -> None:
    uids = imap_server.append_many(mail_user, corpus())
    acct = account(imap_server, mail_user, fetch_chunk=3, parse_worker=False)
    messages, in_process, workers = await receive_backlog(acct)
    assert workers == 0
    assert len(messages) == len(uids) - 1
    assert [m.provider_id for m in messages] == [m.provider_id for m in in_process]


async def test_without_a_worker_process_the_backlog_is_parsed_here(
    imap_server: DovecotServer,
    mail_user: MailUser,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Where no process may be started (a sandbox, a process limit), parsing falls back to
    this process and nothing is lost."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")  # as fork(2) does

    monkeypatch.setattr(subprocess, "Popen", refuse)
    uids = imap_server.append_many(mail_user, corpus())
    messages, _, workers = await receive_backlog(account(imap_server, mail_user, fetch_chunk=3))
    assert workers == 0
    assert "no parse worker" in caplog.text
    assert len(messages) == len(uids) - 1
    assert {m.meta["uid"] for m in messages} < set(uids)
