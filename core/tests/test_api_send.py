"""Composing, replying and forwarding over HTTP: the assignment decision, delays, cancel."""

from __future__ import annotations

import base64

import pytest
from test_api_world import Api, api  # noqa: F401

from tidings import Attachment

pytestmark = pytest.mark.anyio


async def test_reply_assigns_to_the_sender_and_queues(api: Api) -> None:
    cid = await api.conversation("+48600000001", "where is my parcel?")
    alice = api.as_("alice")
    sent = await alice.post(f"/api/conversations/{cid}/messages", json={"text": "on its way"})
    assert sent.status_code == 202
    body = sent.json()
    assert body["status"] == "queued"
    assert body["conversation_id"] == cid
    assert body["created_conversation"] is False
    detail = (await alice.get(f"/api/conversations/{cid}")).json()
    assert detail["summary"]["assignee_id"] == api.ids["alice"]
    assert [(m["direction"], m["status"]) for m in detail["messages"]][-1] == ("out", "queued")

    outcome = await api.runtime.outbox.run_once()
    assert outcome.sent == 1
    after = (await alice.get(f"/api/conversations/{cid}")).json()["messages"][-1]
    assert after["status"] == "sent"
    assert after["provider_id"]


async def test_the_decision_when_another_agent_has_the_customer(api: Api) -> None:
    cid = await api.conversation("+48600000001")
    alice, boss = api.as_("alice"), api.as_("boss")
    await alice.post(f"/api/conversations/{cid}/take")

    ask = await boss.post(f"/api/conversations/{cid}/messages", json={"text": "hi"})
    assert ask.status_code == 409
    assert ask.json()["choices"] == ["cancel", "assign_and_send", "send_only"]
    assert ask.json()["assignee_id"] == api.ids["alice"]
    assert len((await boss.get(f"/api/conversations/{cid}")).json()["messages"]) == 1

    cancelled = await boss.post(
        f"/api/conversations/{cid}/messages", json={"text": "hi", "decision": "cancel"}
    )
    assert cancelled.status_code == 200
    assert cancelled.json() == {"status": "cancelled"}

    only = await boss.post(
        f"/api/conversations/{cid}/messages", json={"text": "hi", "decision": "send_only"}
    )
    assert only.status_code == 202
    summary = (await boss.get(f"/api/conversations/{cid}")).json()["summary"]
    assert summary["assignee_id"] == api.ids["alice"]

    mine = await boss.post(
        f"/api/conversations/{cid}/messages",
        json={"text": "I take it", "decision": "assign_and_send", "close": True},
    )
    assert mine.status_code == 202
    summary = (await boss.get(f"/api/conversations/{cid}")).json()["summary"]
    assert (summary["assignee_id"], summary["state"]) == (api.ids["boss"], "closed")

    wrong = await boss.post(
        f"/api/conversations/{cid}/messages", json={"text": "x", "decision": "maybe"}
    )
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["loc"] == ["body", "decision"]


async def test_compose_a_new_message_and_cross_project_refusal(api: Api) -> None:
    alice = api.as_("alice")
    new = await alice.post(
        "/api/messages",
        json={"account_id": "mail", "to": ["kim@example.org"], "subject": "Your order",
              "text": "Hello Kim"},
    )  # fmt: skip
    assert new.status_code == 202
    body = new.json()
    assert body["created_conversation"] is True
    detail = (await alice.get(f"/api/conversations/{body['conversation_id']}")).json()
    assert detail["summary"]["subject"] == "Your order"
    assert detail["messages"][0]["recipients"]["to"] == ["email:kim@example.org"]

    # The channel's rules are checked before anything is written: this one sends no files.
    with_file = await alice.post(
        "/api/messages",
        json={"account_id": "mail", "to": ["kim@example.org"], "text": "see attached",
              "attachments": [{"filename": "order.txt", "content_type": "text/plain",
                               "data": base64.b64encode(b"order 42").decode()}]},
    )  # fmt: skip
    assert with_file.status_code == 422
    assert with_file.json()["error"] == "this channel cannot send attachments"
    not_base64 = await alice.post(
        "/api/messages",
        json={"account_id": "mail", "to": ["kim@example.org"], "text": "x",
              "attachments": [{"filename": "a.txt", "data": "***"}]},
    )  # fmt: skip
    assert not_base64.status_code == 422
    assert not_base64.json()["detail"][0]["loc"] == ["body", "attachments", 0, "data"]

    # alice has no permission in the sales project: sending from its account is refused.
    other = await alice.post(
        "/api/messages", json={"account_id": "sales-sms", "to": ["+48600000009"], "text": "hi"}
    )
    assert other.status_code == 403
    unknown = await alice.post(
        "/api/messages", json={"account_id": "nope", "to": ["+48600000009"], "text": "hi"}
    )
    assert unknown.status_code == 404
    empty = await alice.post("/api/messages", json={"account_id": "sms-pl", "to": ["+4860"]})
    assert empty.status_code == 422
    assert "needs text" in empty.json()["error"] + str(empty.json()["detail"])


