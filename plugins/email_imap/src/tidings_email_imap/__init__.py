"""tidings channel plugin ``email_imap``: email read over IMAP, sent over SMTP.

Inbound mail is polled (``poll`` → ``receive`` / ``delivery_status`` → ``acknowledge``);
bounces (RFC 3464 reports) become delivery-status updates of the message they bounce.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import typer

from tidings import Channel, hookimpl
from tidings_email_imap.autoconfig import discover, to_toml
from tidings_email_imap.channel import EmailImapChannel
from tidings_email_imap.settings import EmailSettings, Security

__all__ = ["EmailImapChannel", "EmailSettings", "Security", "email_cli"]

email_cli = typer.Typer(help="Email (IMAP/SMTP) tools.", no_args_is_help=True)


@email_cli.command()
def autoconfig(
    address: str,
    project: str = typer.Option("support", help="project of the printed account"),
) -> None:
    """Find the IMAP and SMTP servers of ADDRESS; print an accounts entry for tidings.toml."""
    try:
        config = anyio.run(lambda: discover(address))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if config is None:
        typer.echo(f"no configuration found for {address}", err=True)
        raise typer.Exit(1)
    for warning in config.warnings():
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(to_toml(config, address, project=project), nl=False)


@hookimpl
def register_channels() -> Sequence[Channel]:
    return [EmailImapChannel()]


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    cli.add_typer(email_cli, name="email")
