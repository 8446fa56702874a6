"""The configuration file (``tidings.toml``) and per-account settings validation.

Every problem is reported at start-up as a ``ConfigError`` that names the account and the
field, because a contact center finds out about a typo in a token the moment a customer's
message is lost otherwise.

Secrets may stay out of the file: any string value written ``"${NAME}"`` is read from the
environment variable ``NAME`` (an unset variable is an error, never an empty secret).
``TIDINGS_DATABASE_URL`` and ``TIDINGS_PUBLIC_URL`` override the file's values.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tidings.channel import ACCOUNT_ID_PATTERN, NAME_PATTERN, Account, ChannelSettings
from tidings.errors import ConfigError, UnknownChannel
from tidings.loop import EventLoop
from tidings.plugins import Plugins
from tidings.store.engine import DEFAULT_DATABASE_URL, async_url

CONFIG_ENV = "TIDINGS_CONFIG"
DEFAULT_CONFIG_PATH = "tidings.toml"
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
RESERVED_ACCOUNT_KEYS = frozenset({"id", "channel", "project", "send_rate"})


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)


class AccountEntry(BaseModel):
    """An ``[[accounts]]`` entry before its channel's settings are validated."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(pattern=ACCOUNT_ID_PATTERN)
    channel: str = Field(pattern=NAME_PATTERN)
    project: str = Field(min_length=1, max_length=100)
    send_rate: float | None = Field(
        default=None, gt=0, description="messages per second the outbox sends at most"
    )

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    public_url: str = "http://127.0.0.1:8000"
    server: ServerSettings = Field(default_factory=ServerSettings)
    event_loop: EventLoop = "auto"
    """The event loop of ``tidings serve``, ``worker`` and the other commands
    (``tidings.loop``): ``auto`` is uvloop where it is installed."""
    accounts: tuple[AccountEntry, ...] = ()
    path: Path | None = Field(default=None, exclude=True)

    @field_validator("database_url")
    @classmethod
    def _valid_database(cls, value: str) -> str:
        async_url(value)  # raises ConfigError naming the field
        return value

    @field_validator("public_url")
    @classmethod
    def _valid_public_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError("must be an absolute http(s) URL, e.g. https://tidings.example.com")
        return value.rstrip("/")

    @field_validator("accounts")
    @classmethod
    def _unique_ids(cls, value: tuple[AccountEntry, ...]) -> tuple[AccountEntry, ...]:
        seen: set[str] = set()
        for entry in value:
            if entry.id in seen:
                raise ValueError(f"account id {entry.id!r} is used twice")
            seen.add(entry.id)
        return value

    def account_entry(self, account_id: str) -> AccountEntry:
        for entry in self.accounts:
            if entry.id == account_id:
                return entry
        known = ", ".join(e.id for e in self.accounts) or "none configured"
        raise ConfigError(f"no such account (known: {known})", account=account_id)


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def _expand(value: Any, env: Mapping[str, str], where: list[str]) -> Any:
    if isinstance(value, str):
        match = _ENV_REF.match(value)
        if match:
            name = match.group(1)
            if name not in env:
                raise _located(f"environment variable {name} is not set", where)
            return env[name]
        return value
    if isinstance(value, dict):
        return {k: _expand(v, env, [*where, k]) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env, [*where, str(i)]) for i, v in enumerate(value)]
    return value


def _located(message: str, where: list[str]) -> ConfigError:
    if len(where) >= 3 and where[0] == "accounts":
        return ConfigError(message, account=where[1], field=".".join(where[2:]))
    return ConfigError(message, field=".".join(where) or None)


def _error_from_validation(exc: ValidationError, data: Mapping[str, Any]) -> ConfigError:
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"]]
    if len(loc) >= 2 and loc[0] == "accounts":
        index = int(loc[1])
        entries = data.get("accounts", [])
        account_id = entries[index].get("id", f"#{index + 1}") if index < len(entries) else None
        return ConfigError(first["msg"], account=str(account_id), field=".".join(loc[2:]) or None)
    return ConfigError(first["msg"], field=".".join(loc) or None)


