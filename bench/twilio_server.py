"""A local Twilio-shaped Messages endpoint, run in its own process, that counts what it got.

The benchmarks and the two-worker test need a provider that answers like Twilio — Basic
auth, a form body, ``201`` with the Message resource and a fresh ``SM…`` sid — without the
network, and that can tell afterwards whether any message arrived twice. It runs in a
child process so its CPU is not charged to the sender being measured.

    .venv/bin/python bench/twilio_server.py [--latency-ms 20] [--port 0]

prints the port it listens on as its first line. Besides the Messages resource it serves:

* ``GET /_stats``: ``{"requests", "created", "rejected", "distinct", "duplicates"}``, and
  with ``?full=1`` also ``"received"``: every (To, Body) seen with the wall-clock times
  (``time.time()``) it arrived and the sids it was given, so a caller can check
  exactly-once against its own records and measure compose-to-provider latency;
* ``POST /_reset``: forget the counts; ``POST /_config`` with form ``latency_ms``: change
  the added latency.

Requests are keyed by (To, Body): callers give every message a unique body.

From Python, :class:`TwilioServer` starts and stops it (``with TwilioServer(...) as s``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, where a benchmark's file could
# shadow a standard module (``email``): search it last.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import base64  # noqa: E402
import hmac  # noqa: E402
import json  # noqa: E402
import secrets  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from email.utils import formatdate  # noqa: E402
from types import TracebackType  # noqa: E402
from typing import Any  # noqa: E402

ACCOUNT_SID = "AC" + "b0b1b2b3b4b5b6b7" * 2
AUTH_TOKEN = "f0e1d2c3b4a5968778695a4b3c2d1e0f"  # noqa: S105 (a local test value)
FROM_NUMBER = "+15017122661"
MESSAGES_PATH = "/2010-04-01/Accounts/{sid}/Messages.json"


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Counts:
    requests: int = 0
    created: int = 0
    rejected: int = 0
    received: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    sids: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def stats(self, full: bool) -> dict[str, Any]:
        duplicates = [
            {"to": to, "body": body, "count": len(times)}
            for (to, body), times in self.received.items()
            if len(times) > 1
        ]
        out: dict[str, Any] = {
            "requests": self.requests,
            "created": self.created,
            "rejected": self.rejected,
            "distinct": len(self.received),
            "duplicates": duplicates[:100],
            "duplicate_count": len(duplicates),
        }
        if full:
            out["received"] = [
                {"to": to, "body": body, "times": times, "sids": self.sids.get((to, body), [])}
                for (to, body), times in self.received.items()
            ]
        return out


def twilio_error(code: int, message: str, status: int) -> dict[str, Any]:
    """Twilio's REST error object."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def message_resource(
    account_sid: str, sid: str, to: str, sender: str, body: str, service: str | None
) -> dict[str, Any]:
    """The Message resource Twilio answers ``201`` with, as its API reference shows it."""
    now = formatdate(usegmt=False).replace("-0000", "+0000")
    uri = f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}"
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": sender,
        "messaging_service_sid": service,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": to,
        "uri": f"{uri}.json",
    }


def serve(port: int, latency_ms: float, account_sid: str, auth_token: str) -> None:
    from aiohttp import web

    counts = Counts()
    latency = [latency_ms / 1000.0]
    expected_auth = basic_auth(account_sid, auth_token).encode()
    # Sids are unique per server start (random prefix) and per request (counter).
    prefix = secrets.token_hex(4)
    serial = 0

    def fail(code: int, message: str, status: int) -> web.Response:
        counts.rejected += 1
        return web.json_response(twilio_error(code, message, status), status=status)

    async def create(request: web.Request) -> web.Response:
        nonlocal serial
        counts.requests += 1
        given = request.headers.get("Authorization", "").encode()
        if request.match_info["sid"] != account_sid or not hmac.compare_digest(
            given, expected_auth
        ):
            return fail(20003, "Authentication Error - invalid username", 401)
        form = await request.post()
        to, sender = form.get("To"), form.get("From")
        service, body = form.get("MessagingServiceSid"), form.get("Body")
        if not isinstance(to, str) or not to:
            return fail(21604, "A 'To' phone number is required.", 400)
        if not isinstance(sender, str) and not isinstance(service, str):
            return fail(21603, "A 'From' phone number is required.", 400)
        if not isinstance(body, str) or not body:
            return fail(21602, "Message body is required.", 400)
        counts.received.setdefault((to, body), []).append(time.time())
        if latency[0] > 0:
            await asyncio.sleep(latency[0])
        serial += 1
        counts.created += 1
        sid = f"SM{prefix}{serial:024x}"
        counts.sids.setdefault((to, body), []).append(sid)
        resource = message_resource(
            account_sid,
            sid,
            to,
            sender if isinstance(sender, str) else "",
            body,
            service if isinstance(service, str) else None,
        )
        return web.json_response(resource, status=201)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counts.stats(full=request.query.get("full") == "1"))

    async def reset(request: web.Request) -> web.Response:
        nonlocal counts
        counts = Counts()
        return web.json_response({"ok": True})

    async def configure(request: web.Request) -> web.Response:
        form = await request.post()
        value = form.get("latency_ms")
        try:
            latency[0] = float(value) / 1000.0 if isinstance(value, str) else latency[0]
        except ValueError:
            return web.json_response({"error": "latency_ms must be a number"}, status=400)
        return web.json_response({"latency_ms": latency[0] * 1000.0})

    async def main() -> None:
        app = web.Application()
        app.router.add_post(MESSAGES_PATH, create)
        app.router.add_get("/_stats", stats)
        app.router.add_post("/_reset", reset)
        app.router.add_post("/_config", configure)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=2048)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class TwilioServer:
    """The server in a child process; ``base_url`` is what a Twilio account's ``base_url``
    setting takes."""

    def __init__(
        self,
        latency_ms: float = 0.0,
        *,
        account_sid: str = ACCOUNT_SID,
        auth_token: str = AUTH_TOKEN,
    ) -> None:
        self.latency_ms = latency_ms
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> TwilioServer:
        self.process = subprocess.Popen(
            [sys.executable, "-P", str(Path(__file__).resolve()), "--latency-ms",
             str(self.latency_ms), "--account-sid", self.account_sid,
             "--auth-token", self.auth_token],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.isdigit():
            self.close()
            raise RuntimeError(f"the Twilio-shaped server did not start (said {line!r})")
        self.base_url = f"http://127.0.0.1:{line}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    @property
    def messages_url(self) -> str:
        return self.base_url + MESSAGES_PATH.format(sid=self.account_sid)

    def _call(self, method: str, path: str, form: dict[str, str] | None = None) -> Any:
        data = "&".join(f"{k}={v}" for k, v in (form or {}).items()).encode() if form else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)  # noqa: S310
        if data is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return json.loads(response.read())

    def stats(self, *, full: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_stats?full=1" if full else "/_stats")
        return result

    def reset(self) -> None:
        self._call("POST", "/_reset", {"ok": "1"})

    def set_latency(self, latency_ms: float) -> None:
        self._call("POST", "/_config", {"latency_ms": str(latency_ms)})
        self.latency_ms = latency_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--account-sid", default=ACCOUNT_SID)
    parser.add_argument("--auth-token", default=AUTH_TOKEN)
    args = parser.parse_args()
    serve(args.port, args.latency_ms, args.account_sid, args.auth_token)


if __name__ == "__main__":
    main()
