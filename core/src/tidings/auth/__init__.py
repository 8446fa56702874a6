"""Who is calling: agents' passwords and API tokens.

Users are the ``agents`` of ``tidings.routing``; this module only adds credentials. A
password is kept as an scrypt hash (memory-hard, in the standard library); a token is
random, shown once, and kept as its SHA-256 — a token has 256 bits of entropy, so a fast
hash is enough and lets a request be authenticated with one indexed lookup. What an agent
may then see and do is decided by the services from ``tidings.conversations.Actor``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

import anyio
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, SecretStr

from tidings.clock import Clock, system_clock
from tidings.conversations.models import Actor
from tidings.errors import NotFound, TidingsError
from tidings.routing import load_actor
from tidings.store import Store, dialect_insert, tables
from tidings.store import tables_auth as ta

TOKEN_PREFIX = "tid_"  # noqa: S105 (a public marker, not a secret)
SESSION_LIFETIME = timedelta(hours=12)
PASSWORD_MIN = 8
PASSWORD_MAX = 1024
# scrypt at N=2**15, r=8 costs 32 MiB and about 0.1 s: RFC 7914's interactive-login range.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


class Unauthenticated(TidingsError):
    """No credentials, or ones that do not name an active agent (HTTP 401)."""


class WeakPassword(TidingsError, ValueError):
    """A password the policy refuses (too short or too long)."""


class TokenInfo(BaseModel):
    """A token as listed: never the token itself."""

    model_config = ConfigDict(frozen=True)

    id: int
    agent_id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewToken(BaseModel):
    """A token just created: ``token`` is shown to its owner this once."""

    model_config = ConfigDict(frozen=True)

    info: TokenInfo
    token: SecretStr


# --- passwords --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash``: the parameters travel with the hash so they can grow."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise WeakPassword(f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM, dklen=32,
    )  # fmt: skip
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    if len(password) > PASSWORD_MAX:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
            maxmem=_SCRYPT_MAXMEM, dklen=len(expected),
        )  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# A real hash to check against when the user does not exist, so that the answer takes as
# long for an unknown username as for a wrong password.
_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    return _DUMMY_HASH


# --- tokens -----------------------------------------------------------------------------


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_info(row: sa.Row[object]) -> TokenInfo:
    return TokenInfo.model_validate(row, from_attributes=True)


class Auth:
    """Credentials over the store; every method is one short transaction."""

    def __init__(self, store: Store, *, clock: Clock = system_clock) -> None:
        self.store = store
        self.clock = clock

    async def agent_id(self, username: str) -> int:
        a = tables.agents
        async with self.store.read() as conn:
            found = (
                await conn.execute(sa.select(a.c.id).where(a.c.username == username))
            ).scalar_one_or_none()
        if found is None:
            raise NotFound(f"no agent {username!r}")
        return int(found)

    async def set_password(self, agent_id: int, password: SecretStr) -> None:
        hashed = await anyio.to_thread.run_sync(hash_password, password.get_secret_value())
        p = ta.agent_passwords
        async with self.store.write() as conn:
            await load_actor(conn, agent_id)
            stmt = dialect_insert(conn.dialect.name, p).values(
                agent_id=agent_id, hash=hashed, updated_at=self.clock()
            )
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[p.c.agent_id],
                    set_={"hash": stmt.excluded.hash, "updated_at": stmt.excluded.updated_at},
                )
            )

    async def login(self, username: str, password: SecretStr) -> Actor:
        """The agent these credentials name, or ``Unauthenticated`` (whichever part was
        wrong is not said)."""
        a, p = tables.agents, ta.agent_passwords
        async with self.store.read() as conn:
            row = (
                await conn.execute(
                    sa.select(a.c.id, p.c.hash)
                    .join(p, p.c.agent_id == a.c.id)
                    .where(a.c.username == username, a.c.active.is_(True))
                )
            ).one_or_none()
        stored = row.hash if row is not None else _dummy_hash()
        ok = await anyio.to_thread.run_sync(check_password, password.get_secret_value(), stored)
        if row is None or not ok:
            raise Unauthenticated("wrong username or password")
        async with self.store.read() as conn:
            return await load_actor(conn, int(row.id))

    async def create_token(
        self, agent_id: int, *, name: str = "", expires_in: timedelta | None = None
    ) -> NewToken:
        if len(name) > 100:
            raise ValueError("a token name has at most 100 characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        t = ta.api_tokens
        async with self.store.write() as conn:
            await load_actor(conn, agent_id)
            row = (
                await conn.execute(
                    sa.insert(t)
                    .values(
                        agent_id=agent_id, name=name, token_hash=token_digest(token),
                        prefix=token[: len(TOKEN_PREFIX) + 6], created_at=now,
                        expires_at=now + expires_in if expires_in else None,
                    )
                    .returning(t)
                )
            ).one()  # fmt: skip
        return NewToken(info=_token_info(row), token=SecretStr(token))

    async def authenticate(self, token: str) -> tuple[Actor, int]:
        """The active agent a bearer token belongs to, and the token's id."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise Unauthenticated("not a tidings API token")
        t = ta.api_tokens
        now = self.clock()
        async with self.store.read() as conn:
            row = (
                await conn.execute(sa.select(t).where(t.c.token_hash == token_digest(token)))
            ).one_or_none()
            if row is None or row.revoked_at is not None:
                raise Unauthenticated("unknown or revoked token")
            if row.expires_at is not None and row.expires_at <= now:
                raise Unauthenticated("the token has expired")
            try:
                actor = await load_actor(conn, row.agent_id)
            except NotFound:
                raise Unauthenticated("the token's agent is not active") from None
        if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
            # Coarse on purpose: one write a minute per token, not one per request.
            async with self.store.write() as conn:
                await conn.execute(sa.update(t).where(t.c.id == row.id).values(last_used_at=now))
        return actor, int(row.id)

    async def tokens(self, agent_id: int) -> list[TokenInfo]:
        t = ta.api_tokens
        async with self.store.read() as conn:
            rows = await conn.execute(sa.select(t).where(t.c.agent_id == agent_id).order_by(t.c.id))
            return [_token_info(r) for r in rows]

    async def revoke(self, agent_id: int, token_id: int) -> None:
        """Revoke one of ``agent_id``'s tokens (someone else's does not exist for them)."""
        t = ta.api_tokens
        async with self.store.write() as conn:
            done = await conn.execute(
                sa.update(t)
                .where(t.c.id == token_id, t.c.agent_id == agent_id, t.c.revoked_at.is_(None))
                .values(revoked_at=self.clock())
                .returning(t.c.id)
            )
            if done.scalar_one_or_none() is None:
                raise NotFound(f"no active token {token_id}")
