"""``tidings telegram …``: operator commands that need the Bot API, not the inbox."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Telegram bot tools.", no_args_is_help=True)


@app.command("set-webhook")
def set_webhook_command(
    account: Annotated[str, typer.Argument(help="The id of a telegram account in tidings.toml")],
    config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
    drop_pending: Annotated[
        bool, typer.Option("--drop-pending", help="Discard updates Telegram still holds.")
    ] = False,
) -> None:
    """Register this account's webhook URL and secret token with Telegram (setWebhook)."""
    from tidings.config import build_account, load_config
    from tidings.errors import TidingsError
    from tidings.loop import run
    from tidings.plugins import load_plugins
    from tidings_telegram.channel import set_webhook

    try:
        cfg = load_config(config)
        acct: Any = build_account(cfg.account_entry(account), cfg, load_plugins())
        if acct.channel != "telegram":
            raise typer.BadParameter(f"{account} is a {acct.channel} account, not telegram")

        async def register() -> str:
            return await set_webhook(acct, drop_pending_updates=drop_pending)

        url = run(register, event_loop=cfg.event_loop)
    except TidingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"webhook set: {url}")
