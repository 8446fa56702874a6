"""``tidings serve`` killed or stopped in the middle of a stream of Twilio webhooks.

The promise under test is the service's: a webhook is answered 2xx only after its message
is committed, and a redelivery is deduplicated by provider id. So whatever moment the
process dies at, every webhook that got a 2xx is in the database exactly once, and the
ones Twilio must redeliver (no answer, or an answer it did not see) are stored once when
they come again — never twice.

The server is the real command in a subprocess, as an operator runs it, on SQLite and on
the real PostgreSQL test server. Webhooks are signed with Twilio's documented algorithm
(``sms_twilio_samples``). For the graceful variant the outbox sends through a Twilio REST
stand-in on 127.0.0.1 (the account's ``base_url``) that answers ``Messages.json`` with the
documented Message resource, holding each send until the test lets it go, so the
shutdown provably lands while messages are with the provider.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio
import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).parents[1] / "plugins" / "sms_twilio" / "tests"))
import sms_twilio_samples as tw

from tidings import Account
from tidings.conversations import Draft
from tidings.routing import add_agent
from tidings.runtime import Runtime
from tidings.store import Store, tables
from tidings_sms_twilio import TwilioSettings

pytestmark = pytest.mark.anyio

TIDINGS = str(Path(sys.executable).parent / "tidings")
ACCOUNT = "twilio-main"
STREAM = 240
"""Webhooks in one stream."""
CONCURRENCY = 12
"""Connections the 'provider' keeps open at once (Twilio sends in parallel too)."""
STOP_AFTER = 60
"""The signal goes out once this many webhooks have been answered 2xx."""
CUSTOMERS = 15
APP_ERROR = "Exception in ASGI application"
"""What uvicorn logs when a request crashed instead of being answered."""


async def eventually(check: Callable[[], bool | Awaitable[bool]], *, within: float) -> None:
    """Poll ``check``: it reads another process's state (its log, the database, a server
    flag) that no event in this process could signal."""
    with anyio.fail_after(within):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- the server process ------------------------------------------------------------------


class Server:
    """``tidings serve`` on a fixed port, restartable; its output goes to one log per run."""

    def __init__(self, root: Path, database_url: str, twilio_api: str) -> None:
        self.root = root
        self.port = _free_port()
        self.public_url = f"http://127.0.0.1:{self.port}"
        self.config = root / "tidings.toml"
        self.config.write_text(
            textwrap.dedent(f"""\
                database_url = "{database_url}"
                public_url = "{self.public_url}"

                [server]
                host = "127.0.0.1"
                port = {self.port}

                [[accounts]]
                id = "{ACCOUNT}"
                channel = "sms_twilio"
                project = "support"
                account_sid = "{tw.ACCOUNT_SID}"
                auth_token = "{tw.AUTH_TOKEN}"
                from_number = "{tw.OUR_NUMBER}"
                base_url = "{twilio_api}"
                read_timeout = 30
            """),
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.log: Path = root / "serve-0.log"

    def start(self) -> None:
        self.runs += 1
        self.log = self.root / f"serve-{self.runs}.log"
        env = {**os.environ, "TIDINGS_CONFIG": str(self.config), "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [TIDINGS, "serve", "--port", str(self.port)],
                env=env, cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    async def ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=self.public_url, timeout=2) as client:
            while True:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"tidings serve did not start:\n{self.output()}")
                await anyio.sleep(0.1)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, within: float = 60) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + within
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"tidings serve did not stop:\n{self.output()}")
            await anyio.sleep(0.05)
        return code

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


# --- a stand-in for Twilio's Messages.json ---------------------------------------------------


@dataclass
class FakeTwilio:
    """Twilio's Create-a-Message endpoint: checks Basic auth, holds each send until
    ``release`` is set, answers 201 with the documented Message resource."""

    port: int = field(default_factory=_free_port)
    release: anyio.Event = field(default_factory=anyio.Event)
    received: list[dict[str, str]] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def create_message(self, request: Request) -> JSONResponse:
        expected = base64.b64encode(f"{tw.ACCOUNT_SID}:{tw.AUTH_TOKEN}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse(tw.rest_error(20003, "Authenticate", 401), status_code=401)
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.received.append(form)
        await self.release.wait()
        sid = tw.message_sid(1000 + len(self.answered))
        self.answered.append(sid)
        resource = tw.message_resource(sid, body=form.get("Body", ""))
        resource["to"] = form["To"]
        return JSONResponse(resource, status_code=201)

    def app(self) -> Starlette:
        path = tw.messages_path()
        return Starlette(routes=[Route(path, self.create_message, methods=["POST"])])


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio()
    config = uvicorn.Config(
        fake.app(), host="127.0.0.1", port=fake.port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await eventually(lambda: server.started, within=30)
        yield fake
        fake.release.set()
        server.should_exit = True


@pytest.fixture
def server(tmp_path: Path, database_url: str, twilio: FakeTwilio) -> Iterator[Server]:
    srv = Server(tmp_path, database_url, twilio.url)
    try:
        yield srv
    finally:
        srv.stop()


# --- the provider's side: signed webhooks and who got what answer --------------------------


@dataclass(frozen=True)
class Webhook:
    sid: str
    body: bytes
    headers: dict[str, str]


def webhooks(server: Server, count: int, first: int = 1) -> list[Webhook]:
    """Inbound SMS webhooks exactly as Twilio signs them for this server's public URL."""
    account = Account[TwilioSettings](
        id=ACCOUNT, channel="sms_twilio", project="support",
        settings=tw.settings(), public_url=server.public_url,
    )  # fmt: skip
    made = []
    for n in range(first, first + count):
        sid = tw.message_sid(n)
        customer = f"+4860010{n % CUSTOMERS:04d}"
        params = tw.inbound_sms(f"Wiadomość {n}", sid=sid, sender=customer)
        req = tw.signed_request(account, "inbound", params)
        made.append(Webhook(sid, req.body, dict(req.headers)))
    return made


