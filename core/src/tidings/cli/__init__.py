"""The ``tidings`` command (typer + rich). Each sub-command is a thin layer over the core."""

from __future__ import annotations

from tidings.cli.main import app, main

__all__ = ["app", "main"]
