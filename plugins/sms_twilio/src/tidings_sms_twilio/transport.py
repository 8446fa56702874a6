"""httpx's transport interface over one ``aiohttp.ClientSession``: the channel's default.

Why not httpx's own pool: once dozens of sends are in flight it spends several milliseconds
of CPU per request (open httpcore pool issues), where aiohttp's stays well under one. Why
not the ``httpx-aiohttp`` package: it rebuilds aiohttp's per-request options, copies headers
through a generic mapping and wraps every answer in a chunk iterator, which measured about
as much CPU again as aiohttp itself. This transport does only what an httpx transport must:

* one ``ClientSession`` (one keep-alive pool) per transport, opened in the event loop of
  the first request, closed by ``aclose`` (which ``httpx.AsyncClient.aclose`` calls);
* the request's method, URL, headers and body handed over as they are (httpx has already
  set ``Host``, ``Content-Length`` and the rest), redirects and decompression left to
  httpx (``follow_redirects`` and its decoders), the ``timeout`` extension honoured;
* a small answer with a ``Content-Length`` (Twilio's JSON) read in one piece and handed to
  httpx as bytes; anything else (MMS media, chunked answers) streamed, so a caller can stop
  reading at a size limit;
* aiohttp's errors raised as httpx's (timeouts as ``httpx.TimeoutException``, connection
  failures as ``httpx.ConnectError`` …), which is all callers catch.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from yarl import URL

READ_AT_ONCE = 64 * 1024
"""Answers declaring at most this many bytes are read before the response is returned."""

CHUNK = 64 * 1024


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The CA bundle httpx verifies with (certifi, or ``SSL_CERT_FILE``), loaded once per
    process: loading it costs tens of milliseconds, and a context serves any number of
    connections."""
    return httpx.create_ssl_context()


class _Stream(httpx.AsyncByteStream):
    """A streamed aiohttp answer; closing it gives the connection back to the pool."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _MAPPED_ERRORS:
            async for chunk in self._response.content.iter_chunked(CHUNK):
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport sending through one aiohttp connection pool."""

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
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._urls: dict[str, URL] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            keepalive_timeout=self._keepalive,
            ssl=self._ssl or default_ssl_context(),
        )
        # No cookie jar: an API client has no session state, and aiohttp would otherwise
        # filter and store cookies on every request.
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        given = request.extensions.get("timeout") or {}
        key = (given.get("connect"), given.get("read"), given.get("pool"), given.get("write"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            # httpx's pool timeout is the wait for a free connection; aiohttp counts that
            # in ``connect``, so the pool's wait and the TCP connect share the larger one.
            waits = [t for t in (key[0], key[2]) if t is not None]
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=max(waits) if waits else None,
                sock_connect=key[0],
                sock_read=key[1],
            )
            self._timeouts[key] = timeout
        return timeout

    def _url(self, request: httpx.Request) -> URL:
        text = str(request.url)
        url = self._urls.get(text)
        if url is None:
            url = URL(text, encoded=True)
            if len(self._urls) < 256:  # the few endpoints an account calls, not media URLs
                self._urls[text] = url
        return url

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session
        if session is None or session.closed:
            session = self._open()
        headers = request.headers.multi_items()
        try:
            data: Any = request.content
        except httpx.RequestNotRead:
            # A streamed body: aiohttp sends an async iterable chunked and writes that
            # header itself (it refuses a request that already carries it).
            data = request.stream
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        with _MAPPED_ERRORS:
            response = await session.request(
                request.method,
                self._url(request),
                headers=headers,
                data=data or None,
                allow_redirects=False,
                timeout=self._timeout(request),
            )
            try:
                length = response.content_length
                if length is not None and length <= READ_AT_ONCE:
                    content = await response.read()
                    response.release()
                    return httpx.Response(
                        response.status,
                        headers=response.raw_headers,
                        content=content,
                        extensions={"http_version": b"HTTP/1.1"},
                    )
            except BaseException:
                response.release()
                raise
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_Stream(response),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class _MappedErrors:
    """aiohttp's exceptions as httpx's, so callers handle one family (stateless: one
    instance serves every ``with``)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError):
            raise _translate(exc) from exc


def _translate(exc: BaseException) -> httpx.TransportError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, asyncio.TimeoutError):  # includes aiohttp.ServerTimeoutError
        return httpx.TimeoutException(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.ClientOSError | aiohttp.ClientConnectionError):
        return httpx.NetworkError(message)
    return httpx.TransportError(message)


_MAPPED_ERRORS = _MappedErrors()
