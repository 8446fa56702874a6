"""``tidings users``: agents who may log in, their passwords and API tokens.

For the operator of the server (who holds the database), so these commands act without an
agent's credentials. Secrets travel through standard input or are printed once, never
through command-line arguments (which other users of the machine can read in ``ps``).
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, TypeVar

import sqlalchemy as sa
import typer
from pydantic import SecretStr

from tidings.auth import Auth
from tidings.cli.main import ConfigOption, err, friendly_errors
from tidings.config import load_config
from tidings.conversations import Role
from tidings.errors import ConfigError
from tidings.loop import run
from tidings.routing import add_agent
from tidings.store import Store, tables

app: typer.Typer = typer.Typer(
    help="Agents who may log in: passwords and API tokens.", no_args_is_help=True
)
T = TypeVar("T")


def _with_store(config: ConfigOption, work: Callable[[Store], Awaitable[T]]) -> T:
    cfg = load_config(config)

    async def main() -> T:
        store = Store.open(cfg.database_url)
        try:
            return await work(store)
        finally:
            await store.close()

    return run(main, event_loop=cfg.event_loop)


def _permission(text: str) -> tuple[str, str]:
    project, sep, kind = text.partition(":")
    if not sep or not project or not kind:
        raise ConfigError(f"a permission is PROJECT:KIND (e.g. support:sms), got {text!r}")
    return project, kind


def _read_password(from_stdin: bool) -> SecretStr:
    if from_stdin:
        return SecretStr(sys.stdin.readline().rstrip("\r\n"))
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("the passwords differ")
    return SecretStr(first)


@app.command("add")
@friendly_errors
def add(
    username: str,
    config: ConfigOption = None,
    display_name: Annotated[str, typer.Option(help="Shown to colleagues.")] = "",
    role: Annotated[Role, typer.Option(help="agent, supervisor or administrator")] = Role.AGENT,
    view_all: Annotated[bool, typer.Option(help="May see every conversation.")] = False,
    permission: Annotated[
        list[str] | None, typer.Option(help="PROJECT:KIND the agent works on (repeatable).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read a password from standard input.")
    ] = False,
) -> None:
    """Create an agent; prints its id."""
    perms = [_permission(p) for p in permission or []]
    password = _read_password(True) if password_stdin else None

    async def work(store: Store) -> int:
        agent_id = await add_agent(
            store, username, display_name=display_name, role=role, can_view_all=view_all,
            permissions=perms,
        )  # fmt: skip
        if password is not None:
            await Auth(store).set_password(agent_id, password)
        return agent_id

    try:
        agent_id = _with_store(config, work)
    except sa.exc.IntegrityError:
        raise ConfigError(f"an agent {username!r} exists already") from None
    sys.stdout.write(f"{agent_id}\n")


@app.command("password")
@friendly_errors
def password(
    username: str,
    config: ConfigOption = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read it from standard input.")
    ] = False,
) -> None:
    """Set an agent's password (asked twice, or read from standard input)."""
    secret = _read_password(password_stdin)

    async def work(store: Store) -> None:
        auth = Auth(store)
        await auth.set_password(await auth.agent_id(username), secret)

    _with_store(config, work)
    err.print(f"password of {username} set")


@app.command("token")
@friendly_errors
def token(
    username: str,
    config: ConfigOption = None,
    name: Annotated[str, typer.Option(help="What it is for (listed later).")] = "",
    expires_days: Annotated[
        int | None, typer.Option(min=1, help="Valid this many days (default: until revoked).")
    ] = None,
) -> None:
    """Create an API token for USERNAME and print it: it is shown this once."""

    async def work(store: Store) -> str:
        auth = Auth(store)
        new = await auth.create_token(
            await auth.agent_id(username),
            name=name,
            expires_in=timedelta(days=expires_days) if expires_days else None,
        )
        return new.token.get_secret_value()

    sys.stdout.write(_with_store(config, work) + "\n")
    err.print("store it now: the token cannot be shown again")


@app.command("list")
@friendly_errors
def list_users(
    config: ConfigOption = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Agents with their role and whether they may log in."""
    a = tables.agents
    from tidings.store import tables_auth as ta

    async def work(store: Store) -> list[dict[str, object]]:
        async with store.read() as conn:
            rows = await conn.execute(
                sa.select(a.c.id, a.c.username, a.c.role, a.c.active,
                          ta.agent_passwords.c.agent_id.is_not(None).label("password"))
                .outerjoin(ta.agent_passwords, ta.agent_passwords.c.agent_id == a.c.id)
                .order_by(a.c.id)
            )  # fmt: skip
            return [dict(r._mapping) for r in rows]

    rows = _with_store(config, work)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    for r in rows:
        state = "active" if r["active"] else "inactive"
        sys.stdout.write(f"{r['id']}\t{r['username']}\t{r['role']}\t{state}\n")
