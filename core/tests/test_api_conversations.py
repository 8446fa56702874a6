"""The agent API end to end over HTTP: views, reads, assignment, states and features."""

from __future__ import annotations

import pytest
from test_api_world import Api, api  # noqa: F401

pytestmark = pytest.mark.anyio


async def test_views_and_filters(api: Api) -> None:
    first = await api.conversation("+48600000001", "my parcel is late")
    api.clock.advance(minutes=1)
    second = await api.conversation("+48600000002", "invoice please")
    await api.conversation("+48600000003", "sales question", account="sales-sms")
    alice = api.as_("alice")

    active = await alice.get("/api/conversations")
    assert active.status_code == 200
    assert [c["id"] for c in active.json()] == [second, first]  # newest activity first
    summary = active.json()[0]
    assert summary["project"] == "support"
    assert summary["state"] == "new"
    assert summary["customer"] == "phone:+48600000002"

    found = await alice.get("/api/conversations", params={"search": "parcel"})
    assert [c["id"] for c in found.json()] == [first]
    by_participant = await alice.get(
        "/api/conversations", params={"participant": "600000002", "participant_side": "customer"}
    )
    assert [c["id"] for c in by_participant.json()] == [second]

    assert (await alice.post(f"/api/conversations/{first}/take")).status_code == 204
    mine = await alice.get("/api/conversations", params={"view": "mine"})
    assert [c["id"] for c in mine.json()] == [first]
    assert [c["id"] for c in (await alice.get(
        "/api/conversations", params={"view": "unassigned"})).json()] == [second]  # fmt: skip
    assert (await alice.get("/api/conversations", params={"assignee": api.ids["alice"]})).json()[0][
        "id"
    ] == first
    page = await alice.get("/api/conversations", params={"limit": 1, "offset": 1})
    assert [c["id"] for c in page.json()] == [first]

    # dave works on sales only; the supervisor sees every project in the All view.
    dave = await api.as_("dave").get("/api/conversations")
    assert [c["project"] for c in dave.json()] == ["sales"]
    every = await api.as_("boss").get("/api/conversations", params={"view": "all"})
    assert len(every.json()) == 3
    assert (await alice.get("/api/conversations", params={"view": "all"})).status_code == 403

    messages = await alice.get("/api/messages", params={"search": "invoice"})
    assert [m["text"] for m in messages.json()] == ["invoice please"]


async def test_detail_events_and_source(api: Api) -> None:
    cid = await api.conversation("+48600000001", "hello there")
    alice = api.as_("alice")
    detail = await alice.get(f"/api/conversations/{cid}")
    assert detail.status_code == 200
    body = detail.json()
    assert body["summary"]["id"] == cid
    assert [m["text"] for m in body["messages"]] == ["hello there"]
    assert body["all_read"] is False

    mid = body["messages"][0]["id"]
    assert (await alice.post("/api/messages/read", json={"message_ids": [mid]})).status_code == 204
    assert (await alice.get(f"/api/conversations/{cid}")).json()["all_read"] is True
    # Read marks are per agent.
    assert (await api.as_("bob").get(f"/api/conversations/{cid}")).json()["all_read"] is False
    await alice.post("/api/messages/read", json={"message_ids": [mid], "read": False})
    assert (await alice.get(f"/api/conversations/{cid}")).json()["all_read"] is False

    tagged = await alice.post(f"/api/messages/{mid}/tags", json={"add": ["Complaint"]})
    assert tagged.json() == {"tags": ["complaint"]}

    await alice.post(f"/api/conversations/{cid}/take")
    events = await alice.get(f"/api/conversations/{cid}/events")
    assert [e["kind"] for e in events.json()][-2:] == ["message_tagged", "taken"]
    assert events.json()[-1]["actor_id"] == api.ids["alice"]

    # An SMS has no stored source: a clean 404, not a crash.
    source = await alice.get(f"/api/messages/{mid}/source")
    assert source.status_code == 404


