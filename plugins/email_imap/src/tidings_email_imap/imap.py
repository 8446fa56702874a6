"""A small, bounded IMAP session on top of aioimaplib.

aioimaplib hands back raw response lines and some of its calls never return when the
connection drops, so every call here goes through :meth:`Mailbox._bounded`: a timeout plus
a watch on the connection-lost callback. Whatever goes wrong on the wire becomes an
:class:`ImapError` (a ``ConnectionError``): the core's worker then polls again from the last
committed cursor, which is the whole recovery strategy.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from aioimaplib import aioimaplib  # type: ignore[import-untyped]

from tidings_email_imap.settings import Security

T = TypeVar("T")

_FETCH_START = re.compile(rb"^(\d+) FETCH \(")
_LITERAL = re.compile(rb"\{(\d+)\}$")
_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]*)"')
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")
_NUMBERS = re.compile(rb"^(?:SEARCH)?[\d ]*$")
_LIST = re.compile(rb'^\((?P<flags>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (?P<name>.+)$')


class ImapError(ConnectionError):
    """The IMAP server refused a command, answered nonsense, timed out or went away."""


def quote(text: str) -> str:
    """An IMAP quoted string (RFC 3501 §9). CR/LF/NUL cannot be quoted: refused."""
    if any(c in text for c in "\r\n\x00"):
        raise ImapError("IMAP arguments cannot contain CR, LF or NUL")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def uid_set(uids: Iterable[int]) -> str:
    """``1,2,3,7`` → ``1:3,7``: short command lines for long runs of UIDs."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    start = prev = None
    for uid in ordered:
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            parts.append(f"{start}:{prev}" if start != prev else str(start))
        start = prev = uid
    if start is not None:
        parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


@dataclass(frozen=True)
class Fetched:
    """One message of a FETCH answer."""

    uid: int
    data: bytes
    flags: tuple[str, ...]
    internaldate: str | None
    size: int | None


@dataclass(frozen=True)
class Selected:
    uidvalidity: int
    uidnext: int | None


