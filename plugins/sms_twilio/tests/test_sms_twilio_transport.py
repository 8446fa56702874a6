"""The channel's default transport (httpx over our HTTP/1.1 pool) against a real local server.

respx replaces the transport in the other tests, so what only the real one does — reading
small answers whole and streaming large ones, decoding, timeouts, connection errors as
httpx's exceptions, keep-alive, the pool's limit, HTTP/1.1 framing — is checked here over
TCP: against aiohttp's server, and against a raw server that answers exactly the bytes a
test scripts (chunked with extensions and trailers, interim answers, bodies that run to the
close, answers cut short).
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web
from sms_twilio_samples import account, load_with, outbound, serving

from tidings import TransientSendError
from tidings_sms_twilio import TwilioSms
from tidings_sms_twilio.transport import READ_AT_ONCE, Http11Transport

BIG = bytes(range(256)) * (4 * READ_AT_ONCE // 256)


@pytest.fixture
def anyio_backend(each_event_loop: Any) -> Any:
    """uvloop (what deployments run on) and asyncio's own loop alike."""
    return each_event_loop


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)  # chunked: no Content-Length
        for start in range(0, len(BIG), 10_000):
            await response.write(BIG[start : start + 10_000])
        await response.write_eof()
        return response

    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=BIG, content_type="application/octet-stream")

    async def gzipped(request: web.Request) -> web.Response:
        body = gzip.compress(b'{"sid": "SM1"}')
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async def echo(request: web.Request) -> web.Response:
        data = await request.read()
        return web.json_response(
            {"body": data.decode(), "method": request.method, "x": request.headers.get("X-Test")}
        )

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/sized", sized)
    app.router.add_get("/gzip", gzipped)
    app.router.add_route("*", "/echo", echo)
    app.router.add_post("/slow/2010-04-01/Accounts/{sid}/Messages.json", slow)
    async with serving(app) as url:
        yield url


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=Http11Transport(), trust_env=False) as c:
        yield c


@pytest.mark.anyio
async def test_request_goes_out_as_given(server: str, client: httpx.AsyncClient) -> None:
    response = await client.put(f"{server}/echo", content=b"a=1&b=2", headers={"X-Test": "yes"})
    assert response.status_code == 200
    assert response.json() == {"body": "a=1&b=2", "method": "PUT", "x": "yes"}


@pytest.mark.anyio
async def test_streamed_request_body(server: str, client: httpx.AsyncClient) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one ", b"two ", b"three"):
            yield part

    response = await client.post(f"{server}/echo", content=parts())
    assert response.json()["body"] == "one two three"


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/big", "/sized"])
async def test_large_answers_stream(server: str, client: httpx.AsyncClient, path: str) -> None:
    """Chunked and large sized answers arrive in pieces a reader can stop at."""
    async with client.stream("GET", f"{server}{path}") as response:
        first = await response.aiter_bytes().__anext__()
        assert 0 < len(first) < len(BIG)
    async with client.stream("GET", f"{server}{path}") as response:
        assert await response.aread() == BIG
    # The pool is still usable after a stream was abandoned half-way.
    assert (await client.get(f"{server}/sized")).content == BIG


@pytest.mark.anyio
async def test_content_encoding_is_decoded_by_httpx(server: str, client: httpx.AsyncClient) -> None:
    response = await client.get(f"{server}/gzip")
    assert response.json() == {"sid": "SM1"}


@pytest.mark.anyio
async def test_refused_connection_is_transient() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    channel = TwilioSms()
    handle = load_with(channel).channel("sms_twilio")
    try:
        with pytest.raises(TransientSendError, match=r"cannot reach Twilio \(ConnectError\)"):
            await handle.send(account(base_url=f"http://127.0.0.1:{port}"), outbound())
    finally:
        await channel.aclose()


