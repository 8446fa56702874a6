"""httpx's transport interface over our own small HTTP/1.1 client: the channel's default.

Why our own: a Twilio send is one small POST and one small JSON answer, and the general
clients spend far more CPU on the machinery around that than on the bytes. httpx's own pool
(httpcore) spends several milliseconds per request once dozens are in flight; aiohttp's
``ClientSession.request`` about 0.3 ms (request and response objects, header multidicts,
timers, traces), two thirds of a whole send. A request here is one ``write`` of bytes
httpx has already prepared, and its answer is parsed from the bytes as they arrive, on an
``asyncio.Protocol``: measured under a tenth of a millisecond (see the README's figures).

What it does, and all it does — what an httpx transport must for Twilio's REST API and the
media hosts it links to:

* HTTP/1.1 (``http`` and ``https``; TLS with the CA bundle httpx uses) over keep-alive
  connections pooled per origin, at most ``max_connections`` in use at once (httpx's
  ``pool`` timeout is the wait for one), idle ones closed after ``keepalive_expiry``;
* the request's method, target, headers and body sent as httpx prepared them (httpx sets
  ``Host`` and ``Content-Length``, or ``Transfer-Encoding: chunked`` for a streamed body,
  which is then sent chunked);
* answers framed as RFC 9112 section 6.3 says: no body for ``HEAD``, 1xx, 204 and 304,
  chunked, ``Content-Length``, or up to the close; interim 1xx answers skipped. An answer
  that declares up to ``READ_AT_ONCE`` bytes is read off the connection whole before it is
  returned (as a ready stream of its bytes); any other is streamed from the connection, so
  a caller can stop reading (say, at a media size limit). Redirects and
  decompression stay httpx's (``follow_redirects``, its decoders);
* the ``timeout`` extension honoured (connect, read, write, pool), and failures raised as
  httpx's exceptions (``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError`` …), which
  is all callers catch;
* a connection goes back to the pool only after a whole answer was read on it and neither
  side asked to close it; one interrupted in any way (cancelled, timed out, an answer
  abandoned half-read) is closed, so no answer can ever be read as another request's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx

READ_AT_ONCE = 64 * 1024
"""Answers declaring at most this many bytes are read before the response is returned."""

MAX_HEAD = 64 * 1024
"""Most bytes an answer's status line and headers may take."""

PAUSE_AT = 256 * 1024
"""Bytes buffered from a streamed answer before the socket stops being read."""

