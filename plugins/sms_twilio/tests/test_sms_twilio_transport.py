"""The channel's default transport (httpx over one aiohttp pool) against a real local server.

respx replaces the transport in the other tests, so what only the real one does — reading
small answers whole and streaming large ones, decoding, timeouts, connection errors as
httpx's exceptions — is checked here over TCP.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from sms_twilio_samples import account, load_with, outbound, serving

from tidings import TransientSendError
from tidings_sms_twilio import TwilioSms
from tidings_sms_twilio.transport import READ_AT_ONCE, AiohttpTransport

BIG = bytes(range(256)) * (4 * READ_AT_ONCE // 256)


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
    async with httpx.AsyncClient(transport=AiohttpTransport(), trust_env=False) as c:
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
    transport = AiohttpTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(f"{server}/sized")).status_code == 200
    # The client closed the transport; a new request opens a new pool.
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(f"{server}/sized")).status_code == 200