@pytest.mark.anyio
async def test_read_timeout_is_transient(server: str) -> None:
    channel = TwilioSms()
    handle = load_with(channel).channel("sms_twilio")
    try:
        acct = account(base_url=f"{server}/slow", read_timeout=0.2)
        with pytest.raises(TransientSendError, match=r"did not answer in time \(ReadTimeout\)"):
            await handle.send(acct, outbound())
    finally:
        await channel.aclose()


@pytest.mark.anyio
async def test_aclose_closes_the_pool(server: str) -> None:
    transport = Http11Transport()
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(f"{server}/sized")).status_code == 200
    # The client closed the transport; a new request opens a new pool.
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(f"{server}/sized")).status_code == 200


@pytest.mark.anyio
async def test_keep_alive_reuses_one_connection(server: str) -> None:
    transport = Http11Transport()
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            assert (await client.put(f"{server}/echo", content=b"x")).status_code == 200
        assert [len(conns) for conns in transport._idle.values()] == [1]


Script = Callable[[bytes], bytes | None]


@pytest.fixture
async def raw() -> AsyncIterator[tuple[str, list[Script], list[int]]]:
    """A server answering each request with the bytes the next script returns for it (and
    closing the connection after it when a script returns ``None`` — then having answered
    nothing — or when the answer ends in ``CLOSE``). Also yields the number of connections
    it accepted."""
    scripts: list[Script] = []
    accepted = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        try:
            while scripts:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                answer = scripts.pop(0)(request)
                if answer is None:
                    break
                writer.write(answer.removesuffix(CLOSE))
                await writer.drain()
                if answer.endswith(CLOSE):
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", scripts, accepted
    finally:
        listener.close()
        await listener.wait_closed()


CLOSE = b"<close>"


def answer(data: bytes) -> Script:
    return lambda request: data


@pytest.mark.anyio
async def test_framing_of_answers(raw: tuple[str, list[Script], list[int]]) -> None:
    """Chunked (extensions, trailers), interim 1xx, no body for 204 and HEAD, and a body that
    runs to the close — each read right, and the connection kept only where it may be."""
    url, scripts, accepted = raw
    scripts += [
        answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
               b"\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"),
        answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
        answer(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
        answer(b"HTTP/1.1 201 Created\r\ncontent-length: 3\r\nX-Spaced:   v  \r\n\r\nabc"),
        answer(b"HTTP/1.0 200 OK\r\n\r\nto the close" + CLOSE),
    ]  # fmt: skip
    async with httpx.AsyncClient(transport=Http11Transport()) as client:
        first = await client.get(f"{url}/a")
        assert (first.status_code, first.content) == (200, b"hello world")
        assert (await client.get(f"{url}/b")).status_code == 204
        head = await client.head(f"{url}/c")
        assert (head.status_code, head.content) == (200, b"")
        created = await client.post(f"{url}/d", content=b"q")
        assert (created.content, created.headers["x-spaced"]) == (b"abc", "v")
        assert created.extensions["reason_phrase"] == b"Created"
        last = await client.get(f"{url}/e")
        assert last.content == b"to the close"
    assert accepted == [1]  # all of it over one kept-alive connection