async def test_attachments_download(api: Api) -> None:
    photo = Attachment(filename="meter.jpg", content_type="image/jpeg", data=b"\xff\xd8jpeg")
    result = await api.sms("+48600000001", "photo", attachments=(photo,))
    (mid,) = result.stored
    alice = api.as_("alice")
    (cid,) = result.conversations
    (message,) = (await alice.get(f"/api/conversations/{cid}")).json()["messages"]
    (info,) = message["attachments"]
    got = await alice.get(f"/api/messages/{mid}/attachments/{info['id']}")
    assert got.status_code == 200
    assert got.content == b"\xff\xd8jpeg"
    assert got.headers["content-type"] == "image/jpeg"
    assert 'filename="meter.jpg"' in got.headers["content-disposition"]
    hidden = await api.as_("dave").get(f"/api/messages/{mid}/attachments/{info['id']}")
    assert hidden.status_code == 404


async def test_delayed_send_can_be_cancelled_until_taken(api: Api) -> None:
    cid = await api.conversation("+48600000001")
    alice = api.as_("alice")
    later = await alice.post(
        f"/api/conversations/{cid}/messages", json={"text": "soon", "delay_seconds": 60}
    )
    assert later.status_code == 202
    mid = later.json()["message_id"]
    assert (await api.runtime.outbox.run_once()).sent == 0  # not due yet
    assert (await api.as_("bob").post(f"/api/messages/{mid}/cancel")).status_code == 404
    assert (await alice.post(f"/api/messages/{mid}/cancel")).status_code == 204
    texts = [m["text"] for m in (await alice.get(f"/api/conversations/{cid}")).json()["messages"]]
    assert texts == ["hello"]

    now = await alice.post(f"/api/conversations/{cid}/messages", json={"text": "now"})
    await api.runtime.outbox.run_once()
    too_late = await alice.post(f"/api/messages/{now.json()['message_id']}/cancel")
    assert too_late.status_code == 409
    assert "too late" in too_late.json()["error"]


async def test_forward_a_message(api: Api) -> None:
    cid = await api.conversation("+48600000001", "the meter reads 4711")
    alice = api.as_("alice")
    mid = (await alice.get(f"/api/conversations/{cid}")).json()["messages"][0]["id"]
    fwd = await alice.post(
        f"/api/messages/{mid}/forward", json={"to": ["+48600000055"], "text": "FYI"}
    )
    assert fwd.status_code == 202
    new_cid = fwd.json()["conversation_id"]
    assert new_cid != cid
    assert fwd.json()["created_conversation"] is True
    out = (await alice.get(f"/api/conversations/{new_cid}")).json()["messages"][0]
    assert out["text"].startswith("FYI\n\n---------- Forwarded message ----------")
    assert out["text"].endswith("the meter reads 4711")
    assert out["recipients"]["to"] == ["phone:+48600000055"]
    assert (
        await api.as_("dave").post(f"/api/messages/{mid}/forward", json={"to": ["+48600000055"]})
    ).status_code == 404
