"""Quick local measurement: the send hook over httpx's default transport vs ours (HTTP/1.1).

Starts a Twilio-shaped Messages endpoint (aiohttp.web) in a child process, then drives the
real ``TwilioSms.send`` path N times at several concurrencies with each transport, printing
messages per second and client-process CPU per request. Not a test; run it by hand:

    .venv/bin/python plugins/sms_twilio/scripts/bench_transport.py [N]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable

import httpx

from tidings import Account, Address, OutboundMessage
from tidings_sms_twilio import TwilioSettings, TwilioSms
from tidings_sms_twilio.channel import default_transport

SID = "AC" + "0" * 32


def serve() -> None:
    from aiohttp import web

    counter = 0

    async def create(request: web.Request) -> web.Response:
        nonlocal counter
        await request.post()
        counter += 1
        return web.json_response(
            {"sid": f"SM{counter:032x}", "status": "queued", "num_segments": "1"}, status=201
        )

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", create)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


async def run(
    name: str, transport: Callable[[], httpx.AsyncBaseTransport], base: str, n: int, conc: int
) -> None:
    channel = TwilioSms(transport=transport)
    settings = TwilioSettings(
        account_sid=SID, auth_token="t" * 32, from_number="+15017122661", base_url=base
    )
    account = Account[TwilioSettings](
        id="bench", channel="sms_twilio", project="p", settings=settings
    )
    message = OutboundMessage(id="m", to=(Address.phone("+48600100200"),), text="hello")
    await channel.send(account, message)  # warm-up: connection opened, imports done
    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            await channel.send(account, message)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await channel.aclose()
    print(
        f"{name:<16} concurrency {conc:>3}: {n / wall:7.0f} msg/s, "
        f"{cpu / n * 1000:5.2f} ms CPU/request"
    )


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve()
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        base = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        for conc in (1, 50):
            asyncio.run(run("httpx default", httpx.AsyncHTTPTransport, base, n, conc))
            asyncio.run(run("ours (HTTP/1.1)", default_transport, base, n, conc))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