def parse_fetch(lines: Sequence[Any]) -> list[Fetched]:
    """Pair each ``n FETCH (… BODY[] {size}`` line with its literal and closing text.

    Items may come in any order and some servers put FLAGS or UID after the literal, so the
    text before and after the literal is read together. Unsolicited FETCH lines without a
    body (flag changes by other clients) are skipped.
    """
    out: list[Fetched] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not isinstance(line, bytes) or not _FETCH_START.match(line):
            continue
        if not _LITERAL.search(line):
            continue  # a FETCH without body: not ours
        if index >= len(lines) or not isinstance(lines[index], bytes | bytearray):
            raise ImapError("FETCH answer without the announced literal")
        body = bytes(lines[index])
        index += 1
        tail = b""
        if (
            index < len(lines)
            and isinstance(lines[index], bytes)
            and not _FETCH_START.match(lines[index])
        ):
            tail = lines[index]
            index += 1
        meta = line + b" " + tail
        uid = _UID.search(meta)
        if uid is None:
            raise ImapError("FETCH answer without UID")
        flags = _FLAGS.search(meta)
        date = _INTERNALDATE.search(meta)
        size = _SIZE.search(meta)
        out.append(
            Fetched(
                uid=int(uid.group(1)),
                data=body,
                flags=tuple(flags.group(1).decode("ascii", "replace").split()) if flags else (),
                internaldate=date.group(1).decode("ascii", "replace") if date else None,
                size=int(size.group(1)) if size else None,
            )
        )
    return out


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, reading what arrived without copying the rest of it each step.

    aioimaplib handles a read line by line, handing the rest of the buffer on as a new
    bytes object after every line and every literal, recursively: a FETCH of 50 messages
    read in 256 KB pieces was copied about three times per message, the largest cost of
    reading mail in the event loop (and a read of more lines than the recursion limit
    would fail). The same steps run here in the same order, in a loop over one buffer:
    each line is sliced once and each literal goes into its response through a
    ``memoryview``.
    """

    def _handle_responses(
        self, data: bytes, line_handler: Callable[[bytes, Any], Any], current_cmd: Any = None
    ) -> None:
        pos, size = 0, len(data)
        while True:
            if pos == size:
                if self.pending_sync_command is not None:
                    self.pending_sync_command.flush()
                if current_cmd is not None and current_cmd.wait_data():
                    raise aioimaplib.IncompleteRead(current_cmd)
                return
            if current_cmd is not None and current_cmd.wait_literal_data():
                rest = current_cmd.append_literal_data(memoryview(data)[pos:])
                pos = size - len(rest)
                if current_cmd.wait_literal_data():
                    raise aioimaplib.IncompleteRead(current_cmd)
            end = data.find(b"\r\n", pos)
            if end == -1:
                raise aioimaplib.IncompleteRead(current_cmd, data[pos:])
            line = data[pos:end]
            pos = end + 2
            cmd = line_handler(line, current_cmd)
            # Only a line ending in "}" can announce a literal: most lines skip the regex.
            literal = (
                aioimaplib.literal_data_re.match(line) if line.endswith((b"}", b"}\n")) else None
            )
            if literal:
                if cmd is None:
                    cmd = aioimaplib.Command("NIL", "unused")
                cmd.begin_literal_data(int(literal.group("size")))
                current_cmd = cmd
            elif cmd is not None and cmd.wait_data():
                current_cmd = cmd
            else:
                current_cmd = None


class _FetchCommand(aioimaplib.FetchCommand):  # type: ignore[misc]
    """aioimaplib's FETCH, with the same answers at a fixed cost per line.

    After every line the reader asks the command whether a message's answer is still open
    (``wait_data``: more parentheses opened than closed since the last ``n FETCH (`` line).
    aioimaplib finds that line by matching every line received so far and counts over a
    join of the lines after it: quadratic in the batch (~60 regex matches per message of a
    50-message FETCH). Here the count is kept as lines arrive.

    It runs without aioimaplib's inactivity timer (``timeout=None``): ``Mailbox._bounded``
    bounds the whole call already, and the timer was re-armed (a ``call_later``) for every
    line and literal.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._open = 0
        super().__init__(*args, **kwargs)

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        super().append_to_resp(line, result)
        if isinstance(line, bytes):  # a literal is a bytearray: not counted, as upstream
            if self.FETCH_MESSAGE_DATA_RE.match(line):
                self._open = 0
            self._open += line.count(b"(") - line.count(b")")

    def wait_data(self) -> bool:
        return self._open != 0


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Mailbox:
    """One logged-in IMAP connection; use :func:`open_mailbox`."""

    def __init__(self, client: Any, timeout: float, lost: asyncio.Event) -> None:
        self.client = client
        self.timeout = timeout
        self._lost = lost

    async def _bounded(self, call: Awaitable[T], what: str, limit: float | None = None) -> T:
        """Run ``call`` with a deadline, failing fast when the connection is lost."""
        task = asyncio.ensure_future(call)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait(
                {task, lost},
                timeout=self.timeout if limit is None else limit,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except asyncio.CancelledError:
            task.cancel()  # the caller gave up (a poll closed with a fetch ahead under way)
            raise
        finally:
            lost.cancel()
        if task in done:
            try:
                return task.result()
            except aioimaplib.CommandTimeout:
                raise ImapError(f"IMAP {what}: timed out") from None
            except (aioimaplib.AioImapException, ValueError, OSError, EOFError) as exc:
                raise ImapError(f"IMAP {what}: {exc or type(exc).__name__}") from exc
            except TimeoutError:
                raise ImapError(f"IMAP {what}: timed out") from None
        task.cancel()
        if lost in done:
            raise ImapError(f"IMAP {what}: connection lost")
        raise ImapError(f"IMAP {what}: no answer within {self.timeout:g}s")

    async def _ok(self, call: Awaitable[Any], what: str) -> Any:
        response = await self._bounded(call, what)
        if response.result != "OK":
            raise ImapError(f"IMAP {what} refused: {_text(response.lines)}")
        return response

    @property
    def closed(self) -> bool:
        """The connection is gone (every further command would fail)."""
        return self._lost.is_set()

    @property
    def capabilities(self) -> set[str]:
        return {c.upper() for c in self.client.protocol.capabilities}

    async def select(self, folder: str) -> Selected:
        response = await self._ok(self.client.select(quote(folder)), f"SELECT {folder}")
        joined = b"\n".join(line for line in response.lines if isinstance(line, bytes))
        validity = _UIDVALIDITY.search(joined)
        if validity is None:
            raise ImapError(f"SELECT {folder}: the server gave no UIDVALIDITY")
        uidnext = _UIDNEXT.search(joined)
        return Selected(int(validity.group(1)), int(uidnext.group(1)) if uidnext else None)

    async def search_uids(self, after: int, *, unseen: bool, upto: int | None = None) -> list[int]:
        """UIDs above ``after`` (up to ``upto`` when given, and unseen when asked), ascending.

        ``UID n:*`` always matches the highest message even when its UID is below ``n``
        (RFC 3501 §6.4.8), so anything not above ``after`` is dropped here.
        """
        criteria = ["UID", f"{after + 1}:{'*' if upto is None else upto}"]
        if unseen:
            criteria.append("UNSEEN")
        response = await self._ok(self.client.uid_search(*criteria, charset=None), "UID SEARCH")
        uids: set[int] = set()
        # aioimaplib strips "* SEARCH" from the untagged line: what is left is the numbers.
        for line in response.lines[:-1]:
            if isinstance(line, bytes) and _NUMBERS.match(line):
                uids.update(int(tok) for tok in line.split() if tok.isdigit())
        return sorted(u for u in uids if u > after and (upto is None or u <= upto))

    async def fetch(self, uids: Sequence[int]) -> list[Fetched]:
        if not uids:
            return []
        protocol = self.client.protocol
        command = _FetchCommand(
            protocol.new_tag(), uid_set(uids), "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])",
            prefix="UID", loop=protocol.loop, timeout=None,
        )  # fmt: skip
        response = await self._ok(protocol.execute(command), "UID FETCH")
        wanted = set(uids)
        return [m for m in parse_fetch(response.lines) if m.uid in wanted]

    async def add_seen(self, uids: Sequence[int]) -> None:
        if uids:
            await self._ok(
                self.client.uid("store", uid_set(uids), "+FLAGS.SILENT", r"(\Seen)"),
                "UID STORE",
            )

    async def folders(self) -> list[tuple[str, set[str]]]:
        """(name, attributes) of every folder (names as the server spells them)."""
        response = await self._ok(self.client.list('""', '"*"'), "LIST")
        out = []
        for line in response.lines:
            if not isinstance(line, bytes) or not line.startswith(b"LIST "):
                continue
            match = _LIST.match(line[5:])
            if match is None:
                continue
            name = match.group("name").decode("utf-8", "replace")
            if name.startswith('"') and name.endswith('"'):
                name = re.sub(r"\\(.)", r"\1", name[1:-1])
            out.append((name, {a.lower() for a in match.group("flags").decode().split()}))
        return out

    async def create(self, folder: str) -> None:
        await self._ok(self.client.create(quote(folder)), f"CREATE {folder}")

    async def append(self, raw: bytes, folder: str, flags: str) -> int | None:
        """APPEND ``raw``; the new UID when the server has UIDPLUS (APPENDUID)."""
        response = await self._ok(
            self.client.append(raw, mailbox=quote(folder), flags=flags), f"APPEND {folder}"
        )
        match = _APPENDUID.search(b" ".join(x for x in response.lines if isinstance(x, bytes)))
        return int(match.group(2)) if match else None

    async def idle(self, seconds: float) -> bool:
        """IDLE for up to ``seconds``; True when the server pushed something."""
        queue = self.client.protocol.idle_queue
        while not queue.empty():  # stale pushes from an earlier IDLE
            queue.get_nowait()
        idle = await self._bounded(self.client.idle_start(timeout=seconds), "IDLE")
        pushed = False
        try:
            push = await self._bounded(
                self.client.wait_server_push(timeout=seconds + self.timeout),
                "IDLE wait",
                limit=seconds + 2 * self.timeout,
            )
            pushed = push != aioimaplib.STOP_WAIT_SERVER_PUSH
        except ImapError as exc:
            if self._lost.is_set():
                raise
            del exc  # nothing came within the IDLE period: re-issue
        finally:
            if not self._lost.is_set():
                self.client.idle_done()
        await self._bounded(idle, "IDLE end")
        return pushed

    async def logout(self) -> None:
        if not self._lost.is_set():
            await self._bounded(self.client.logout(), "LOGOUT", limit=min(self.timeout, 5))


def _text(lines: Sequence[Any]) -> str:
    text = b" ".join(x for x in lines if isinstance(x, bytes))
    return text.decode("utf-8", "replace")[:300]


async def _starttls(client: Any, host: str, context: ssl.SSLContext, limit: float) -> None:
    """STARTTLS (RFC 3501 §6.2.1), which aioimaplib does not offer: command, then upgrade."""
    protocol = client.protocol
    if "STARTTLS" not in {c.upper() for c in protocol.capabilities}:
        raise ImapError("the IMAP server does not offer STARTTLS (imap_security)")
    command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
    response = await asyncio.wait_for(protocol.execute(command), limit)
    if response.result != "OK":
        raise ImapError(f"STARTTLS refused: {_text(response.lines)}")
    transport = await asyncio.wait_for(
        protocol.loop.start_tls(protocol.transport, protocol, context, server_hostname=host),
        limit,
    )
    protocol.transport = transport
    await asyncio.wait_for(protocol.capability(), limit)  # capabilities may change (RFC)


@asynccontextmanager
async def open_mailbox(
    *,
    host: str,
    port: int,
    security: Security,
    username: str,
    password: str,
    call_timeout: float,
    ca_file: str | None = None,
) -> AsyncIterator[Mailbox]:
    """Connect, protect, log in; logs out (bounded) on the way out."""
    lost = asyncio.Event()

    def on_lost(exc: Exception | None) -> None:
        lost.set()

    context = tls_context(ca_file) if security is not Security.PLAIN else None
    if security is Security.SSL:
        client = aioimaplib.IMAP4_SSL(
            host=host, port=port, timeout=call_timeout, ssl_context=context
        )
        # IMAP4_SSL has no conn_lost_cb parameter; set it on the protocol it made.
        client.protocol.conn_lost_cb = on_lost
    else:
        client = aioimaplib.IMAP4(host=host, port=port, timeout=call_timeout, conn_lost_cb=on_lost)
    # Before any byte arrives (the connection is only being opened): the same protocol
    # object, reading without copies.
    client.protocol.__class__ = _Protocol
    mailbox = Mailbox(client, call_timeout, lost)
    try:
        await mailbox._bounded(client.wait_hello_from_server(), "connect")
        if security is Security.STARTTLS:
            assert context is not None
            await mailbox._bounded(_starttls(client, host, context, call_timeout), "STARTTLS")
        try:
            response = await mailbox._bounded(
                client.protocol.execute(
                    aioimaplib.Command(
                        "LOGIN", client.protocol.new_tag(), quote(username), quote(password),
                        loop=client.protocol.loop,
                    ),
                    scrub=password,
                ),
                "LOGIN",
            )  # fmt: skip
        except ImapError as exc:
            raise ImapError(str(exc).replace(password, "***")) from None
        if response.result != "OK":
            raise ImapError(f"IMAP login as {username!r} refused: {_text(response.lines)}")
        client.protocol.state = aioimaplib.AUTH
        await mailbox._bounded(client.protocol.capability(), "CAPABILITY")
    except BaseException:
        _close(client)
        raise
    try:
        yield mailbox
    finally:
        try:
            await mailbox.logout()
        except ImapError:
            pass
        finally:
            _close(client)


def _close(client: Any) -> None:
    transport = getattr(client.protocol, "transport", None)
    if transport is not None:
        transport.close()
    task = getattr(client, "_client_task", None)
    if task is not None and not task.done():
        task.cancel()
