"""Passwords, tokens, login over HTTP, and logs that never carry credentials."""

from __future__ import annotations

import io
import json
import logging

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from test_api_world import Api, api  # noqa: F401

from tidings.auth import (
    TOKEN_PREFIX,
    Auth,
    Unauthenticated,
    WeakPassword,
    check_password,
    hash_password,
    token_digest,
)
from tidings.auth.logs import REDACTED, JsonFormatter, RedactingFilter, install_redaction, redact
from tidings.store import tables
from tidings.store import tables_auth as ta

pytestmark = pytest.mark.anyio


def test_passwords_are_scrypt_hashed_and_checked() -> None:
    stored = hash_password("correct horse")
    assert stored.split("$")[:4] == ["scrypt", str(2**15), "8", "1"]
    assert "correct horse" not in stored
    assert check_password("correct horse", stored)
    assert not check_password("correct horsE", stored)
    assert hash_password("correct horse") != stored  # salted
    for broken in ("", "scrypt$1$2", "bcrypt$x$y$z$a$b", "scrypt$a$b$c$d$e"):
        assert not check_password("correct horse", broken)
    with pytest.raises(WeakPassword):
        hash_password("short")


async def test_tokens_are_stored_hashed(api: Api) -> None:
    auth = Auth(api.runtime.store, clock=api.clock)
    new = await auth.create_token(api.ids["bob"], name="laptop")
    token = new.token.get_secret_value()
    assert token.startswith(TOKEN_PREFIX)
    assert token not in repr(new)
    async with api.runtime.store.read() as conn:
        rows = (await conn.execute(sa.select(ta.api_tokens))).all()
    assert all(token not in str(tuple(row)) for row in rows)
    assert token_digest(token) in {row.token_hash for row in rows}
    actor, token_id = await auth.authenticate(token)
    assert (actor.username, token_id) == ("bob", new.info.id)
    await auth.revoke(api.ids["bob"], token_id)
    with pytest.raises(Unauthenticated):
        await auth.authenticate(token)


async def test_login_logout_and_me_over_http(api: Api) -> None:
    auth = Auth(api.runtime.store, clock=api.clock)
    await auth.set_password(api.ids["carol"], SecretStr("carol's long secret"))
    client = api.client()
    wrong = await client.post("/api/login", json={"username": "carol", "password": "guess"})
    nobody = await client.post("/api/login", json={"username": "nobody", "password": "guess"})
    assert wrong.status_code == nobody.status_code == 401
    assert wrong.json() == nobody.json() == {"error": "wrong username or password"}
    assert (await client.post("/api/login", json={"username": "carol"})).status_code == 422

    ok = await client.post(
        "/api/login", json={"username": "carol", "password": "carol's long secret"}
    )
    assert ok.status_code == 200
    session = ok.json()
    assert session["agent_id"] == api.ids["carol"]
    carol = api.client({"Authorization": f"Bearer {session['token']}"})
    me = (await carol.get("/api/me")).json()
    assert me["username"] == "carol"
    assert me["role"] == "agent"
    assert me["permissions"] == [{"project": "support", "kind": "sms"}]
    assert (await carol.post("/api/logout")).status_code == 204
    assert (await carol.get("/api/me")).status_code == 401

    # A deactivated agent's tokens stop working at once.
    async with api.runtime.store.write() as conn:
        await conn.execute(
            sa.update(tables.agents)
            .where(tables.agents.c.id == api.ids["bob"])
            .values(active=False)
        )
    assert (await api.as_("bob").get("/api/conversations")).status_code == 401
    refused = await client.post(
        "/api/login", json={"username": "carol", "password": "carol's long secret"}
    )
    assert refused.status_code == 200  # carol is still active


def test_redaction_of_credentials() -> None:
    token = TOKEN_PREFIX + "AbC123_-xyz"
    lines = {
        f"Authorization: Bearer {token}": "Authorization: " + REDACTED,
        "{'authorization': 'Bearer abc.def'}": "{'authorization': '" + REDACTED + "'}",
        f"GET /api/events?token={token}&x=1": "GET /api/events?token=" + REDACTED + "&x=1",
        f"failed for {token} twice": f"failed for {REDACTED} twice",
        "password=hunter2 user=x": f"password={REDACTED} user=x",
        '{"password": "hunter2"}': '{"password": "' + REDACTED + '"}',
        "cookie: session=abc": "cookie: " + REDACTED,
        "nothing secret here": "nothing secret here",
    }
    for line, expected in lines.items():
        assert redact(line) == expected, line


def test_the_filter_cleans_records_on_every_handler() -> None:
    token = TOKEN_PREFIX + "SeCrEt0123456789"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tidings.test_auth_redaction")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        install_redaction(["tidings.test_auth_redaction"])
        assert any(isinstance(f, RedactingFilter) for f in handler.filters)
        logger.info("request with %s", f"Bearer {token}", extra={"header": f"Bearer {token}"})
        try:
            raise RuntimeError(f"provider refused token={token}")
        except RuntimeError:
            logger.exception("call failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert token not in output
    first, second = (json.loads(line) for line in output.splitlines() if line.startswith("{"))
    assert first["message"] == f"request with Bearer {REDACTED}"
    assert first["header"] == f"Bearer {REDACTED}"
    assert (first["level"], first["logger"]) == ("info", "tidings.test_auth_redaction")
    assert second["message"] == "call failed"
    assert f"token={REDACTED}" in second["error"]


async def test_access_log_names_the_agent_but_not_the_token(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tidings.api")
    alice = api.as_("alice")
    await alice.get("/api/conversations", params={"search": "parcel"})
    await api.client({"Authorization": "Bearer tid_wrong"}).get("/api/me")
    unsearchable = await alice.get("/api/conversations", params={"search": "x"})
    assert unsearchable.status_code == 422
    records = [r for r in caplog.records if r.name == "tidings.api"]
    assert [(r.getMessage(), getattr(r, "agent_id", None)) for r in records] == [
        ("GET /api/conversations 200", api.ids["alice"]),
        ("GET /api/me 401", None),
        ("GET /api/conversations 422", api.ids["alice"]),
    ]
    assert api.tokens["alice"] not in caplog.text
    assert "tid_wrong" not in caplog.text
