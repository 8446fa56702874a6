"""Every refusal of the API, over HTTP: 401, 403, 404 (cross-project guessing), 409, 413,
422 naming the field."""

from __future__ import annotations

from datetime import timedelta

import pytest
from test_api_world import BODY_LIMIT, Api, api  # noqa: F401

from tidings.auth import Auth

pytestmark = pytest.mark.anyio


async def test_401_without_a_valid_token(api: Api) -> None:
    anonymous = api.client()
    for method, path in [("GET", "/api/conversations"), ("POST", "/api/conversations/1/take"),
                         ("GET", "/api/events"), ("GET", "/api/me")]:  # fmt: skip
        answer = await anonymous.request(method, path)
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"] == "Bearer"
    wrong = api.client({"Authorization": "Bearer tid_not-a-real-token"})
    assert (await wrong.get("/api/conversations")).status_code == 401
    basic = api.client({"Authorization": "Basic YWxpY2U6c2VjcmV0"})
    assert (await basic.get("/api/conversations")).status_code == 401

    auth = Auth(api.runtime.store, clock=api.clock)
    short = await auth.create_token(api.ids["alice"], expires_in=timedelta(minutes=5))
    client = api.client({"Authorization": f"Bearer {short.token.get_secret_value()}"})
    assert (await client.get("/api/conversations")).status_code == 200
    api.clock.advance(minutes=6)
    expired = await client.get("/api/conversations")
    assert expired.status_code == 401
    assert expired.json()["error"] == "the token has expired"

    alice = api.as_("alice")
    (token,) = [t for t in (await alice.get("/api/tokens")).json() if t["name"] == "tests"]
    assert "token" not in token  # listed, never shown again
    assert token["prefix"] == api.tokens["alice"][:10]
    assert (await alice.delete(f"/api/tokens/{token['id']}")).status_code == 204
    assert (await alice.get("/api/conversations")).status_code == 401


async def test_another_projects_conversation_does_not_exist_for_the_agent(api: Api) -> None:
    """dave works on sales only: whatever support id he guesses, the answer is 404, exactly
    as for an id that does not exist."""
    cid = await api.conversation("+48600000001", "support only")
    dave = api.as_("dave")
    attempts = [
        ("GET", f"/api/conversations/{cid}", None),
        ("GET", f"/api/conversations/{cid}/events", None),
        ("GET", f"/api/conversations/{cid}/routing", None),
        ("GET", f"/api/conversations/{cid}/pin", None),
        ("POST", f"/api/conversations/{cid}/take", None),
        ("POST", f"/api/conversations/{cid}/close", None),
        ("POST", f"/api/conversations/{cid}/block", {}),
        ("PUT", f"/api/conversations/{cid}/star", {}),
        ("PUT", f"/api/conversations/{cid}/note", {"note": "x"}),
        ("POST", f"/api/conversations/{cid}/tags", {"add": ["x"]}),
        ("POST", f"/api/conversations/{cid}/comments", {"text": "x"}),
        ("POST", f"/api/conversations/{cid}/messages", {"text": "x"}),
        ("DELETE", f"/api/conversations/{cid}", None),
    ]
    for method, path, body in attempts:
        answer = await dave.request(method, path, json=body)
        missing = await dave.request(method, path.replace(str(cid), "999999", 1), json=body)
        assert answer.status_code == 404, (method, path, answer.text)
        assert missing.status_code == 404
        assert answer.json()["error"] == missing.json()["error"].replace("999999", str(cid))
    (message,) = (await api.as_("alice").get(f"/api/conversations/{cid}")).json()["messages"]
    for method, path, body in [
        ("POST", f"/api/messages/{message['id']}/tags", {"add": ["x"]}),
        ("POST", "/api/messages/read", {"message_ids": [message["id"]]}),
        ("GET", f"/api/messages/{message['id']}/source", None),
    ]:
        assert (await dave.request(method, path, json=body)).status_code == 404
    listed = await dave.get("/api/conversations", params={"conversation": cid})
    assert listed.json() == []
    assert (await dave.get("/api/messages", params={"search": "support"})).json() == []
    # Nothing changed for the agents who may see it.
    summary = (await api.as_("alice").get(f"/api/conversations/{cid}")).json()["summary"]
    assert (summary["state"], summary["starred"], summary["tags"]) == ("new", False, [])