@dataclass
class Deliveries:
    """Every answer per MessageSid: a status code, or None when no answer arrived."""

    answers: dict[str, list[int | None]] = field(default_factory=dict)

    def record(self, sid: str, status: int | None) -> None:
        self.answers.setdefault(sid, []).append(status)

    @property
    def acked(self) -> set[str]:
        return {s for s, got in self.answers.items() if any(_ok(c) for c in got)}

    @property
    def unacked(self) -> set[str]:
        return set(self.answers) - self.acked

    def summary(self) -> str:
        kinds = Counter(c for got in self.answers.values() for c in got)
        return ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items(), key=str))


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


async def deliver(
    server: Server,
    batch: list[Webhook],
    deliveries: Deliveries,
    *,
    stop_after: int | None = None,
    signum: int = signal.SIGKILL,
) -> None:
    """Post ``batch`` over ``CONCURRENCY`` connections; send ``signum`` to the server as
    soon as ``stop_after`` of them were answered 2xx, and keep going like a provider that
    does not know yet (those requests fail and are due for redelivery)."""
    queue = iter(batch)
    signalled = False
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.public_url, timeout=30, limits=limits) as client:

        async def sender() -> None:
            nonlocal signalled
            for hook in queue:
                try:
                    response = await client.post(
                        f"/webhooks/{ACCOUNT}/inbound", content=hook.body, headers=hook.headers
                    )
                    status: int | None = response.status_code
                except httpx.TransportError:
                    status = None
                deliveries.record(hook.sid, status)
                if stop_after is not None and not signalled and len(deliveries.acked) >= stop_after:
                    signalled = True
                    server.signal(signum)

        async with anyio.create_task_group() as tg:
            for _ in range(CONCURRENCY):
                tg.start_soon(sender)


async def stored_sids(store: Store) -> Counter[str]:
    m = tables.messages
    async with store.read() as conn:
        rows = await conn.execute(
            sa.select(m.c.provider_id).where(m.c.account_id == ACCOUNT, m.c.direction == "in")
        )
        return Counter(str(r.provider_id) for r in rows)


