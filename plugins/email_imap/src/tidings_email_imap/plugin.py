"""The plugin's hooks: the ``email_imap`` channel and the ``tidings email`` commands.

Kept apart from the package's ``__init__`` so that importing a light module of the package
(the parse worker imports ``parse`` only) does not load the CLI, the HTTP client used by
autoconfiguration or the IMAP/SMTP clients.
"""

from __future__ import annotations

from collections.abc import Sequence

import typer

from tidings import Channel, hookimpl
from tidings.loop import run
from tidings_email_imap.autoconfig import discover, to_toml
from tidings_email_imap.channel import EmailImapChannel

email_cli = typer.Typer(help="Email (IMAP/SMTP) tools.", no_args_is_help=True)


@email_cli.command()
def autoconfig(
    address: str,
    project: str = typer.Option("support", help="project of the printed account"),
) -> None:
    """Find the IMAP and SMTP servers of ADDRESS; print an accounts entry for tidings.toml."""
    try:
        config = run(discover, address)
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