def parse_config(
    data: Mapping[str, Any], env: Mapping[str, str] | None = None, path: Path | None = None
) -> Config:
    env = os.environ if env is None else env
    accounts = data.get("accounts", [])
    if not isinstance(accounts, list):
        raise ConfigError("must be a list of [[accounts]] tables", field="accounts")
    expanded: dict[str, Any] = {}
    for key, value in data.items():
        if key == "accounts":
            expanded[key] = [
                _expand(entry, env, ["accounts", str(entry.get("id", f"#{i + 1}"))])
                if isinstance(entry, dict)
                else entry
                for i, entry in enumerate(accounts)
            ]
        else:
            expanded[key] = _expand(value, env, [key])
    overrides = (("database_url", "TIDINGS_DATABASE_URL"), ("public_url", "TIDINGS_PUBLIC_URL"))
    for key, var in overrides:
        if env.get(var):
            expanded[key] = env[var]
    if path is not None and "database_url" in expanded:
        expanded["database_url"] = _anchor_sqlite(str(expanded["database_url"]), path.parent)
    elif path is not None:
        expanded["database_url"] = _anchor_sqlite(DEFAULT_DATABASE_URL, path.parent)
    try:
        return Config.model_validate({**expanded, "path": path})
    except ValidationError as exc:
        raise _error_from_validation(exc, expanded) from None


def _anchor_sqlite(url: str, base: Path) -> str:
    """Relative SQLite paths are relative to the config file, not the current directory."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////"):
        rest = url[len(prefix) :]
        if rest and rest != ":memory:" and not rest.startswith(":"):
            return prefix + str((base / rest).resolve())
    return url


def load_config(
    path: Path | None = None, env: Mapping[str, str] | None = None, *, required: bool = True
) -> Config:
    """Read and validate the configuration file (``TIDINGS_CONFIG`` or ``./tidings.toml``)."""
    env = os.environ if env is None else env
    path = path or config_path(env)
    if not path.exists():
        if required:
            raise ConfigError(f"no configuration file at {path}: run `tidings init` to create one")
        return parse_config({}, env, path.absolute())
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(data, env, path.absolute())


def build_account(entry: AccountEntry, config: Config, plugins: Plugins) -> Account[Any]:
    """Validate one account's settings with its channel's model."""
    if entry.channel not in plugins.channels:
        installed = ", ".join(sorted(plugins.channels)) or "none"
        raise UnknownChannel(
            f"channel {entry.channel!r} is not installed (installed channels: {installed})",
            account=entry.id,
            field="channel",
        )
    model: type[ChannelSettings] = plugins.channel(entry.channel).channel.settings_model
    try:
        settings = model.model_validate(entry.settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise ConfigError(first["msg"], account=entry.id, field=field) from None
    return Account[Any](
        id=entry.id,
        channel=entry.channel,
        project=entry.project,
        settings=settings,
        public_url=config.public_url,
    )


def build_accounts(config: Config, plugins: Plugins) -> dict[str, Account[Any]]:
    return {entry.id: build_account(entry, config, plugins) for entry in config.accounts}


STARTER_CONFIG = """\
# tidings configuration. Reference: docs/configuration.md
#
# The embedded default store is a SQLite file next to this one. For several servers or
# workers, use PostgreSQL: database_url = "postgresql://user@host/dbname"
database_url = "sqlite:///./tidings.db"

# The base URL providers use to reach this server (webhook signatures are computed on it).
# Behind a proxy or tunnel, set the external https URL here.
public_url = "http://127.0.0.1:8000"

[server]
host = "127.0.0.1"
port = 8000
max_body_bytes = 10485760

# One [[accounts]] table per mailbox, number or page. `channel` names an installed channel
# (see `tidings plugins`); the other keys are that channel's settings. Secrets can come from
# the environment: auth_token = "${TWILIO_AUTH_TOKEN}".
#
# [[accounts]]
# id = "support-sms"
# channel = "sms_twilio"
# project = "support"
# account_sid = "AC..."
# auth_token = "${TWILIO_AUTH_TOKEN}"
"""
