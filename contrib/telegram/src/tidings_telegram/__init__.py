"""tidings-telegram: customers write to a Telegram bot, agents answer in tidings.

The plugin module registers the channel and a ``tidings telegram set-webhook`` command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidings import Channel, hookimpl
from tidings_telegram.channel import TelegramChannel, TelegramSettings

if TYPE_CHECKING:
    import typer

__all__ = ["TelegramChannel", "TelegramSettings", "register_channels", "register_commands"]


@hookimpl
def register_channels() -> list[Channel]:
    return [TelegramChannel()]


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from tidings_telegram.commands import app

    cli.add_typer(app, name="telegram")
