"""Routing over HTTP: priorities and SLA, pinning, the blacklist, rules, groups, presence."""

from __future__ import annotations

import pytest
from test_api_world import Api, api  # noqa: F401

pytestmark = pytest.mark.anyio


async def test_priorities_and_sla(api: Api) -> None:
    admin, alice = api.as_("admin"), api.as_("alice")
    urgent = {"name": "urgent", "reaction": "PT15M", "execution": "PT4H", "alarm": "PT3H"}
    assert (await admin.put("/api/projects/support/priorities", json=urgent)).status_code == 204
    normal = {"name": "normal", "reaction": "PT2H"}
    made = await admin.put("/api/projects/support/priorities", json=normal, params={"default": 1})
    assert made.status_code == 204
    levels = (await alice.get("/api/projects/support/priorities")).json()
    assert [(x["name"], x["reaction"]) for x in levels] == [("normal", "PT2H"), ("urgent", "PT15M")]
    bad = await admin.put(
        "/api/projects/support/priorities", json={"name": "x", "alarm": "PT5H", "execution": "PT1H"}
    )
    assert bad.status_code == 422
    assert (await alice.put("/api/projects/support/priorities", json=normal)).status_code == 403
    assert (await api.as_("dave").get("/api/projects/support/priorities")).status_code == 404

    cid = await api.conversation("+48600000001")
    changed = await alice.put(f"/api/conversations/{cid}/priority", json={"priority": "urgent"})
    assert changed.status_code == 204
    info = (await alice.get(f"/api/conversations/{cid}/routing")).json()
    assert info["priority"] == "urgent"
    assert info["reaction_due"] is not None
    api.clock.advance(minutes=20)
    late = (await alice.get(f"/api/conversations/{cid}/routing")).json()
    assert "reaction_missed" in late["signals"]
    unknown = await alice.put(f"/api/conversations/{cid}/priority", json={"priority": "nope"})
    assert unknown.status_code == 404

    hours = {"timezone": "Europe/Warsaw",
             "spans": [{"weekday": d, "opens": "08:00", "closes": "16:00"} for d in range(5)],
             "days_off": ["2026-12-25"]}  # fmt: skip
    assert (await admin.put("/api/projects/support/business-hours", json=hours)).status_code == 204
    wrong_zone = await admin.put(
        "/api/projects/support/business-hours", json={"timezone": "Mars/Olympus"}
    )
    assert wrong_zone.status_code == 422
    assert wrong_zone.json()["detail"][0]["loc"] == ["body", "timezone"]


async def test_pinning(api: Api) -> None:
    cid = await api.conversation("+48600000001")
    alice, bob, admin = api.as_("alice"), api.as_("bob"), api.as_("admin")
    before = (await alice.get(f"/api/conversations/{cid}/pin")).json()
    assert before["may_pin"] is False
    assert (await alice.post(f"/api/conversations/{cid}/pin")).status_code == 409  # take first
    await alice.post(f"/api/conversations/{cid}/take")
    assert (await alice.get(f"/api/conversations/{cid}/pin")).json()["label"] == "Pin (alice)"
    assert (await alice.post(f"/api/conversations/{cid}/pin")).status_code == 204
    status = (await alice.get(f"/api/conversations/{cid}/pin")).json()
    assert (status["pinned_to"], status["may_unpin"]) == (api.ids["alice"], True)

    # The customer's next conversation goes straight to alice… after she closes this one.
    await alice.post(f"/api/conversations/{cid}/close")
    await bob.post(f"/api/conversations/{cid}/reopen")
    await alice.post(f"/api/conversations/{cid}/unassign")
    await bob.post(f"/api/conversations/{cid}/take")
    assert (await bob.delete(f"/api/conversations/{cid}/pin")).status_code == 403
    assert (await admin.delete(f"/api/conversations/{cid}/pin")).status_code == 204
    assert (await admin.delete(f"/api/conversations/{cid}/pin")).status_code == 409