_NO_BODY = frozenset({204, 304})


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The CA bundle httpx verifies with (certifi, or ``SSL_CERT_FILE``), loaded once per
    process: loading it costs tens of milliseconds, and a context serves any number of
    connections."""
    return httpx.create_ssl_context()


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: bytes out, bytes in, a waiter woken when either moves."""

    def __init__(self, origin: tuple[bytes, bytes, int]) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.lost: BaseException | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._write_paused = False

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport by construction (``create_connection``), but not necessarily a
        # subclass of ``asyncio.Transport``: uvloop's are not, so no ``isinstance`` here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > PAUSE_AT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.eof = True
        self.lost = exc
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- used by the transport -------------------------------------------------------------

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def consumed(self, count: int) -> None:
        del self.buffer[:count]
        if self._paused and len(self.buffer) < PAUSE_AT // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    async def wait(self, seconds: float | None, error: type[httpx.TimeoutException]) -> None:
        """Until bytes arrive, the peer closes, or writing may go on; ``error`` after
        ``seconds`` seconds."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        expiry = loop.call_later(seconds, _expire, waiter) if seconds is not None else None
        try:
            await waiter
        except TimeoutError:
            raise error(f"no progress in {seconds} s") from None
        finally:
            self._waiter = None
            if expiry is not None:
                expiry.cancel()

    async def write(self, data: bytes, seconds: float | None) -> None:
        if self.closed or self.transport is None:
            raise httpx.WriteError("the connection is closed")
        self.transport.write(data)
        while self._write_paused and not self.closed:
            await self.wait(seconds, httpx.WriteTimeout)
        if self.lost is not None:
            raise httpx.WriteError(str(self.lost) or type(self.lost).__name__)

    async def more(self, seconds: float | None) -> None:
        """Wait for more of the answer; a closed connection is an incomplete answer."""
        if self.eof:
            raise self.incomplete()
        await self.wait(seconds, httpx.ReadTimeout)

    async def line(self, seconds: float | None, too_long: str) -> bytes:
        """The next line of the answer without its CRLF, consumed; ``too_long`` is the
        protocol error when no line ends within ``MAX_HEAD`` bytes."""
        end = self.buffer.find(b"\r\n")
        while end < 0:
            if len(self.buffer) > MAX_HEAD:
                raise httpx.RemoteProtocolError(too_long)
            await self.more(seconds)
            end = self.buffer.find(b"\r\n")
        text = bytes(self.buffer[:end])
        self.consumed(end + 2)
        return text

    async def parts(self, count: int, seconds: float | None) -> AsyncIterator[bytes]:
        """Exactly ``count`` bytes of the answer, consumed, in pieces as they arrive."""
        while count:
            if not self.buffer:
                await self.more(seconds)
            part = bytes(self.buffer[:count])
            self.consumed(len(part))
            count -= len(part)
            yield part

    def incomplete(self) -> httpx.TransportError:
        if self.lost is not None:
            return httpx.ReadError(str(self.lost) or type(self.lost).__name__)
        return httpx.RemoteProtocolError("the server closed the connection mid-answer")


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Head:
    """An answer's status line and headers, and how its body is framed."""

    __slots__ = ("chunked", "headers", "keep_alive", "length", "reason", "status", "to_close")

    def __init__(self, data: bytes) -> None:
        lines = data.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) == 3 else b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.length: int | None = None
        self.chunked = False
        coded = False
        close = parts[0] == b"HTTP/1.0"
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name[-1:] in (b" ", b"\t") or name[:1] in (b" ", b"\t"):
                raise httpx.RemoteProtocolError(f"malformed header line: {line[:100]!r}")
            value = value.strip(b" \t")
            self.headers.append((name, value))
            key = name.lower()
            if key == b"content-length":
                if not value.isdigit() or (self.length is not None and self.length != int(value)):
                    raise httpx.RemoteProtocolError(f"bad Content-Length: {value[:40]!r}")
                self.length = int(value)
            elif key == b"transfer-encoding":
                coded = True
                self.chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
            elif key == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                if b"close" in tokens:
                    close = True
                elif b"keep-alive" in tokens and parts[0] == b"HTTP/1.0":
                    close = False
        if coded:
            self.length = None  # Transfer-Encoding overrides Content-Length
        self.to_close = not self.chunked and self.length is None
        """The body (if the answer has one) runs to the close: nothing more on this connection."""
        self.keep_alive = not close


