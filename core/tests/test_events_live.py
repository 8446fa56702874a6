"""Live updates over real HTTP: uvicorn serves the app, agents hold ``/api/events`` open.

Server-sent events need a real server (an in-memory ASGI transport answers only once the
response is complete), so each test starts uvicorn on a free port. With PostgreSQL, two
servers on one database see each other's changes through LISTEN/NOTIFY.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from anyio.abc import TaskGroup
from contract_channels import sign
from test_api_world import HOOK_SECRET, Api, build_api, config, runtime_for

from tidings.clock import ManualClock
from tidings.events import Change, ChangeKind, broadcaster
from tidings.service import create_app
from tidings.store import Store

pytestmark = pytest.mark.anyio
WAIT = 10.0


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Run ``app`` (with its lifespan) on 127.0.0.1 and a free port; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(WAIT):
            while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
                await anyio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


class Stream:
    """An agent's open ``/api/events`` connection, collecting events as they come."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.connected = anyio.Event()
        self._arrived = anyio.Event()

    async def run(self, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx.AsyncClient(timeout=None) as client,  # noqa: S113 (a stream stays open)
            client.stream("GET", f"{url}/api/events", headers=headers) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            kind = ""
            async for line in response.aiter_lines():
                if line == ": connected":
                    self.connected.set()
                elif line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    self.events.append((kind, json.loads(line.removeprefix("data: "))))
                    self._arrived.set()
                    self._arrived = anyio.Event()

    async def next(self, n: int = 1) -> list[tuple[str, dict[str, Any]]]:
        """Wait until ``n`` more events than already taken have arrived; return them."""
        with anyio.fail_after(WAIT):
            while len(self.events) < n:
                await self._arrived.wait()
        taken, self.events = self.events[:n], self.events[n:]
        return taken


async def open_stream(tg: TaskGroup, url: str, token: str) -> Stream:
    stream = Stream()
    tg.start_soon(stream.run, url, token)
    with anyio.fail_after(WAIT):
        await stream.connected.wait()
    return stream


async def test_each_agent_gets_only_the_changes_they_may_see(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    api = await build_api(store, database_url, tmp_path)
    async with serving(api.app) as url, anyio.create_task_group() as tg:
        alice = await open_stream(tg, url, api.tokens["alice"])
        dave = await open_stream(tg, url, api.tokens["dave"])
        async with httpx.AsyncClient(base_url=url) as http:
            # A customer's SMS arrives through the provider's signed webhook.
            body, headers = api.webhook([{"id": "w1", "from": "+48600000001", "text": "hi"}])
            hook = await http.post("/webhooks/hook-sms/in", content=body, headers=headers)
            assert hook.status_code == 200
            ((kind, change),) = await alice.next()
            assert kind == "message"
            cid = change["conversation_id"]
            assert change["data"] == {"created": True, "reopened": False}
            assert set(change) == {"kind", "conversation_id", "message_id", "data"}

            auth = {"Authorization": f"Bearer {api.tokens['alice']}"}
            assert (
                await http.post(f"/api/conversations/{cid}/take", headers=auth)
            ).status_code == 204
            (kind, change), (kind2, change2) = await alice.next(2)
            assert (kind, change["data"]["assignee_id"]) == ("assignment", api.ids["alice"])
            assert (kind2, change2["data"]) == ("state", {"state": "assigned"})

            reply = await http.post(
                f"/api/conversations/{cid}/messages", json={"text": "hello"}, headers=auth
            )
            assert reply.status_code == 202
            ((kind, change),) = await alice.next()
            assert (kind, change["message_id"]) == ("message", reply.json()["message_id"])
            assert (await api.runtime.outbox.run_once()).sent == 1  # still "queued"
            detail = (await http.get(f"/api/conversations/{cid}", headers=auth)).json()
            mid = reply.json()["message_id"]
            (provider_id,) = [m["provider_id"] for m in detail["messages"] if m["id"] == mid]
            report = json.dumps({"statuses": [{"id": provider_id, "status": "delivered"}]})
            signed = {"x-signature": sign(HOOK_SECRET, report.encode())}
            status = await http.post("/webhooks/hook-sms/status", content=report, headers=signed)
            assert status.status_code == 200
            ((kind, change),) = await alice.next()
            assert (kind, change["data"]) == ("delivery_status", {"status": "delivered"})
            assert change["message_id"] == reply.json()["message_id"]

            # dave (sales) heard nothing of all that; his own change is the first he gets.
            dave_auth = {"Authorization": f"Bearer {api.tokens['dave']}"}
            sale = await http.post(
                "/api/messages",
                json={"account_id": "sales-sms", "to": ["+48600000009"], "text": "offer"},
                headers=dave_auth,
            )
            assert sale.status_code == 202
            kinds = [(k, c["conversation_id"]) for k, c in await dave.next(3)]
            sales_cid = sale.json()["conversation_id"]
            assert kinds == [("message", sales_cid), ("assignment", sales_cid),
                             ("state", sales_cid)]  # fmt: skip
            assert alice.events == []

            # Reassigned away: alice still hears it (her "mine" view must drop it).
            boss = {"Authorization": f"Bearer {api.tokens['boss']}"}
            moved = await http.post(
                f"/api/conversations/{cid}/reassign", json={"agent_id": api.ids["bob"]},
                headers=boss,
            )  # fmt: skip
            assert moved.status_code == 204
            ((kind, change),) = await alice.next()
            assert kind == "assignment"
            assert change["data"]["previous_assignee_id"] == api.ids["alice"]
            assert dave.events == []
        tg.cancel_scope.cancel()


async def test_a_revoked_token_ends_the_stream(
    store: Store, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tidings.service.api.live.KEEPALIVE", 0.2)
    api = await build_api(store, database_url, tmp_path)
    async with serving(api.app) as url, anyio.create_task_group() as tg:
        stream = Stream()
        ended = anyio.Event()

        async def run() -> None:
            await stream.run(url, api.tokens["carol"])
            ended.set()

        tg.start_soon(run)
        with anyio.fail_after(WAIT):
            await stream.connected.wait()
        async with httpx.AsyncClient(base_url=url) as http:
            auth = {"Authorization": f"Bearer {api.tokens['carol']}"}
            (token,) = (await http.get("/api/tokens", headers=auth)).json()
            assert (
                await http.delete(f"/api/tokens/{token['id']}", headers=auth)
            ).status_code == 204
        with anyio.fail_after(WAIT):
            await ended.wait()


async def test_a_slow_subscriber_is_cut_off_not_waited_for(store: Store) -> None:
    hub = broadcaster(store)
    async with hub.subscribe() as slow, hub.subscribe() as fast:
        change = Change(kind=ChangeKind.UPDATED, conversation_id=1)
        for _ in range(300):
            hub.deliver([change])
            assert await fast.receive() == change
        assert hub.subscribers == 1
        received = [item async for item in slow]  # its buffer, then the end
        assert len(received) == 256


@pytest.mark.postgres
async def test_two_servers_see_each_others_changes(postgres_url: str, tmp_path: Path) -> None:
    """Two servers on one PostgreSQL database: a change made through either reaches the
    agents connected to the other (LISTEN/NOTIFY)."""
    first_store = Store.open(postgres_url)
    await first_store.upgrade()
    first: Api = await build_api(first_store, postgres_url, tmp_path)
    second_store = Store.open(postgres_url)
    second_runtime, _ = runtime_for(second_store, config(postgres_url, tmp_path), first.clock)
    second_app = create_app(second_runtime)
    async with (
        serving(first.app) as url_a,
        serving(second_app) as url_b,
        anyio.create_task_group() as tg,
    ):
        on_b = await open_stream(tg, url_b, first.tokens["alice"])
        on_a = await open_stream(tg, url_a, first.tokens["alice"])
        async with httpx.AsyncClient() as http:
            body, headers = first.webhook([{"id": "x1", "from": "+48600000001", "text": "hi"}])
            hook = await http.post(f"{url_a}/webhooks/hook-sms/in", content=body, headers=headers)
            assert hook.status_code == 200
            ((kind, change),) = await on_b.next()
            assert kind == "message"
            ((kind_a, change_a),) = await on_a.next()  # once on A too, not twice
            assert (kind_a, change_a) == (kind, change)
            cid = change["conversation_id"]

            auth = {"Authorization": f"Bearer {first.tokens['alice']}"}
            taken = await http.post(f"{url_b}/api/conversations/{cid}/take", headers=auth)
            assert taken.status_code == 204
            for stream in (on_a, on_b):
                kinds = [k for k, _ in await stream.next(2)]
                assert kinds == ["assignment", "state"]
            await anyio.sleep(0.3)
            assert on_a.events == on_b.events == []
        tg.cancel_scope.cancel()
    assert isinstance(first.clock, ManualClock)