@pytest.mark.anyio
async def test_a_connection_the_server_closes_is_not_reused(
    raw: tuple[str, list[Script], list[int]],
) -> None:
    url, scripts, accepted = raw
    scripts += [
        answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok" + CLOSE),
        answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + CLOSE),  # closes silently
        answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ]  # fmt: skip
    async with httpx.AsyncClient(transport=Http11Transport()) as client:
        for _ in range(2):
            assert (await client.get(url)).content == b"ok"
        await asyncio.sleep(0.05)  # the second close reaches the idle connection
        assert (await client.get(url)).content == b"ok"
    assert accepted == [3]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("data", "error"),
    [
        (None, httpx.RemoteProtocolError),  # closed without answering
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort" + CLOSE, httpx.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", httpx.RemoteProtocolError),
        (b"SMTP 220 hello\r\n\r\n", httpx.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\n folded\r\n\r\n", httpx.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
         httpx.RemoteProtocolError),
    ],
)  # fmt: skip
async def test_broken_answers_raise_and_the_pool_recovers(
    raw: tuple[str, list[Script], list[int]], data: bytes | None, error: type[Exception]
) -> None:
    url, scripts, accepted = raw
    scripts += [lambda request: data, answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")]
    async with httpx.AsyncClient(transport=Http11Transport()) as client:
        with pytest.raises(error):
            await client.get(url)
        # The broken connection was dropped: the next request gets a fresh one.
        assert (await client.get(url)).content == b"ok"
    assert accepted == [2]


@pytest.mark.anyio
async def test_requests_go_out_byte_for_byte(raw: tuple[str, list[Script], list[int]]) -> None:
    url, scripts, _ = raw
    seen: list[bytes] = []

    def record(request: bytes) -> bytes:
        seen.append(request)
        return b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"

    scripts.append(record)
    async with httpx.AsyncClient(transport=Http11Transport()) as client:
        await client.post(f"{url}/p?q=1", content=b"To=%2B48", headers={"X-A": "b"})
    host = url.removeprefix("http://")
    assert seen == [
        b"POST /p?q=1 HTTP/1.1\r\nHost: " + host.encode() + b"\r\nAccept: */*\r\n"
        b"Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
        b"User-Agent: python-httpx/" + httpx.__version__.encode() + b"\r\n"
        b"X-A: b\r\nContent-Length: 8\r\n\r\nTo=%2B48"
    ]


@pytest.mark.anyio
async def test_the_pool_limit_and_its_timeout(server: str) -> None:
    transport = Http11Transport(max_connections=1)
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, pool=0.1)) as c:
        async with c.stream("GET", f"{server}/big"):  # holds the one connection
            with pytest.raises(httpx.PoolTimeout):
                await c.get(f"{server}/sized")
        # Given back when the stream closed.
        assert (await c.get(f"{server}/sized")).content == BIG


@pytest.mark.anyio
async def test_tls_is_spoken_to_https_urls(server: str) -> None:
    """An https URL gets a TLS handshake: against a plain-HTTP server it fails to connect
    (rather than sending the request in clear)."""
    async with httpx.AsyncClient(transport=Http11Transport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(server.replace("http://", "https://") + "/sized")


@pytest.mark.anyio
async def test_a_cancelled_request_drops_its_connection(server: str) -> None:
    transport = Http11Transport()
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.post(f"{server}/slow/2010-04-01/Accounts/AC1/Messages.json")
        assert not any(transport._idle.values())  # its answer may still come: not reusable
        assert (await client.get(f"{server}/sized")).content == BIG


@pytest.mark.anyio
async def test_a_send_goes_out_as_one_whole_request(
    raw: tuple[str, list[Script], list[int]],
) -> None:
    """The channel's prepared request (its body a ready stream) reaches the wire with the
    Host, the Content-Length and the form httpx itself would have sent."""
    url, scripts, _ = raw
    seen: list[bytes] = []

    def record(request: bytes) -> bytes:
        seen.append(request)
        body = b'{"sid": "SM1", "status": "queued"}'
        return b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    scripts.append(record)
    channel = TwilioSms()
    try:
        result = (
            await load_with(channel)
            .channel("sms_twilio")
            .send(account(base_url=url), outbound("Zażółć"))
        )
    finally:
        await channel.aclose()
    assert result.provider_id == "SM1"
    (request,) = seen
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"POST /2010-04-01/Accounts/AC")
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert headers[b"Host"] == url.removeprefix("http://").encode()
    assert headers[b"Content-Length"] == str(len(body)).encode()
    form = dict(httpx.QueryParams(body.decode()))
    assert (form["To"], form["Body"]) == ("+48600100200", "Zażółć")
