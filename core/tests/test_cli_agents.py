"""``tidings users``, ``tidings conversations`` and ``tidings send``, run as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PluginDists
from pydantic import SecretStr

from tidings.auth import Auth
from tidings.store import Store

TIDINGS = str(Path(sys.executable).parent / "tidings")

SMS_PLUGIN = """
from tidings import Address, Channel, ChannelSettings, SendResult, hookimpl

class Settings(ChannelSettings):
    number: str

class CliSms(Channel):
    name = "cli_sms"
    kind = "sms"
    settings_model = Settings

    def own_address(self, account):
        return Address.phone(account.settings.number)

    @hookimpl
    async def send(self, account, message):
        return SendResult(provider_id=message.id)

@hookimpl
def register_channels():
    return [CliSms()]
"""

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(tmp_path: Path, plugin_dists: PluginDists) -> Run:
    plugin_dists.add("tidings-cli-sms", "tidings_cli_sms", SMS_PLUGIN, entry_point="cli_sms")
    (tmp_path / "tidings.toml").write_text(
        textwrap.dedent(
            f"""
            database_url = "sqlite:///{tmp_path / "tidings.db"}"
            [[accounts]]
            id = "sms-pl"
            channel = "cli_sms"
            project = "support"
            number = "+48221000000"
            """
        )
    )

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        paths = [e for e in sys.path if e.startswith(str(plugin_dists.root))]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(paths),
            "TIDINGS_CONFIG": str(tmp_path / "tidings.toml"),
            "COLUMNS": "200",
        }
        env.pop("TIDINGS_AGENT", None)
        return subprocess.run(
            [TIDINGS, *args], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
            input=stdin,
        )  # fmt: skip

    assert run("db", "upgrade").returncode == 0
    return run


@pytest.mark.anyio
async def test_users_passwords_and_tokens(run: Run, tmp_path: Path) -> None:
    added = run("users", "add", "alice", "--permission", "support:sms", "--password-stdin",
                stdin="alice's long password\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    alice_id = int(added.stdout)
    again = run("users", "add", "alice")
    assert again.returncode == 1
    assert "an agent 'alice' exists already" in again.stderr
    bad = run("users", "add", "bob", "--permission", "support")
    assert bad.returncode == 1
    assert "PROJECT:KIND" in bad.stderr

    issued = run("users", "token", "alice", "--name", "laptop", "--expires-days", "30")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert "cannot be shown again" in issued.stderr
    assert run("users", "token", "nobody").returncode == 1
    listed = json.loads(run("users", "list", "--json").stdout)
    assert listed == [{"id": alice_id, "username": "alice", "role": "agent", "active": True,
                       "password": True}]  # fmt: skip

    store = Store.open(f"sqlite:///{tmp_path / 'tidings.db'}")
    try:
        auth = Auth(store)
        actor, _ = await auth.authenticate(token)
        assert (actor.id, actor.username) == (alice_id, "alice")
        assert (await auth.login("alice", SecretStr("alice's long password"))).id == alice_id
        assert run("users", "password", "alice", "--password-stdin",
                   stdin="a new long password\n").returncode == 0  # fmt: skip
        assert (await auth.login("alice", SecretStr("a new long password"))).id == alice_id
    finally:
        await store.close()
    short = run("users", "password", "alice", "--password-stdin", stdin="short\n")
    assert short.returncode == 1
    assert "8 to 1024 characters" in short.stderr


def test_agents_list_show_and_send(run: Run) -> None:
    for args in (["alice", "--permission", "support:sms"],
                 ["boss", "--role", "supervisor", "--view-all", "--permission", "support:sms"],
                 ["dave", "--permission", "sales:sms"]):  # fmt: skip
        assert run("users", "add", *args).returncode == 0

    new = run("send", "--as", "alice", "--account", "sms-pl", "--to", "+48600000001",
              "--text", "Your parcel ships today", "--json")  # fmt: skip
    assert new.returncode == 0, new.stderr
    sent = json.loads(new.stdout)
    assert sent["status"] == "queued"
    assert sent["created_conversation"] is True
    cid = sent["conversation_id"]

    listed = run("conversations", "list", "--as", "alice", "--view", "mine", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["id"], row["state"], row["customer"]) == (cid, "assigned", "phone:+48600000001")
    assert json.loads(run("conversations", "list", "--as", "alice", "--view", "unassigned",
                          "--json").stdout) == []  # fmt: skip
    searched = run("conversations", "list", "--as", "boss", "--search", "parcel", "--json")
    assert [r["id"] for r in json.loads(searched.stdout)] == [cid]
    table = run("conversations", "list", "--as", "alice")
    assert "+48600000001" in table.stdout

    shown = run("conversations", "show", str(cid), "--as", "alice", "--json")
    detail = json.loads(shown.stdout)
    assert [m["text"] for m in detail["messages"]] == ["Your parcel ships today"]
    assert (
        "Your parcel ships today" in run("conversations", "show", str(cid), "--as", "alice").stdout
    )

    # The supervisor replies in alice's conversation: a decision is needed.
    ask = run("send", "--as", "boss", "--conversation", str(cid), "--text", "hi")
    assert ask.returncode == 1
    assert "choose one of: cancel, assign_and_send, send_only" in ask.stderr
    cancelled = run("send", "--as", "boss", "--conversation", str(cid), "--text", "hi",
                    "--decision", "cancel")  # fmt: skip
    assert cancelled.returncode == 0
    assert "cancelled: nothing was sent" in cancelled.stderr
    only = run("send", "--as", "boss", "--conversation", str(cid), "--text", "hi",
               "--decision", "send_only", "--json")  # fmt: skip
    assert json.loads(only.stdout)["conversation_id"] == cid
    texts = [m["text"] for m in json.loads(run("conversations", "show", str(cid), "--as",
                                               "alice", "--json").stdout)["messages"]]  # fmt: skip
    assert texts == ["Your parcel ships today", "hi"]

    # dave works in another project: the conversation does not exist for him.
    hidden = run("conversations", "show", str(cid), "--as", "dave", "--json")
    assert hidden.returncode == 1
    assert f"no conversation {cid}" in hidden.stderr
    assert json.loads(run("conversations", "list", "--as", "dave", "--json").stdout) == []
    nobody = run("conversations", "list", "--as", "nobody")
    assert nobody.returncode == 1
    assert "no agent 'nobody'" in nobody.stderr
    neither = run("send", "--as", "alice", "--text", "x")
    assert neither.returncode == 2