async def test_403_for_a_missing_role_or_permission(api: Api) -> None:
    alice = api.as_("alice")
    assert (await alice.get("/api/conversations", params={"view": "all"})).status_code == 403
    assert (await alice.get("/api/blacklist")).status_code == 403
    assert (await alice.get("/api/projects/support/rules")).status_code == 403
    refused = await alice.post("/api/projects/support/groups", json={"name": "x"})
    assert refused.status_code == 403
    assert refused.json()["error"] == "only an administrator may configure routing"
    company = await alice.post(
        "/api/templates", json={"title": "t", "name": "n", "body": "b", "company": True}
    )
    assert company.status_code == 403
    cross = await alice.post(
        "/api/messages", json={"account_id": "sales-sms", "to": ["+48600000009"], "text": "hi"}
    )
    assert cross.status_code == 403
    assert "no sms permission in project 'sales'" in cross.json()["error"]


async def test_409_names_the_choices(api: Api) -> None:
    cid = await api.conversation("+48600000001")
    await api.as_("alice").post(f"/api/conversations/{cid}/take")
    answer = await api.as_("boss").post(f"/api/conversations/{cid}/messages", json={"text": "x"})
    assert answer.status_code == 409
    body = answer.json()
    assert body["choices"] == ["cancel", "assign_and_send", "send_only"]
    assert body["conversation_id"] == cid
    assert "choose one of" in body["error"]


async def test_413_for_an_oversized_body(api: Api) -> None:
    cid = await api.conversation("+48600000001")
    alice = api.as_("alice")
    big = {"text": "x" * (BODY_LIMIT + 1)}
    answer = await alice.post(f"/api/conversations/{cid}/messages", json=big)
    assert answer.status_code == 413
    assert answer.json() == {"error": f"request body over {BODY_LIMIT} bytes"}

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 1000

    streamed = await alice.post(
        f"/api/conversations/{cid}/comments",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert streamed.status_code == 413
    assert len((await alice.get(f"/api/conversations/{cid}")).json()["messages"]) == 1


async def test_422_names_the_field(api: Api) -> None:
    cid = await api.conversation("+48600000001")
    alice = api.as_("alice")

    async def loc(method: str, path: str, **kw: object) -> list[object]:
        answer = await alice.request(method, path, **kw)  # type: ignore[arg-type]
        assert answer.status_code == 422, answer.text
        body = answer.json()
        assert body["error"].startswith("invalid ")
        return list(body["detail"][0]["loc"])

    assert await loc("GET", "/api/conversations", params={"view": "everything"}) == [
        "query", "view"
    ]  # fmt: skip
    assert await loc("GET", "/api/conversations", params={"limit": 0}) == ["query", "limit"]
    assert await loc("GET", "/api/conversations/abc") == ["path", "conversation_id"]
    assert await loc("POST", f"/api/conversations/{cid}/reassign", json={}) == [
        "body", "agent_id"
    ]  # fmt: skip
    assert await loc("POST", f"/api/conversations/{cid}/comments", json={"text": ""}) == [
        "body", "text"
    ]  # fmt: skip
    assert await loc(
        "POST", f"/api/conversations/{cid}/messages", json={"text": "x", "delay_seconds": -1}
    ) == ["body", "delay_seconds"]
    assert await loc("PUT", f"/api/conversations/{cid}/star", json={"starred": "maybe"}) == [
        "body", "starred"
    ]  # fmt: skip
    assert await loc("PUT", f"/api/conversations/{cid}/note", json={"note": "x", "nope": 1}) == [
        "body", "nope"
    ]  # fmt: skip
    not_json = await alice.post(
        f"/api/conversations/{cid}/comments",
        content=b"{",
        headers={"content-type": "application/json"},
    )
    assert not_json.status_code == 422
    # Refusals by the services' own rules are 422 with their message.
    tag = await alice.post(f"/api/conversations/{cid}/tags", json={"add": ["   "]})
    assert tag.status_code == 422
    assert "a tag has 1 to 100 characters" in tag.json()["error"]
    side = await alice.get("/api/conversations", params={"participant_side": "customer"})
    assert side.status_code == 422
    assert side.json()["error"] == "participant_side needs participant"