async def test_assignment_and_states(api: Api) -> None:
    cid = await api.conversation("+48600000001")
    alice, bob, boss = api.as_("alice"), api.as_("bob"), api.as_("boss")

    assert (await alice.post(f"/api/conversations/{cid}/take")).status_code == 204
    assert (await bob.post(f"/api/conversations/{cid}/take")).status_code == 404  # alice's
    again = await boss.post(f"/api/conversations/{cid}/take")  # boss sees every conversation
    assert again.status_code == 409
    assert "only an unassigned open conversation" in again.json()["error"]

    moved = await alice.post(
        f"/api/conversations/{cid}/reassign", json={"agent_id": api.ids["bob"]}
    )
    assert moved.status_code == 204
    assert (await bob.get(f"/api/conversations/{cid}")).json()["summary"]["assignee_id"] == api.ids[
        "bob"
    ]
    # carol lacks email but has sms: she may get it; dave (sales) may not.
    refused = await bob.post(
        f"/api/conversations/{cid}/reassign", json={"agent_id": api.ids["dave"]}
    )
    assert refused.status_code == 403

    transferred = await bob.post(
        f"/api/conversations/{cid}/transfer", json={"agent_id": api.ids["carol"]}
    )
    assert transferred.status_code == 204
    summary = (await boss.get(f"/api/conversations/{cid}")).json()["summary"]
    assert summary["assignee_id"] == api.ids["carol"]

    assert (await boss.post(f"/api/conversations/{cid}/unassign")).status_code == 204
    assert (await boss.get(f"/api/conversations/{cid}")).json()["summary"]["state"] == "new"
    nobody = await boss.post(f"/api/conversations/{cid}/unassign")
    assert nobody.status_code == 409

    assert (await alice.post(f"/api/conversations/{cid}/close")).status_code == 204
    assert (await alice.post(f"/api/conversations/{cid}/close")).status_code == 409
    closed = await alice.get("/api/conversations", params={"view": "closed"})
    assert [c["id"] for c in closed.json()] == [cid]
    assert (await alice.post(f"/api/conversations/{cid}/reopen")).status_code == 204
    assert (await alice.get(f"/api/conversations/{cid}")).json()["summary"]["state"] == "new"

    assert (await alice.delete(f"/api/conversations/{cid}")).status_code == 204
    assert (await alice.get(f"/api/conversations/{cid}")).status_code == 404


async def test_transfer_to_a_group(api: Api) -> None:
    cid = await api.conversation("+48600000001")
    admin = api.as_("admin")
    made = await admin.post(
        "/api/projects/support/groups",
        json={"name": "Billing", "members": [api.ids["bob"], api.ids["admin"]]},
    )
    assert made.status_code == 201
    group_id = made.json()["id"]
    groups = await admin.get("/api/projects/support/groups")
    assert [(g["name"], g["members"]) for g in groups.json()] == [
        ("Billing", [api.ids["bob"], api.ids["admin"]])
    ]
    await api.as_("alice").post(f"/api/conversations/{cid}/take")
    moved = await api.as_("alice").post(
        f"/api/conversations/{cid}/transfer", json={"group_id": group_id}
    )
    assert moved.status_code == 204
    # Now in Billing's pool: bob (a member) sees it, alice (not a member) does not.
    assert (await api.as_("bob").get(f"/api/conversations/{cid}")).status_code == 200
    assert (await api.as_("alice").get(f"/api/conversations/{cid}")).status_code == 404
    both = await admin.post(
        f"/api/conversations/{cid}/transfer", json={"agent_id": 1, "group_id": group_id}
    )
    assert both.status_code == 422


async def test_star_tags_note_comment_and_contacts(api: Api) -> None:
    quiet = await api.conversation("+48600000001")
    api.clock.advance(minutes=1)
    cid = await api.conversation("+48600000002")
    alice = api.as_("alice")

    assert (await alice.put(f"/api/conversations/{quiet}/star", json={})).status_code == 204
    listed = await alice.get("/api/conversations")
    assert [c["id"] for c in listed.json()] == [quiet, cid]  # starred first
    assert (await alice.get("/api/conversations", params={"starred": True})).json()[0]["starred"]
    await alice.put(f"/api/conversations/{quiet}/star", json={"starred": False})
    assert (await alice.get("/api/conversations", params={"starred": True})).json() == []

    tags = await alice.post(f"/api/conversations/{cid}/tags", json={"add": ["VIP", "refund"]})
    assert tags.json() == {"tags": ["refund", "vip"]}
    tags = await alice.post(f"/api/conversations/{cid}/tags", json={"remove": ["refund"]})
    assert tags.json() == {"tags": ["vip"]}
    by_tag = await alice.get("/api/conversations", params={"tag": "vip"})
    assert [c["id"] for c in by_tag.json()] == [cid]

    assert (
        await alice.put(f"/api/conversations/{cid}/note", json={"note": "call back at 5"})
    ).status_code == 204
    comment = await alice.post(f"/api/conversations/{cid}/comments", json={"text": "checked"})
    assert comment.status_code == 201
    detail = (await alice.get(f"/api/conversations/{cid}")).json()
    assert detail["note"] == "call back at 5"
    assert [(m["direction"], m["text"]) for m in detail["messages"]][-1] == ("note", "checked")

    linked = await alice.post(
        f"/api/conversations/{cid}/contacts",
        json={"source": "crm", "external_id": "C-7", "display_name": "Jan"},
    )
    assert linked.status_code == 204
    detail = (await alice.get(f"/api/conversations/{cid}")).json()
    assert detail["contacts"] == [{"source": "crm", "external_id": "C-7", "display_name": "Jan"}]
    found = await alice.get(
        "/api/conversations", params={"contact_source": "crm", "contact_id": "C-7"}
    )
    assert [c["id"] for c in found.json()] == [cid]