async def assert_whole(store: Store) -> None:
    """Nothing half-stored: every message sits in a conversation whose counters agree
    with the messages it holds, and each customer has one conversation."""
    m, c = tables.messages, tables.conversations
    async with store.read() as conn:
        orphans = await conn.scalar(
            sa.select(sa.func.count()).select_from(m).where(m.c.conversation_id.is_(None))
        )
        counted = await conn.execute(
            sa.select(m.c.conversation_id, sa.func.count()).group_by(m.c.conversation_id)
        )
        per_conv: dict[int, int] = {row[0]: row[1] for row in counted}
        convs = (await conn.execute(sa.select(c.c.id, c.c.customer_key, c.c.message_count))).all()
    assert orphans == 0
    assert {row.id: row.message_count for row in convs} == per_conv
    customers = Counter(row.customer_key for row in convs)
    assert all(n == 1 for n in customers.values()), customers


async def redeliver(server: Server, deliveries: Deliveries, hooks: list[Webhook]) -> Deliveries:
    """What Twilio does next: every webhook without a 2xx again, plus duplicates of a third
    of the acknowledged ones (a provider may redeliver those too), shuffled."""
    by_sid = {h.sid: h for h in hooks}
    again = [by_sid[s] for s in sorted(deliveries.unacked)]
    again += [by_sid[s] for s in sorted(deliveries.acked)[::3]]
    again.sort(key=lambda h: hashlib.sha256(h.sid.encode()).digest())  # a fixed shuffle
    second = Deliveries()
    await deliver(server, again, second)
    return second


async def assert_each_stored_once(store: Store, hooks: list[Webhook]) -> None:
    stored = await stored_sids(store)
    assert set(stored) == {h.sid for h in hooks}
    assert set(stored.values()) == {1}, [s for s, n in stored.items() if n > 1]
    await assert_whole(store)


# --- the tests -----------------------------------------------------------------------------


async def test_sigkill_mid_stream_loses_no_acknowledged_webhook_and_doubles_none(
    server: Server, store: Store
) -> None:
    hooks = webhooks(server, STREAM)
    server.start()
    await server.ready()

    first = Deliveries()
    await deliver(server, hooks, first, stop_after=STOP_AFTER, signum=signal.SIGKILL)
    assert await server.wait() == -signal.SIGKILL
    assert len(first.acked) >= STOP_AFTER
    assert first.unacked, f"the kill came after the stream ended ({first.summary()})"

    # Before any redelivery: what was acknowledged survived the kill, once each.
    stored = await stored_sids(store)
    assert first.acked <= set(stored)
    assert all(stored[s] == 1 for s in first.acked)
    assert set(stored) <= set(first.answers)
    await assert_whole(store)

    server.start()
    await server.ready()
    second = await redeliver(server, first, hooks)
    assert second.unacked == set(), second.summary()
    await assert_each_stored_once(store, hooks)
    assert APP_ERROR not in server.output()