class Http11Transport(httpx.AsyncBaseTransport):
    """An httpx transport sending HTTP/1.1 over its own keep-alive connection pool."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        keepalive_expiry: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._limit = max_connections
        self._keepalive = keepalive_expiry
        self._ssl = ssl_context
        self._idle: dict[tuple[bytes, bytes, int], list[_Connection]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- the pool ----------------------------------------------------------------------------

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            # A pool belongs to one event loop (its sockets do): a new loop starts afresh.
            for conns in self._idle.values():
                for conn in conns:
                    conn.close()
            self._idle = {}
            self._slots = asyncio.Semaphore(self._limit)
            self._loop = loop
        return self._slots

    async def _acquire(self, seconds: float | None) -> None:
        slots = self._semaphore()
        if not slots.locked():
            await slots.acquire()  # free: returns at once
            return
        try:
            await asyncio.wait_for(slots.acquire(), seconds)
        except TimeoutError:
            raise httpx.PoolTimeout(f"no free connection in {seconds} s") from None

    def _release(self, conn: _Connection | None, reusable: bool) -> None:
        if conn is not None:
            if reusable and not conn.closed and not conn.buffer:
                conn.idle_since = time.monotonic()
                self._idle.setdefault(conn.origin, []).append(conn)
            else:
                conn.close()
        if self._slots is not None and self._loop is asyncio.get_running_loop():
            self._slots.release()

    async def _connect(
        self, origin: tuple[bytes, bytes, int], seconds: float | None
    ) -> _Connection:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.closed or conn.eof or conn.buffer or now - conn.idle_since > self._keepalive:
                conn.close()
                continue
            return conn
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        hostname = host.decode("ascii")
        tls = scheme == b"https"
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    functools.partial(_Connection, origin),
                    hostname.strip("[]"),
                    port,
                    ssl=(self._ssl or default_ssl_context()) if tls else None,
                    server_hostname=hostname.strip("[]") if tls else None,
                ),
                seconds,
            )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"connecting to {hostname}:{port} took over {seconds} s"
            ) from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is one)
            raise httpx.ConnectError(f"cannot connect to {hostname}:{port}: {exc}") from exc
        return conn

    async def aclose(self) -> None:
        """Close the idle connections; those in use close when their answers are done."""
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    # --- one exchange ------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme.decode()!r}")
        port = url.port or (443 if scheme == b"https" else 80)
        origin = (scheme, url.raw_host, port)
        timeouts = request.extensions.get("timeout") or {}
        await self._acquire(timeouts.get("pool"))
        conn: _Connection | None = None
        try:
            conn = await self._connect(origin, timeouts.get("connect"))
            await self._send(conn, request, timeouts.get("write"))
            head = await self._head(conn, timeouts.get("read"))
            no_body = request.method == "HEAD" or head.status in _NO_BODY
            if no_body or (head.length is not None and head.length <= READ_AT_ONCE):
                content = b"" if no_body else await _read(conn, head.length or 0, timeouts)
                self._release(conn, head.keep_alive)
                # The bytes are all here, but the response is left unread: httpx reading
                # it (``content=``) costs 35 µs, which a caller taking the raw bytes
                # (``send.Messages``) need not pay; ``AsyncClient.send`` reads it as before.
                return httpx.Response(
                    head.status,
                    headers=head.headers,
                    stream=httpx.ByteStream(content),
                    extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
                )
        except BaseException as exc:
            # Whatever happened, this connection's state is unknown: it is not reused.
            self._release(conn, False)
            if isinstance(exc, OSError):
                raise httpx.NetworkError(str(exc) or type(exc).__name__) from exc
            raise
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=_Body(self, conn, head, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    async def _send(self, conn: _Connection, request: httpx.Request, seconds: float | None) -> None:
        target = request.url.raw_path
        lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), target)]
        chunked = False
        for name, value in request.headers.raw:
            if name.lower() == b"transfer-encoding" and value.lower() == b"chunked":
                chunked = True
            lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"\r\n")
        body: bytes | None = None
        if isinstance(request.stream, httpx.ByteStream):  # bytes, given or read
            body = b"".join(request.stream)
        else:
            with contextlib.suppress(httpx.RequestNotRead):
                body = request.content
        if body is not None:
            await conn.write(b"".join(lines) + body, seconds)
            return
        await conn.write(b"".join(lines), seconds)
        assert isinstance(request.stream, httpx.AsyncByteStream)
        async for part in request.stream:
            if part:
                await conn.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part, seconds)
        if chunked:
            await conn.write(b"0\r\n\r\n", seconds)

    async def _head(self, conn: _Connection, seconds: float | None) -> _Head:
        """The final answer's head (interim 1xx answers skipped), its bytes consumed."""
        while True:
            end = conn.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.buffer) > MAX_HEAD:
                    raise httpx.RemoteProtocolError("the answer's headers are too long")
                if conn.eof and not conn.buffer:
                    raise httpx.RemoteProtocolError("the server closed the connection unanswered")
                await conn.more(seconds)
                continue
            head = _Head(bytes(conn.buffer[:end]))
            conn.consumed(end + 4)
            if head.status == 101 or not 100 <= head.status < 200:
                return head


async def _read(conn: _Connection, length: int, timeouts: dict[str, Any]) -> bytes:
    """Exactly ``length`` bytes of body."""
    while len(conn.buffer) < length:
        await conn.more(timeouts.get("read"))
    content = bytes(conn.buffer[:length])
    conn.consumed(length)
    return content


class _Body(httpx.AsyncByteStream):
    """A streamed answer; closing it gives the connection back, if it was read to the end."""

    def __init__(
        self, pool: Http11Transport, conn: _Connection, head: _Head, seconds: float | None
    ) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._head = head
        self._timeout = seconds
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise httpx.StreamClosed()
        try:
            if self._head.chunked:
                async for part in self._chunks(conn):
                    yield part
            elif self._head.length is not None:
                async for part in conn.parts(self._head.length, self._timeout):
                    yield part
            else:  # to the close
                while True:
                    if conn.buffer:
                        part = bytes(conn.buffer)
                        conn.consumed(len(part))
                        yield part
                    elif conn.eof:
                        if conn.lost is not None:
                            raise conn.incomplete()
                        break
                    else:
                        await conn.wait(self._timeout, httpx.ReadTimeout)
            self._done = True
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc

    async def _chunks(self, conn: _Connection) -> AsyncIterator[bytes]:
        while True:
            line = await conn.line(self._timeout, "a chunk size line is too long")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                break
            async for part in conn.parts(size, self._timeout):
                yield part
            while len(conn.buffer) < 2:
                await conn.more(self._timeout)
            if conn.buffer[:2] != b"\r\n":
                raise httpx.RemoteProtocolError("a chunk does not end where its size says")
            conn.consumed(2)
        while await conn.line(self._timeout, "the trailers are too long"):
            pass  # trailers, up to the empty line

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            head = self._head
            self._pool._release(conn, self._done and head.keep_alive and not head.to_close)
