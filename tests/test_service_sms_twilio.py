"""SMS through the service's HTTP endpoints: Twilio webhooks in, the outbox out.

The real ``sms_twilio`` channel behind the real ASGI app; Twilio itself is mocked at the
transport with respx, and every webhook is signed with Twilio's documented algorithm.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parents[1] / "plugins" / "sms_twilio" / "tests"))
import sms_twilio_samples as tw

from tidings.config import parse_config
from tidings.conversations import Draft, View
from tidings.conversations.models import Role
from tidings.errors import NotAllowed
from tidings.routing import add_agent
from tidings.runtime import Runtime
from tidings.service import create_app
from tidings.store import tables
from tidings_sms_twilio.channel import TwilioSms

pytestmark = pytest.mark.anyio

ACCOUNT = "twilio-main"
TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


class Service:
    def __init__(self, runtime: Runtime, client: httpx.AsyncClient, router: respx.Router) -> None:
        self.runtime, self.client, self.router = runtime, client, router
        self.account = runtime.accounts[ACCOUNT]

    async def post(self, endpoint: str, params: Any, **kw: Any) -> httpx.Response:
        req = tw.signed_request(self.account, endpoint, params, **kw)
        return await self.client.post(
            f"/webhooks/{ACCOUNT}/{endpoint}", content=req.body, headers=dict(req.headers)
        )

    async def count(self, table: sa.Table) -> int:
        async with self.runtime.store.read() as conn:
            return int(
                (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            )

    async def message(self, message_id: int) -> Any:
        async with self.runtime.store.read() as conn:
            return (
                await conn.execute(
                    sa.select(tables.messages).where(tables.messages.c.id == message_id)
                )
            ).one()


@pytest.fixture
async def svc(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    config = parse_config(
        {
            "database_url": database_url,
            "public_url": tw.PUBLIC_URL,
            "server": {"max_body_bytes": 4096},
            "accounts": [
                {
                    "id": ACCOUNT, "channel": "sms_twilio", "project": "support",
                    "account_sid": tw.ACCOUNT_SID, "auth_token": tw.AUTH_TOKEN,
                    "from_number": tw.OUR_NUMBER,
                }
            ],
        },
        {},
        tmp_path / "tidings.toml",
    )  # fmt: skip
    router = respx.Router(assert_all_called=False)
    channel = TwilioSms(transport=tw.mock_transport(router))
    runtime = Runtime.start(config, plugins=tw.load_with(channel))
    await runtime.store.upgrade()
    app = create_app(runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=tw.PUBLIC_URL) as client:
        yield Service(runtime, client, router)
    await runtime.close()


async def test_inbound_sms_is_stored_then_answered_with_twiml(svc: Service) -> None:
    response = await svc.post("inbound", tw.inbound_sms("Gdzie moja paczka?"))
    assert response.status_code == 200
    assert response.content == TWIML
    assert response.headers["content-type"].startswith("text/xml")
    assert await svc.count(tables.messages) == 1
    boss = await add_agent(svc.runtime.store, "boss", role=Role.SUPERVISOR, can_view_all=True,
                           permissions=[("support", "sms")])  # fmt: skip
    actor = await svc.runtime.conversations.actor(boss)
    (conv,) = await svc.runtime.conversations.view(actor, View.ALL)
    assert conv.customer == f"phone:{tw.CUSTOMER}"


async def test_a_duplicate_webhook_is_stored_once(svc: Service) -> None:
    for _ in range(3):
        assert (await svc.post("inbound", tw.inbound_sms(sid=tw.message_sid(5)))).status_code == 200
    assert await svc.count(tables.messages) == 1


@pytest.mark.parametrize("signature", ["", "bm90IHRoZSByaWdodCBvbmU="])
async def test_bad_or_missing_signature_is_403_and_stores_nothing(
    svc: Service, signature: str
) -> None:
    response = await svc.post("inbound", tw.inbound_sms(), signature=signature)
    assert response.status_code == 403
    assert await svc.count(tables.messages) == 0
    assert await svc.count(tables.conversations) == 0


async def test_a_signature_for_another_url_is_refused(svc: Service) -> None:
    response = await svc.post(
        "inbound", tw.inbound_sms(), sign_url="https://evil.example/webhooks/twilio-main/inbound"
    )
    assert response.status_code == 403


async def test_malformed_payload_is_400_and_stores_nothing(svc: Service) -> None:
    params = tw.inbound_sms()
    del params["MessageSid"], params["SmsSid"], params["SmsMessageSid"]
    response = await svc.post("inbound", params)
    assert response.status_code == 400
    assert await svc.count(tables.messages) == 0


async def test_an_oversized_body_is_413(svc: Service) -> None:
    response = await svc.post("inbound", tw.inbound_sms("x" * 5000))
    assert response.status_code == 413
    assert await svc.count(tables.messages) == 0


async def test_unknown_account_or_endpoint_is_404(svc: Service) -> None:
    assert (await svc.client.post("/webhooks/nope/inbound", content=b"")).status_code == 404
    assert (await svc.client.post(f"/webhooks/{ACCOUNT}/other", content=b"")).status_code == 404


async def test_mms_media_is_downloaded_and_stored(svc: Service) -> None:
    photo = b"\x89PNG\r\n\x1a\n" + b"p" * 100
    url = tw.media_url(1)
    tw.route_media(svc.router, url, photo, "image/png")
    response = await svc.post("inbound", tw.inbound_mms([(url, "image/png")], "Zdjęcie szkody"))
    assert response.status_code == 200
    async with svc.runtime.store.read() as conn:
        (att,) = (await conn.execute(sa.select(tables.attachments))).all()
        blob = (await conn.execute(sa.select(tables.blobs.c.data))).scalar_one()
    assert (att.content_type, att.size) == ("image/png", len(photo))
    assert bytes(blob) == photo


async def outbound_sent(svc: Service, sid: str) -> int:
    """An agent's reply, sent through the outbox to (mocked) Twilio as ``sid``."""
    await svc.post("inbound", tw.inbound_sms())
    agent = await add_agent(svc.runtime.store, "ala", permissions=[("support", "sms")])
    actor = await svc.runtime.conversations.actor(agent)
    (conv,) = await svc.runtime.conversations.view(actor)
    sent = await svc.runtime.conversations.send(actor, Draft(text="Wysłana wczoraj"),
                                                conversation_id=conv.id)  # fmt: skip
    route = tw.route_send(svc.router, json=tw.message_resource(sid))
    outcome = await svc.runtime.outbox.run_once()
    assert outcome.sent == 1
    form = dict(httpx.QueryParams(route.calls.last.request.content.decode()))
    assert form["StatusCallback"] == f"{tw.PUBLIC_URL}/webhooks/{ACCOUNT}/status"
    return sent.message_id


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("accepted", "queued"), ("scheduled", "queued"), ("queued", "queued"),
        ("sending", "queued"), ("sent", "sent"), ("delivered", "delivered"),
        ("undelivered", "undelivered"), ("failed", "failed"), ("read", "read"),
        ("canceled", "failed"), ("partially_delivered", "queued"),
    ],
)  # fmt: skip
async def test_every_status_value_through_the_endpoint(
    svc: Service, word: str, status: str
) -> None:
    sid = tw.message_sid(42)
    mid = await outbound_sent(svc, sid)
    response = await svc.post("status", tw.status_callback(word, sid=sid, error_code=None))
    assert response.status_code == 200
    msg = await svc.message(mid)
    # "queued" (and unknown words) cannot move a queued message anywhere.
    assert msg.status == status
    if status != "queued":
        assert msg.status_raw == word


