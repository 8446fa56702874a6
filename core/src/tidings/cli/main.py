"""``tidings`` sub-commands: init, db, plugins, accounts, serve."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from functools import cache, wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import anyio
import typer
from rich.console import Console
from rich.table import Table

from tidings.config import STARTER_CONFIG, build_accounts, config_path, load_config
from tidings.errors import TidingsError
from tidings.loop import run, uvicorn_loop
from tidings.plugins import Plugins, load_plugins

if TYPE_CHECKING:
    from tidings.intake import Intake
    from tidings.models import PolledBatch
from tidings.store import Store, head_revision

app = typer.Typer(
    name="tidings",
    help="One conversation model for every customer channel.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
accounts_app = typer.Typer(help="Configured channel accounts.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(accounts_app, name="accounts")
app.command("conformance")(__import__("tidings.cli.conformance", fromlist=["_"]).conformance)

out = Console()
err = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (default: $TIDINGS_CONFIG or ./tidings.toml)"),
]


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a TidingsError into one red line and exit status 1, not a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except TidingsError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


async def _upgrade(database_url: str) -> str:
    store = Store.open(database_url)
    try:
        return await store.upgrade()
    finally:
        await store.close()


@app.command()
@friendly_errors
def init(
    config: ConfigOption = None,
    if_missing: Annotated[
        bool, typer.Option("--if-missing", help="Do nothing to an existing config file.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter tidings.toml and create the database."""
    path = config or config_path()
    if path.exists() and not force:
        if not if_missing:
            err.print(f"[bold red]error:[/] {path} exists (use --force to overwrite)")
            raise typer.Exit(1)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(STARTER_CONFIG, encoding="utf-8")
        err.print(f"wrote {path}")
    cfg = load_config(path)
    revision = run(_upgrade, cfg.database_url, event_loop=cfg.event_loop)
    err.print(f"database ready at schema {revision}")


