"""Reading IMAP answers: our protocol must see exactly what aioimaplib's own would see.

``imap._Protocol`` reads a received buffer in a loop instead of copying its rest after
every line and literal. Whatever way the server's bytes are cut into reads — inside a
line, inside a literal, on a CRLF — the command must end with the same response.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aioimaplib import aioimaplib  # type: ignore[import-untyped]

from tidings_email_imap.imap import _Protocol, parse_fetch

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


def read(protocol_class: type[Any], chunks: list[bytes]) -> tuple[str, list[Any]]:
    protocol = protocol_class(asyncio.get_running_loop(), None)
    protocol.state = aioimaplib.SELECTED
    command = aioimaplib.FetchCommand(
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