async def test_blacklist(api: Api) -> None:
    spam = await api.conversation("+48600000666", "buy now")
    keep = await api.conversation("+48600000001", "real question")
    alice, boss = api.as_("alice"), api.as_("boss")
    blocked = await alice.post(f"/api/conversations/{spam}/block", json={"reason": "spam"})
    assert blocked.status_code == 204
    assert [c["id"] for c in (await alice.get("/api/conversations")).json()] == [keep]
    assert (await alice.get(f"/api/conversations/{spam}")).status_code == 404
    listed = (await boss.get("/api/blacklist")).json()
    assert [(x["conversation_id"], x["reason"]) for x in listed] == [(spam, "spam")]
    assert (await alice.delete(f"/api/blacklist/{spam}")).status_code == 403
    assert (await boss.delete(f"/api/blacklist/{spam}")).status_code == 204
    assert (await boss.delete(f"/api/blacklist/{spam}")).status_code == 404
    assert (await alice.get(f"/api/conversations/{spam}")).status_code == 200
    too_long = await alice.post(f"/api/conversations/{spam}/block", json={"reason": "x" * 301})
    assert too_long.status_code == 422


async def test_rules_groups_distribution_and_presence(api: Api) -> None:
    admin, alice = api.as_("admin"), api.as_("alice")
    group = await admin.post("/api/projects/support/groups", json={"name": "Refunds"})
    gid = group.json()["id"]
    duplicate = await admin.post("/api/projects/support/groups", json={"name": "Refunds"})
    assert duplicate.status_code == 409
    members = await admin.put(f"/api/groups/{gid}/members", json={"agent_ids": [api.ids["bob"]]})
    assert members.status_code == 204
    outsider = await admin.put(f"/api/groups/{gid}/members", json={"agent_ids": [api.ids["dave"]]})
    assert outsider.status_code == 403
    assert (
        await admin.put("/api/projects/support/distribution", json={"distribution": "direct"})
    ).status_code == 204
    assert (
        await admin.put(
            "/api/projects/support/distribution", json={"distribution": "pool", "group_id": gid}
        )
    ).status_code == 204

    rules = [
        {
            "name": "refunds",
            "conditions": [{"kind": "body_contains", "params": {"value": "refund"}}],
            "actions": [{"kind": "set_group", "params": {"group": "Refunds"}},
                        {"kind": "add_tags", "params": {"tags": ["Money"]}}],
        }
    ]  # fmt: skip
    assert (await admin.put("/api/projects/support/rules", json=rules)).status_code == 204
    stored = (await admin.get("/api/projects/support/rules")).json()
    assert stored[0]["name"] == "refunds"
    assert stored[0]["actions"][1]["params"] == {"tags": ["Money"]}
    missing = [{**rules[0], "actions": [{"kind": "set_group", "params": {"group": "Nope"}}]}]
    refused = await admin.put("/api/projects/support/rules", json=missing)
    assert refused.status_code == 422
    assert "no group 'Nope'" in refused.json()["error"]
    unknown = [{**rules[0], "actions": [{"kind": "teleport"}]}]
    assert (await admin.put("/api/projects/support/rules", json=unknown)).status_code == 422
    no_actions = [{"name": "x", "actions": []}]
    shape = await admin.put("/api/projects/support/rules", json=no_actions)
    assert shape.status_code == 422
    assert shape.json()["detail"][0]["loc"] == ["body", 0, "actions"]

    me = api.ids["alice"]
    assert (await alice.put(f"/api/agents/{me}/presence", json={"online": True})).status_code == 204
    presence = (await alice.get(f"/api/agents/{me}/presence")).json()
    assert presence["online"] is True
    capacity = await alice.put(f"/api/agents/{me}/presence", json={"capacity": 3})
    assert capacity.status_code == 403
    boss = api.as_("boss")
    assert (await boss.put(f"/api/agents/{me}/presence", json={"capacity": 3})).status_code == 204
    assert (await alice.get(f"/api/agents/{me}/presence")).json()["capacity"] == 3
    assert (await alice.put(f"/api/agents/{me}/presence", json={})).status_code == 422
    # dave shares no project with alice: she does not exist for him.
    assert (await api.as_("dave").get(f"/api/agents/{me}/presence")).status_code == 404
