"""The ``tidings`` command, run as a real process the way an operator runs it."""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import PluginDists

from tidings.runtime import freeze_startup_objects
from tidings.store import head_revision

TIDINGS = str(Path(sys.executable).parent / "tidings")

CHANNEL_PLUGIN = """
from pydantic import SecretStr
from tidings import Channel, ChannelSettings, Endpoint, SendResult, hookimpl

class Settings(ChannelSettings):
    token: SecretStr

class Acme(Channel):
    name = "acme_sms"
    kind = "sms"
    settings_model = Settings
    webhooks = {"inbound": Endpoint.MESSAGES, "status": Endpoint.STATUSES}

    @hookimpl
    async def receive(self, account, request):
        return []

    @hookimpl
    async def delivery_status(self, account, request):
        return []

    @hookimpl
    async def send(self, account, message):
        return SendResult(provider_id="x")

@hookimpl
def register_channels():
    return [Acme()]
"""

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(tmp_path: Path, plugin_dists: PluginDists) -> Run:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        paths = [e for e in sys.path if e.startswith(str(plugin_dists.root))]
        full_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(paths),
            "TIDINGS_CONFIG": str(tmp_path / "tidings.toml"),
            "COLUMNS": "200",
            **(env or {}),
        }
        return subprocess.run(
            [TIDINGS, *args], capture_output=True, text=True, env=full_env, timeout=60,
            cwd=tmp_path,
        )  # fmt: skip

    return run


def test_init_writes_config_and_database(run: Run, tmp_path: Path) -> None:
    result = run("init")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tidings.toml").read_text().startswith("# tidings configuration")
    assert (tmp_path / "tidings.db").exists()
    assert f"schema {head_revision()}" in result.stderr
    again = run("init")
    assert again.returncode == 1
    assert "exists" in again.stderr
    assert run("init", "--if-missing").returncode == 0
    upgraded = run("db", "upgrade")
    assert upgraded.returncode == 0
    assert f"schema at {head_revision()}" in upgraded.stdout
    compacted = run("db", "compact")
    assert compacted.returncode == 0, compacted.stderr
    assert "search index compact (0 merge steps)" in compacted.stdout  # nothing indexed yet


def test_plugins_json_lists_installed_plugins_with_hooks(
    run: Run, plugin_dists: PluginDists
) -> None:
    plugin_dists.add("tidings-acme", "tidings_acme", CHANNEL_PLUGIN, entry_point="acme")
    result = run("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["acme"] == {
        "name": "acme",
        "distribution": "tidings-acme",
        "version": "1.2.3",
        "hooks": ["delivery_status", "receive", "register_channels", "send"],
        "channels": ["acme_sms"],
    }
    assert rows["tidings.contacts.lookup"]["hooks"] == ["lookup_contacts"]
    table = run("plugins")
    assert "acme_sms" in table.stdout
    only = run("plugins", "--json", env={"TIDINGS_DISABLE_PLUGINS": "acme"})
    assert "acme" not in {row["name"] for row in json.loads(only.stdout)}


def test_misspelled_hook_stops_start_up_naming_it(run: Run, plugin_dists: PluginDists) -> None:
    plugin_dists.add(
        "tidings-typo",
        "tidings_typo",
        "from tidings import hookimpl\n\n@hookimpl\ndef lookup_contact(addresses):\n    pass\n",
    )
    result = run("plugins")
    assert result.returncode == 1
    assert "lookup_contact" in result.stderr
    assert "Traceback" not in result.stderr


def test_accounts_list_and_urls(run: Run, plugin_dists: PluginDists, tmp_path: Path) -> None:
    plugin_dists.add("tidings-acme", "tidings_acme", CHANNEL_PLUGIN, entry_point="acme")
    (tmp_path / "tidings.toml").write_text(
        textwrap.dedent(
            """
            public_url = "https://cc.example.com/tidings/"
            [[accounts]]
            id = "sms-pl"
            channel = "acme_sms"
            project = "support"
            token = "${ACME_TOKEN}"
            """
        )
    )
    env = {"ACME_TOKEN": "very-secret-value"}
    listed = run("accounts", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [
        {"id": "sms-pl", "channel": "acme_sms", "project": "support"}
    ]
    assert "very-secret-value" not in listed.stdout + listed.stderr
    urls = run("accounts", "urls", "sms-pl", env=env)
    assert urls.stdout.splitlines() == [
        "messages\thttps://cc.example.com/tidings/webhooks/sms-pl/inbound",
        "statuses\thttps://cc.example.com/tidings/webhooks/sms-pl/status",
    ]
    missing = run("accounts", "urls", "nope", env=env)
    assert missing.returncode == 1
    assert "no such account (known: sms-pl)" in missing.stderr
    no_secret = run("accounts", "list")
    assert no_secret.returncode == 1
    assert "account 'sms-pl', field 'token': environment variable ACME_TOKEN" in no_secret.stderr


def test_uninstalled_channel_is_a_clear_start_up_error(run: Run, tmp_path: Path) -> None:
    (tmp_path / "tidings.toml").write_text(
        '[[accounts]]\nid = "sms-pl"\nchannel = "acme_sms"\nproject = "p"\n'
    )
    result = run("accounts", "list")
    assert result.returncode == 1
    assert "account 'sms-pl', field 'channel': channel 'acme_sms' is not installed" in (
        result.stderr.replace("\n", "")
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_answers_health_checks(run: Run, tmp_path: Path) -> None:
    assert run("init").returncode == 0
    port = _free_port()
    env = {**os.environ, "TIDINGS_CONFIG": str(tmp_path / "tidings.toml")}
    proc = subprocess.Popen(
        [TIDINGS, "serve", "--port", str(port)], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok", "schema": head_revision()}
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    # uvicorn re-raises the SIGTERM it handled once the graceful shutdown is complete.
    assert proc.returncode in (0, -15), output
    assert "Application shutdown complete" in output


COMMAND_PLUGIN = """
import typer
from tidings import hookimpl

hello = typer.Typer(help="Greetings.")

@hello.command()
def say(name: str) -> None:
    print(f"hello {name}")

@hookimpl
def register_commands(cli):
    cli.add_typer(hello, name="hello")
"""


def test_hook_register_commands(run: Run, plugin_dists: PluginDists) -> None:
    plugin_dists.add("tidings-hello", "tidings_hello", COMMAND_PLUGIN, entry_point="hello")
    result = run("hello", "say", "Ala")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello Ala\n"
    assert "hello" in run("--help").stdout
    assert run("hello", "say", "x", env={"TIDINGS_DISABLE_PLUGINS": "hello"}).returncode == 2


def test_long_running_commands_put_start_up_objects_out_of_the_collectors_reach() -> None:
    """``serve``, ``worker`` and ``sync`` call this once started: what is alive then is
    frozen, so full collections no longer walk it."""
    started = [[i] for i in range(1000)]
    gc.unfreeze()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() >= len(started)
        collected = {id(x) for x in gc.get_objects()}  # the frozen are in no generation
        assert not any(id(x) in collected for x in started)
    finally:
        gc.unfreeze()
