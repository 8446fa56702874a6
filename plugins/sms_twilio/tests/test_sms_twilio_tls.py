"""The default transport over TLS, as every request to Twilio goes: a real handshake with a
local HTTPS server, keep-alive on the encrypted connection, and a refused certificate."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tidings.testing.mailservers import make_certificate
from tidings_sms_twilio.transport import Http11Transport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(each_event_loop: Any) -> Any:
    """uvloop (what deployments run on) and asyncio's own loop alike."""
    return each_event_loop


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return make_certificate(tmp_path)


@pytest.fixture
async def https_server(tls_files: tuple[Path, Path]) -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return web.json_response(
            {"body": (await request.read()).decode(), "peer_port": peer[1] if peer else None}
        )

    app = web.Application()
    app.router.add_post("/echo", echo)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://localhost:{port}"
    finally:
        await runner.cleanup()


async def test_https_round_trip_reuses_the_encrypted_connection(
    https_server: str, tls_files: tuple[Path, Path]
) -> None:
    trusted = ssl.create_default_context(cafile=str(tls_files[0]))
    async with httpx.AsyncClient(transport=Http11Transport(ssl_context=trusted)) as client:
        first = await client.post(f"{https_server}/echo", data={"Body": "zażółć"})
        second = await client.post(f"{https_server}/echo", data={"Body": "again"})
    assert first.status_code == second.status_code == 200
    assert first.json()["body"] == "Body=za%C5%BC%C3%B3%C5%82%C4%87"
    assert second.json()["body"] == "Body=again"
    assert first.json()["peer_port"] == second.json()["peer_port"]  # one TLS connection


async def test_an_untrusted_certificate_is_refused(https_server: str) -> None:
    # The default context trusts the public CAs httpx uses, not our self-signed one.
    async with httpx.AsyncClient(transport=Http11Transport()) as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.post(f"{https_server}/echo", data={"Body": "x"})