async def test_sigterm_mid_stream_answers_in_flight_requests_and_stops_the_worker(
    server: Server, store: Store, twilio: FakeTwilio
) -> None:
    hooks = webhooks(server, STREAM)
    server.start()
    await server.ready()

    # Conversations to reply in: one webhook per customer, before the stream.
    opening = Deliveries()
    await deliver(server, hooks[:CUSTOMERS], opening)
    assert opening.unacked == set()

    # Replies in flight with the provider (held there), then more replies queued behind.
    runtime = Runtime.start(config_path=server.config)
    try:
        agent = await add_agent(runtime.store, "ala", permissions=[("support", "sms")])
        actor = await runtime.conversations.actor(agent)
        conversations = [c.id for c in await runtime.conversations.view(actor)]
        assert len(conversations) == CUSTOMERS
        texts: dict[int, str] = {}

        async def reply(conversation_id: int, text: str) -> int:
            draft = Draft(text=text)
            sent = await runtime.conversations.send(actor, draft, conversation_id=conversation_id)
            texts[sent.message_id] = text
            return sent.message_id

        in_flight = [await reply(c, f"Odp {i}") for i, c in enumerate(conversations[:5])]
        await eventually(lambda: len(twilio.received) == len(in_flight), within=30)
        # Queued while those are with the provider: the worker may claim these before the
        # stop or not; either way it must finish whatever it claimed.
        meanwhile = [await reply(c, f"Potem {i}") for i, c in enumerate(conversations[5:8])]
        after_stop: list[int] = []

        async def release_after_lifespan_shutdown_began() -> None:
            # uvicorn drains HTTP first, then the lifespan shutdown sets the worker's stop.
            # Replies queued from then on must not be claimed; the held sends come back
            # only now, so the worker finishes them during its shutdown.
            await eventually(lambda: "Waiting for application shutdown" in server.output(),
                             within=30)  # fmt: skip
            await anyio.sleep(0.3)
            after_stop.extend(
                [await reply(c, f"Po {i}") for i, c in enumerate(conversations[8:11])]
            )
            twilio.release.set()

        stream = Deliveries()
        async with anyio.create_task_group() as tg:
            tg.start_soon(release_after_lifespan_shutdown_began)
            await deliver(
                server, hooks[CUSTOMERS:], stream, stop_after=STOP_AFTER, signum=signal.SIGTERM
            )
        # uvicorn re-raises the SIGTERM it handled once the graceful shutdown is complete.
        assert await server.wait() in (0, -signal.SIGTERM)
        log = server.output()
        assert "Application shutdown complete" in log
        assert APP_ERROR not in log
        assert stream.unacked, f"the stop came after the stream ended ({stream.summary()})"

        # Every request in flight at SIGTERM finished: what got a 2xx is stored, what is
        # stored got a 2xx (nothing committed behind the provider's back), all whole.
        stored = await stored_sids(store)
        assert set(stored) == opening.acked | stream.acked
        assert set(stored.values()) == {1}
        await assert_whole(store)

        # The worker finished every send it had started and recorded it; it left nothing
        # half-done ('sending') and claimed nothing once told to stop.
        sent_texts = Counter(form["Body"] for form in twilio.received)
        assert set(sent_texts.values()) == {1}
        assert {texts[m] for m in in_flight} <= set(sent_texts)
        assert not {texts[m] for m in after_stop} & set(sent_texts)
        sent_ids = [m for m, text in texts.items() if text in sent_texts]
        assert sorted(twilio.answered) == sorted(await provider_ids(runtime.store, sent_ids))
        unsent = set(texts) - set(sent_ids)
        assert await outbox_rows(runtime.store) == {m: ("pending", 0) for m in unsent}

        # Restarted, the rest goes out once, and Twilio's redeliveries are stored once.
        server.start()
        await server.ready()
        second = await redeliver(server, stream, hooks[CUSTOMERS:])
        assert second.unacked == set(), second.summary()
        await assert_each_stored_once(store, hooks)
        await eventually(lambda: outbox_empty(runtime.store), within=30)
        assert Counter(form["Body"] for form in twilio.received) == Counter(texts.values())
        all_ids = in_flight + meanwhile + after_stop
        assert sorted(twilio.answered) == sorted(await provider_ids(runtime.store, all_ids))
    finally:
        await runtime.close()


async def provider_ids(store: Store, message_ids: list[int]) -> list[str]:
    m = tables.messages
    async with store.read() as conn:
        rows = await conn.execute(
            sa.select(m.c.provider_id).where(m.c.id.in_(message_ids), m.c.provider_id.is_not(None))
        )
        return [str(r.provider_id) for r in rows]


async def outbox_empty(store: Store) -> bool:
    return not await outbox_rows(store)


async def outbox_rows(store: Store) -> dict[int, Any]:
    o = tables.outbox
    async with store.read() as conn:
        rows = await conn.execute(sa.select(o.c.message_id, o.c.state, o.c.claims))
        return {r.message_id: (r.state, r.claims) for r in rows}
