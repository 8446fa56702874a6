"""Configuration: every bad value fails at start naming the account and field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from contract_channels import ChannelsPlugin

from tidings.config import build_accounts, load_config, parse_config
from tidings.errors import ConfigError, UnknownChannel
from tidings.plugins import Plugins, load_plugins

WriteConfig = Callable[[str], Path]


@pytest.fixture
def plugins() -> Plugins:
    return load_plugins({}, extra=[("t", ChannelsPlugin())], entry_points_enabled=False)


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = load_config(tmp_path / "none.toml", {}, required=False)
    assert cfg.database_url == f"sqlite:///{tmp_path / 'tidings.db'}"
    assert cfg.public_url == "http://127.0.0.1:8000"
    assert cfg.server.port == 8000
    assert cfg.accounts == ()


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run `tidings init`"):
        load_config(tmp_path / "none.toml", {})


def test_config_path_from_environment(write_config: WriteConfig) -> None:
    path = write_config('public_url = "https://cc.example.com/"\n')
    cfg = load_config(None, {"TIDINGS_CONFIG": str(path)})
    assert cfg.public_url == "https://cc.example.com"


def test_accounts_validate_with_the_channel_model(
    write_config: WriteConfig, plugins: Plugins
) -> None:
    path = write_config(
        """
        public_url = "https://cc.example.com"
        [[accounts]]
        id = "sms-1"
        channel = "test_json"
        project = "support"
        secret = "${SMS_SECRET}"
        """
    )
    cfg = load_config(path, {"SMS_SECRET": "t0ken"})
    (account,) = build_accounts(cfg, plugins).values()
    assert account.settings.secret.get_secret_value() == "t0ken"
    assert "t0ken" not in repr(account)
    assert account.webhook_url("status") == "https://cc.example.com/webhooks/sms-1/status"


def test_missing_environment_secret_names_account_and_field(write_config: WriteConfig) -> None:
    path = write_config(
        """
        [[accounts]]
        id = "sms-1"
        channel = "test_json"
        project = "support"
        secret = "${SMS_SECRET}"
        """
    )
    with pytest.raises(ConfigError, match=r"account 'sms-1', field 'secret'.*SMS_SECRET") as info:
        load_config(path, {})
    assert (info.value.account, info.value.field) == ("sms-1", "secret")


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ("", "secret", "Field required"),
        ('secret = "x"\nsender = 5', "sender", "string"),
        ('secret = "x"\nsecert = "y"', "secert", "Extra inputs are not permitted"),
    ],
)
def test_bad_channel_settings_name_account_and_field(
    write_config: WriteConfig, plugins: Plugins, extra: str, field: str, message: str
) -> None:
    path = write_config(
        f'[[accounts]]\nid = "sms-1"\nchannel = "test_json"\nproject = "p"\n{extra}\n'
    )
    with pytest.raises(ConfigError, match=message) as info:
        build_accounts(load_config(path, {}), plugins)
    assert (info.value.account, info.value.field) == ("sms-1", field)
    assert f"account 'sms-1', field '{field}'" in str(info.value)


def test_unknown_channel_lists_what_is_installed(
    write_config: WriteConfig, plugins: Plugins
) -> None:
    path = write_config('[[accounts]]\nid = "fax-1"\nchannel = "fax_t38"\nproject = "p"\n')
    with pytest.raises(UnknownChannel, match=r"'fax_t38' is not installed.*test_form, test_json"):
        build_accounts(load_config(path, {}), plugins)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('database_url = "mysql://x/y"', "field 'database_url'"),
        ('public_url = "cc.example.com"', "field 'public_url'.*absolute"),
        ("[server]\nport = 99999", "field 'server.port'"),
        ('colour = "blue"', "field 'colour'"),
        ('[[accounts]]\nid = "a b"\nchannel = "x"\nproject = "p"', "account 'a b', field 'id'"),
        ('[[accounts]]\nid = "a"\nchannel = "x"', "account 'a', field 'project'"),
        (
            '[[accounts]]\nid = "a"\nchannel = "x"\nproject = "p"\n'
            '[[accounts]]\nid = "a"\nchannel = "y"\nproject = "p"',
            "used twice",
        ),
        ("accounts = 3", "field 'accounts'"),
        ("database_url = ", "not valid TOML"),
    ],
)
def test_bad_top_level_values_are_named(
    write_config: WriteConfig, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write_config(text), {})


def test_environment_overrides(write_config: WriteConfig) -> None:
    path = write_config('database_url = "sqlite:///a.db"\n')
    cfg = load_config(
        path,
        {"TIDINGS_DATABASE_URL": "postgresql://u@db/t", "TIDINGS_PUBLIC_URL": "https://x.example"},
    )
    assert cfg.database_url == "postgresql://u@db/t"
    assert cfg.public_url == "https://x.example"


def test_relative_sqlite_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = parse_config({"database_url": "sqlite:///data/t.db"}, {}, tmp_path / "tidings.toml")
    assert cfg.database_url == f"sqlite:///{tmp_path / 'data' / 't.db'}"
    absolute = parse_config({"database_url": "sqlite:////srv/t.db"}, {}, tmp_path / "x.toml")
    assert absolute.database_url == "sqlite:////srv/t.db"


def test_unknown_account_is_named(write_config: WriteConfig) -> None:
    cfg = load_config(write_config('[[accounts]]\nid = "a"\nchannel = "x"\nproject = "p"'), {})
    with pytest.raises(ConfigError, match="account 'zz': no such account \\(known: a\\)"):
        cfg.account_entry("zz")
