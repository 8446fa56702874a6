"""The event loop the commands run on: uvloop where installed, as configured otherwise."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tidings import loop
from tidings.config import parse_config
from tidings.errors import ConfigError

cli = importlib.import_module("tidings.cli.main")  # the package's ``main`` is the entry function


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_where_it_is_installed() -> None:
    assert importlib.util.find_spec("uvloop") is not None  # a dependency of tidings here
    assert loop.run(_loop_module).startswith("uvloop")
    assert loop.uvicorn_loop() == "uvloop"
    assert loop.anyio_backend() == ("asyncio", {"use_uvloop": True})


def test_asyncio_runs_on_asyncios_own_loop() -> None:
    assert loop.run(_loop_module, event_loop="asyncio").startswith("asyncio")
    assert loop.uvicorn_loop("asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "uvloop" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert loop.run(_loop_module).startswith("asyncio")
    with pytest.raises(ConfigError, match="uvloop is not installed") as caught:
        loop.run(_loop_module, event_loop="uvloop")
    assert caught.value.field == "event_loop"


def test_the_configuration_chooses_the_loop() -> None:
    assert parse_config({}, {}).event_loop == "auto"
    assert parse_config({"event_loop": "asyncio"}, {}).event_loop == "asyncio"
    with pytest.raises(ConfigError) as caught:
        parse_config({"event_loop": "trio"}, {})
    assert caught.value.field == "event_loop"


@pytest.mark.parametrize(("setting", "expected"), [(None, "uvloop"), ("asyncio", "asyncio")])
def test_commands_run_on_the_configured_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None, expected: str
) -> None:
    seen: list[str] = []

    async def upgrade(database_url: str) -> str:
        seen.append(await _loop_module())
        return "head"

    monkeypatch.setattr(cli, "_upgrade", upgrade)
    config = tmp_path / "tidings.toml"
    config.write_text(f'event_loop = "{setting}"\n' if setting else "", encoding="utf-8")
    result = CliRunner().invoke(cli.app, ["db", "upgrade", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    assert seen[0].startswith(expected)
