"""Reading IMAP answers: our protocol must see exactly what aioimaplib's own would see.

``imap._Protocol`` reads a received buffer in a loop instead of copying its rest after
every line and literal, and ``imap._FetchCommand`` keeps its count of open parentheses as
lines arrive instead of re-reading them all. Whatever way the server's bytes are cut into
reads — inside a line, inside a literal, on a CRLF — the command must end with the same
response.
"""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

import pytest
from aioimaplib import aioimaplib  # type: ignore[import-untyped]

from tidings_email_imap.imap import Mailbox, _FetchCommand, _Protocol, parse_fetch

pytestmark = pytest.mark.anyio


def fetch_answer(bodies: list[bytes]) -> bytes:
    """What Dovecot sends for ``UID FETCH … (UID FLAGS BODY.PEEK[])``, then the tag."""
    out = b""
    for seq, body in enumerate(bodies, start=1):
        out += b"* %d FETCH (UID %d FLAGS (\\Seen) BODY[] {%d}\r\n" % (seq, 100 + seq, len(body))
        out += body + b")\r\n"
    out += b"* 3 EXISTS\r\n"  # an unsolicited line in between
    return out + b"A1 OK Fetch completed (0.001 + 0.000 secs).\r\n"


BODIES = [
    b"Subject: one\r\n\r\nhello\r\n",
    b"Subject: braces {12}\r\n\r\n" + b"x" * 3000 + b"\r\n)\r\n* 9 FETCH (\r\n",
    b"",  # an empty literal
    b"Subject: three\r\n\r\n" + bytes(range(256)) * 40,
]


def read(
    protocol_class: type[Any], chunks: list[bytes], command_class: type[Any] | None = None
) -> tuple[str, list[Any]]:
    """The response a FETCH command ends with; ours (``_Protocol`` reading into a
    ``_FetchCommand``) unless another protocol class and command class are given."""
    protocol = protocol_class(asyncio.get_running_loop(), None)
    protocol.state = aioimaplib.SELECTED
    if command_class is None:
        command_class = _FetchCommand if protocol_class is _Protocol else aioimaplib.FetchCommand
    command = command_class(
        "A1", "101:104", "(UID FLAGS BODY.PEEK[])", prefix="UID", untagged_resp_name="FETCH"
    )
    protocol.pending_async_commands["FETCH"] = command
    for chunk in chunks:
        protocol.data_received(chunk)
    response = command.response
    return response.result, [bytes(line) for line in response.lines]


def cuts(data: bytes, rng: random.Random, pieces: int) -> list[bytes]:
    points = sorted(rng.sample(range(1, len(data)), pieces - 1))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.parametrize("seed", range(40))
async def test_any_cut_into_reads_gives_aioimaplibs_answer(seed: int) -> None:
    data = fetch_answer(BODIES)
    rng = random.Random(seed)  # noqa: S311 (reproducible cuts, not secrets)
    chunks = cuts(data, rng, rng.choice([2, 3, 7, 40, 400]))
    ours = read(_Protocol, chunks)
    assert ours == read(aioimaplib.IMAP4ClientProtocol, chunks)
    assert ours[0] == "OK"
    assert [m.data for m in parse_fetch(ours[1])] == BODIES


async def test_every_cut_around_line_ends_and_literals() -> None:
    data = fetch_answer(BODIES[:2])
    for at in range(1, len(data)):
        chunks = [data[:at], data[at:]]
        assert read(_Protocol, chunks) == read(aioimaplib.IMAP4ClientProtocol, chunks), at


async def test_one_read_of_more_lines_than_the_recursion_limit() -> None:
    bodies = [b"Subject: %d\r\n\r\nhi\r\n" % i for i in range(1500)]
    result, lines = read(_Protocol, [fetch_answer(bodies)])
    assert result == "OK"
    assert [m.data for m in parse_fetch(lines)] == bodies


async def test_our_fetch_command_says_what_aioimaplibs_says_after_every_line() -> None:
    lines: list[bytes | bytearray] = [
        b"1 FETCH (UID 101 FLAGS (\\Seen) BODY[] {5}",
        bytearray(b"a(b(c"),  # a literal: its parentheses are text
        b")",
        b"2 FETCH (FLAGS (\\Seen \\Answered) BODY[] {3}",
        bytearray(b"x)y"),
        b' UID 102 INTERNALDATE "17-Jul-1996 02:44:25 -0700")',
        b"EXISTS 3",
        b"3 FETCH (UID 103 BODY[HEADER.FIELDS (FROM)] {2}",
        bytearray(b"(("),
        b" BODY[] {1}",
        bytearray(b")"),
        b")",
    ]
    ours = _FetchCommand("A1", "1:3", "(BODY[])", prefix="UID")
    theirs = aioimaplib.FetchCommand("A1", "1:3", "(BODY[])", prefix="UID")
    assert ours.wait_data() is theirs.wait_data() is False
    answers = []
    for line in lines:
        ours.append_to_resp(line)
        theirs.append_to_resp(line)
        assert ours.wait_data() == theirs.wait_data(), line
        answers.append(ours.wait_data())
    assert answers == [True, True, False, True, True, False, False, True, True, True, True, False]


async def test_a_fetch_arms_one_timer_for_the_whole_call(monkeypatch: pytest.MonkeyPatch) -> None:
    class Answering(_Protocol):  # type: ignore[misc]
        """The server's whole answer arrives as soon as a command is sent."""

        async def execute(self, command: Any) -> Any:
            self.pending_async_commands["FETCH"] = command
            answer = fetch_answer(BODIES).replace(b"A1 OK", command.tag.encode() + b" OK")
            self.data_received(answer)
            return command.response

    protocol = Answering(asyncio.get_running_loop(), None)
    protocol.state = aioimaplib.SELECTED
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_later = loop.call_later

    def counted(delay: float, *args: Any, **kwargs: Any) -> Any:
        armed.append(delay)
        return call_later(delay, *args, **kwargs)

    monkeypatch.setattr(loop, "call_later", counted)
    mailbox = Mailbox(SimpleNamespace(protocol=protocol), 7.0, asyncio.Event())
    fetched = await mailbox.fetch([101, 102, 103, 104])
    assert [m.data for m in fetched] == BODIES
    # Mailbox._bounded's deadline for the call, and no inactivity timer re-armed per line.
    assert armed == [7.0]