@db_app.command("upgrade")
@friendly_errors
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply every pending migration to the configured database."""
    cfg = load_config(config)
    revision = run(_upgrade, cfg.database_url, event_loop=cfg.event_loop)
    out.print(f"schema at {revision} (head {head_revision()})")


async def _compact(database_url: str) -> int:
    from tidings.service.worker import compact_until_done

    store = Store.open(database_url)
    try:
        return await compact_until_done(store)
    finally:
        await store.close()


@db_app.command("compact")
@friendly_errors
def db_compact(config: ConfigOption = None) -> None:
    """Merge SQLite's full-text index segments now (a worker does this in the background;
    useful after a bulk import). PostgreSQL: nothing to do."""
    cfg = load_config(config)
    err.print("compacting the search index…")
    steps = run(_compact, cfg.database_url, event_loop=cfg.event_loop)
    out.print(f"search index compact ({steps} merge steps)")


@app.command()
@friendly_errors
def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List loaded plugins: distribution, version, hook implementations, channels."""
    rows = loaded_plugins().info()
    if as_json:
        sys.stdout.write(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
        return
    table = Table("plugin", "distribution", "version", "hooks", "channels")
    for r in rows:
        table.add_row(
            r.name,
            r.distribution or "-",
            r.version or "-",
            ", ".join(r.hooks),
            ", ".join(r.channels) or "-",
        )
    out.print(table)


@accounts_app.command("list")
@friendly_errors
def accounts_list(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List configured accounts (settings validated; secrets are never shown)."""
    cfg = load_config(config)
    accounts = build_accounts(cfg, loaded_plugins())
    rows: list[dict[str, Any]] = [
        {"id": a.id, "channel": a.channel, "project": a.project} for a in accounts.values()
    ]
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table("id", "channel", "project")
    for row in rows:
        table.add_row(row["id"], row["channel"], row["project"])
    out.print(table)


@accounts_app.command("urls")
@friendly_errors
def accounts_urls(account: str, config: ConfigOption = None) -> None:
    """Print the webhook URLs to register with the provider for ACCOUNT."""
    cfg = load_config(config)
    plugins_ = loaded_plugins()
    accounts = build_accounts(cfg, plugins_)
    cfg.account_entry(account)
    acct = accounts[account]
    channel = plugins_.channel(acct.channel).channel
    if not channel.webhooks:
        out.print(f"{account} ({acct.channel}) receives no webhooks: nothing to register")
        return
    for endpoint, kind in channel.webhooks.items():
        sys.stdout.write(f"{kind.value}\t{acct.webhook_url(endpoint)}\n")


@app.command()
@friendly_errors
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default from config).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from config).")] = None,
    worker: Annotated[
        bool, typer.Option(help="Also send the outbox and poll mailboxes in this process.")
    ] = True,
) -> None:
    """Run the HTTP service (webhooks, API, health, metrics) and, by default, the worker."""
    import uvicorn

    from tidings.runtime import Runtime, freeze_startup_objects
    from tidings.service import create_app

    runtime = Runtime.start(config_path=config, plugins=loaded_plugins())
    freeze_startup_objects()
    uvicorn.run(
        create_app(runtime, worker=worker),
        host=host or runtime.config.server.host,
        port=port or runtime.config.server.port,
        log_level="info",
        loop=uvicorn_loop(runtime.config.event_loop),
        timeout_graceful_shutdown=10,
    )


@app.command("worker")
@friendly_errors
def worker_command(config: ConfigOption = None) -> None:
    """Send the outbox and keep polled accounts in sync until interrupted (no HTTP).

    With PostgreSQL several workers may run at once, on several machines.
    """
    import signal

    from tidings.runtime import Runtime, freeze_startup_objects
    from tidings.service.worker import run_worker

    runtime = Runtime.start(config_path=config, plugins=loaded_plugins())
    freeze_startup_objects()

    async def main() -> None:
        stop = anyio.Event()

        async def on_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    err.print("stopping after the current batch…")
                    stop.set()
                    return

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(on_signals)
                await run_worker(runtime, stop)
                tg.cancel_scope.cancel()
        finally:
            await runtime.close()

    run(main, event_loop=runtime.config.event_loop)


@app.command()
@friendly_errors
def sync(
    account: Annotated[
        str | None, typer.Argument(help="One account (default: every polled one).")
    ] = None,
    config: ConfigOption = None,
    once: Annotated[bool, typer.Option("--once", help="Stop when nothing new is left.")] = False,
) -> None:
    """Pull polled accounts (mailboxes): store new messages, then mark them read."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from tidings.errors import ConfigError
    from tidings.intake import sync_account
    from tidings.runtime import Runtime, freeze_startup_objects
    from tidings.service.worker import polled_accounts

    runtime = Runtime.start(config_path=config, plugins=loaded_plugins())
    freeze_startup_objects()
    targets = polled_accounts(runtime)
    if account is not None:
        targets = [a for a in targets if a.id == account]
        if not targets:
            runtime.config.account_entry(account)  # unknown → names the known ones
            raise ConfigError("is not a polled account (its channel receives webhooks)",
                              account=account)  # fmt: skip

    async def main() -> None:
        try:
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err) as bar:
                for acct in targets:
                    counter = SyncProgress(bar, acct.id)
                    await sync_account(runtime, acct, follow=not once, on_batch=counter)
                    counter.finish()
        finally:
            await runtime.close()

    run(main, event_loop=runtime.config.event_loop)


class SyncProgress:
    """One progress line per account: how many messages are new and how many were known."""

    def __init__(self, bar: Any, account_id: str) -> None:
        self.bar, self.account_id = bar, account_id
        self.task = bar.add_task(f"{account_id}: connecting")
        self.stored = self.duplicates = 0

    def __call__(self, batch: PolledBatch, intake: Intake) -> None:
        self.stored += len(intake.messages.stored)
        self.duplicates += intake.messages.duplicates
        self.bar.update(self.task, description=self._line())

    def finish(self) -> None:
        self.bar.update(self.task, description=self._line() + " — done")

    def _line(self) -> str:
        return f"{self.account_id}: {self.stored} new, {self.duplicates} already stored"


@cache
def loaded_plugins() -> Plugins:
    """The plugins of this process, loaded once (every command needs the same set)."""
    return load_plugins()


def main() -> None:
    try:
        loaded_plugins().pm.hook.register_commands(cli=app)
    except TidingsError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise SystemExit(1) from None
    app()


# Command groups in their own modules; they import this one, so they come last.
from tidings.cli import conversations as _conversations  # noqa: E402
from tidings.cli import users as _users  # noqa: E402

app.add_typer(_users.app, name="users")
_conversations.register(app)