async def test_status_error_code_and_meaning_are_kept(svc: Service) -> None:
    sid = tw.message_sid(42)
    mid = await outbound_sent(svc, sid)
    await svc.post("status", tw.status_callback("undelivered", sid=sid, error_code="30003"))
    msg = await svc.message(mid)
    assert (msg.status, msg.error_code) == ("undelivered", "30003")
    assert msg.error_message


async def test_an_out_of_order_status_pair_never_moves_backwards(svc: Service) -> None:
    sid = tw.message_sid(42)
    mid = await outbound_sent(svc, sid)
    await svc.post("status", tw.status_callback("delivered", sid=sid))
    await svc.post("status", tw.status_callback("sent", sid=sid))
    assert (await svc.message(mid)).status == "delivered"


async def test_a_status_before_the_send_returned_is_applied_later(svc: Service) -> None:
    sid = tw.message_sid(43)
    assert (await svc.post("status", tw.status_callback("delivered", sid=sid))).status_code == 200
    mid = await outbound_sent(svc, sid)
    assert (await svc.message(mid)).status == "delivered"


async def test_stop_is_recorded_and_sends_are_refused_before_twilio(svc: Service) -> None:
    await svc.post("inbound", tw.inbound_sms("STOP", sid=tw.message_sid(9)))
    agent = await add_agent(svc.runtime.store, "ala", permissions=[("support", "sms")])
    actor = await svc.runtime.conversations.actor(agent)
    (conv,) = await svc.runtime.conversations.view(actor)
    route = tw.route_send(svc.router)
    with pytest.raises(NotAllowed, match="opted out"):
        await svc.runtime.conversations.send(actor, Draft(text="Hej"), conversation_id=conv.id)
    assert not route.called
