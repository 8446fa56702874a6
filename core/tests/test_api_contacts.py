"""Contacts, templates and the API's description over HTTP."""

from __future__ import annotations

import pytest
from test_api_world import Api, api  # noqa: F401

pytestmark = pytest.mark.anyio


async def test_contact_fields_and_contacts(api: Api) -> None:
    admin, alice, boss = api.as_("admin"), api.as_("alice"), api.as_("boss")
    first = {"name": "first_name", "type": "text", "name_part": 1, "label": "First name"}
    last = {"name": "last_name", "type": "text", "name_part": 2, "required": True}
    for spec in (first, last):
        assert (await admin.post("/api/contact-fields", json=spec)).status_code == 201
    assert (await alice.post("/api/contact-fields", json=first)).status_code == 403
    taken = await admin.post("/api/contact-fields", json=first)
    assert taken.status_code == 422
    assert taken.json()["field"] == "first_name"
    changed = await admin.patch("/api/contact-fields/first_name", json={"label": "Given name"})
    assert changed.json()["label"] == "Given name"
    fixed = await admin.patch("/api/contact-fields/first_name", json={"type": "number"})
    assert fixed.status_code == 422
    names = [f["name"] for f in (await alice.get("/api/contact-fields")).json()]
    assert names == ["first_name", "last_name"]

    missing = await alice.post("/api/contacts", json={"values": {"first_name": "Jan"}})
    assert missing.status_code == 422
    assert missing.json()["field"] == "last_name"
    made = await alice.post(
        "/api/contacts",
        json={"values": {"first_name": "Jan", "last_name": "Kowalski"},
              "addresses": [{"kind": "phone", "value": "+48600000001"}]},
    )  # fmt: skip
    assert made.status_code == 201
    contact = made.json()
    assert contact["display_name"] == "Jan Kowalski"
    cid = contact["id"]
    updated = await alice.patch(f"/api/contacts/{cid}", json={"vip": True})
    assert updated.json()["vip"] is True
    assert (await alice.get(f"/api/contacts/{cid}")).json()["vip"] is True
    assert (await alice.get("/api/contacts/9999")).status_code == 404

    conversation = await api.conversation("+48600000002", "who am I?")
    linked = await alice.post(
        f"/api/contacts/{cid}/addresses",
        json={"address": {"kind": "phone", "value": "+48600000002"}},
    )
    assert linked.json()["conversation_ids"] == [conversation]
    sender = await alice.post(
        "/api/contacts/senders",
        json={"address": {"kind": "phone", "value": "+48600000003"},
              "values": {"first_name": "Ola", "last_name": "Nowak"}},
    )  # fmt: skip
    assert sender.status_code == 201
    other = sender.json()["contact"]["id"]

    assert (
        await alice.put(f"/api/contacts/{cid}/related/{other}", json={"label": "spouse"})
    ).status_code == 204
    related = (await alice.get(f"/api/contacts/{cid}/related")).json()
    assert [(r["id"], r["label"]) for r in related] == [(other, "spouse")]
    assert (await alice.delete(f"/api/contacts/{cid}/related/{other}")).status_code == 204
    assert (await alice.delete(f"/api/contacts/{cid}/related/{other}")).status_code == 404

    note = await alice.post(f"/api/contacts/{cid}/notes", json={"text": "prefers SMS"})
    assert note.status_code == 201
    activity = note.json()["id"]
    edited = await alice.patch(f"/api/activities/{activity}", json={"text": "prefers e-mail"})
    assert edited.json()["text"] == "prefers e-mail"
    assert (await alice.patch(f"/api/activities/{activity}", json={"note": "x"})).status_code == 422
    assert (await api.as_("bob").patch(
        f"/api/activities/{activity}", json={"text": "mine now"})).status_code == 403  # fmt: skip
    history = (await alice.get(f"/api/contacts/{cid}/history", params={"kind": "note"})).json()
    assert [h["text"] for h in history] == ["prefers e-mail"]
    assert (await alice.delete(f"/api/activities/{activity}")).status_code == 204

    assert (await alice.delete(f"/api/contacts/{cid}")).status_code == 403
    assert (await boss.delete(f"/api/contacts/{cid}")).status_code == 204
    assert (await admin.delete("/api/contact-fields/first_name")).status_code == 204


async def test_templates(api: Api) -> None:
    admin, alice, bob = api.as_("admin"), api.as_("alice"), api.as_("bob")
    company = await admin.post(
        "/api/templates",
        json={"title": "Greetings", "name": "hello", "company": True,
              "body": "Hello {{ conversation.customer }}, {{ agent.name }} here."},
    )  # fmt: skip
    assert company.status_code == 201
    mine = await alice.post(
        "/api/templates", json={"title": "Closing", "name": "bye", "body": "Bye!"}
    )
    tid, own = company.json()["id"], mine.json()["id"]
    groups = (await alice.get("/api/templates")).json()
    assert [(g["title"], [t["name"] for t in g["templates"]]) for g in groups] == [
        ("Closing", ["bye"]), ("Greetings", ["hello"])
    ]  # fmt: skip
    assert [g["title"] for g in (await bob.get("/api/templates")).json()] == ["Greetings"]
    assert (await bob.get(f"/api/templates/{own}")).status_code == 404
    assert (await alice.get("/api/templates", params={"search": "bye"})).json()[0]["title"] == (
        "Closing"
    )

    cid = await api.conversation("+48600000001")
    rendered = await alice.post(f"/api/templates/{tid}/render", json={"conversation_id": cid})
    assert rendered.json() == {"text": "Hello +48600000001, alice here."}
    needs_contact = await alice.post(
        "/api/templates", json={"title": "t", "name": "n", "body": "Dear {{ contact.name }}"}
    )
    missing = await alice.post(
        f"/api/templates/{needs_contact.json()['id']}/render", json={"conversation_id": cid}
    )
    assert missing.status_code == 422
    assert missing.json()["variable"] == "contact"
    broken = await alice.post(
        "/api/templates", json={"title": "t", "name": "n", "body": "{{ secret }}"}
    )
    assert broken.status_code == 422

    assert (await alice.patch(f"/api/templates/{tid}", json={"name": "x"})).status_code == 403
    renamed = await alice.patch(f"/api/templates/{own}", json={"name": "goodbye"})
    assert renamed.json()["name"] == "goodbye"
    assert (await alice.delete(f"/api/templates/{own}")).status_code == 204
    assert (await alice.get(f"/api/templates/{own}")).status_code == 404


async def test_openapi_and_docs(api: Api) -> None:
    client = api.client()
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in ("/api/conversations", "/api/conversations/{conversation_id}/messages",
                 "/api/messages/{message_id}/cancel", "/api/events", "/api/blacklist",
                 "/api/projects/{project}/rules", "/api/contacts", "/api/templates",
                 "/api/login"):  # fmt: skip
        assert path in paths, path
    assert "/healthz" not in paths
    assert spec.json()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "/openapi.json" in docs.text
    assert (await client.get("/healthz")).json() == {"status": "ok"}
