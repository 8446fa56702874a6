"""tidings email autoconfig: discovery order, the Thunderbird XML format, the TOML block."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx
import typer
from typer.testing import CliRunner

from tidings_email_imap import EmailSettings
from tidings_email_imap.autoconfig import ISPDB, discover, to_toml
from tidings_email_imap.plugin import register_commands
from tidings_email_imap.settings import Security

pytestmark = pytest.mark.anyio

CONFIG_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="example.org">
    <domain>example.org</domain>
    <displayName>Example Mail</displayName>
    <incomingServer type="pop3">
      <hostname>pop.example.org</hostname>
      <port>995</port>
      <socketType>SSL</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <incomingServer type="imap">
      <hostname>imap.example.org</hostname>
      <port>143</port>
      <socketType>plain</socketType>
      <username>%EMAILLOCALPART%</username>
      <authentication>password-cleartext</authentication>
    </incomingServer>
    <incomingServer type="imap">
      <hostname>imap.example.org</hostname>
      <port>993</port>
      <socketType>SSL</socketType>
      <username>%EMAILLOCALPART%</username>
      <authentication>password-cleartext</authentication>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.%EMAILDOMAIN%</hostname>
      <port>587</port>
      <socketType>STARTTLS</socketType>
      <username>%EMAILADDRESS%</username>
      <authentication>password-cleartext</authentication>
    </outgoingServer>
  </emailProvider>
</clientConfig>
"""

GMAIL_XML = b"""<?xml version="1.0"?>
<clientConfig version="1.1">
  <emailProvider id="googlemail.com">
    <domain>gmail.com</domain>
    <incomingServer type="imap">
      <hostname>imap.gmail.com</hostname><port>993</port><socketType>SSL</socketType>
      <username>%EMAILADDRESS%</username><authentication>OAuth2</authentication>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.gmail.com</hostname><port>465</port><socketType>SSL</socketType>
      <username>%EMAILADDRESS%</username><authentication>OAuth2</authentication>
    </outgoingServer>
  </emailProvider>
</clientConfig>
"""


@dataclass
class Srv:
    priority: int
    weight: int
    port: int
    target: str


@dataclass
class Mx:
    preference: int
    exchange: str


class FakeResolver:
    """A DNS double answering from a table (the tests have no network)."""

    def __init__(self, records: dict[tuple[str, str], list[Any]]) -> None:
        self.records = records
        self.asked: list[tuple[str, str]] = []

    async def resolve(self, name: str, rdtype: str) -> Sequence[Any]:
        self.asked.append((name, rdtype))
        return self.records.get((name, rdtype), [])


async def test_autoconfig_host_first_and_placeholders() -> None:
    with respx.mock(assert_all_called=False) as mock:
        first = mock.get("https://autoconfig.example.org/mail/config-v1.1.xml").mock(
            return_value=httpx.Response(200, content=CONFIG_XML)
        )
        well_known = mock.get("https://example.org/.well-known/autoconfig/mail/config-v1.1.xml")
        async with httpx.AsyncClient() as client:
            config = await discover("Jan@Example.org", client=client, resolver=FakeResolver({}))
    assert first.called
    assert first.calls[0].request.url.params["emailaddress"] == "Jan@example.org"
    assert not well_known.called
    assert config is not None
    assert config.source == "autoconfig.example.org"
    assert (config.imap.host, config.imap.port, config.imap.security) == (
        "imap.example.org", 993, Security.SSL,
    )  # fmt: skip
    assert config.imap.username == "Jan"
    assert (config.smtp.host, config.smtp.port, config.smtp.security) == (
        "smtp.example.org", 587, Security.STARTTLS,
    )  # fmt: skip


async def test_falls_through_to_ispdb_of_the_mx_domain() -> None:
    resolver = FakeResolver({("corp.example", "MX"): [Mx(10, "alt1.aspmx.l.google.com."),
                                                     Mx(1, "aspmx.l.google.com.")]})  # fmt: skip
    with respx.mock(assert_all_called=False) as mock:
        mock.get(url__startswith="https://autoconfig.corp.example/").mock(
            side_effect=httpx.ConnectError("no such host")
        )
        mock.get("https://corp.example/.well-known/autoconfig/mail/config-v1.1.xml").mock(
            return_value=httpx.Response(404)
        )
        mock.get(ISPDB + "corp.example").mock(return_value=httpx.Response(404))
        mock.get(ISPDB + "google.com").mock(return_value=httpx.Response(200, content=GMAIL_XML))
        async with httpx.AsyncClient() as client:
            config = await discover("ania@corp.example", client=client, resolver=resolver)
    assert config is not None
    assert config.source == "ISPDB (google.com)"
    assert (config.imap.host, config.smtp.host, config.smtp.port) == (
        "imap.gmail.com", "smtp.gmail.com", 465,
    )  # fmt: skip


async def test_dns_srv_last_and_toml_block_validates() -> None:
    resolver = FakeResolver({
        ("_imaps._tcp.small.example", "SRV"): [Srv(10, 0, 993, "mail.small.example."),
                                               Srv(0, 5, 993, "imap.small.example.")],
        ("_submission._tcp.small.example", "SRV"): [Srv(0, 1, 587, "smtp.small.example.")],
        ("_submissions._tcp.small.example", "SRV"): [Srv(0, 0, 0, ".")],  # "not offered"
    })  # fmt: skip
    with respx.mock(assert_all_called=False) as mock:
        mock.route().mock(return_value=httpx.Response(404))
        async with httpx.AsyncClient() as client:
            config = await discover("help@small.example", client=client, resolver=resolver)
    assert config is not None
    assert config.source == "DNS SRV"
    assert (config.imap.host, config.imap.security) == ("imap.small.example", Security.SSL)
    assert (config.smtp.host, config.smtp.port, config.smtp.security) == (
        "smtp.small.example", 587, Security.STARTTLS,
    )  # fmt: skip
    block = to_toml(config, "help@small.example")
    (entry,) = tomllib.loads(block)["accounts"]
    assert entry["channel"] == "email_imap"
    assert entry["imap_password"] == "${HELP_SMALL_EXAMPLE_PASSWORD}"
    settings = {k: v for k, v in entry.items() if k not in ("id", "channel", "project")}
    settings["imap_password"] = "from-env"
    EmailSettings.model_validate(settings)  # the printed block is a valid account


async def test_nothing_found() -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.route().mock(return_value=httpx.Response(200, content=b"<html>not xml"))
        async with httpx.AsyncClient() as client:
            assert (
                await discover("a@none.example", client=client, resolver=FakeResolver({})) is None
            )


def test_port_25_warning_for_big_providers() -> None:
    from tidings_email_imap.autoconfig import MailConfig, Server

    config = MailConfig(
        imap=Server("outlook.office365.com", 993, Security.SSL),
        smtp=Server("smtp.office365.com", 25, Security.PLAIN),
        source="test",
    )
    warnings = config.warnings()
    assert any("port 25" in w for w in warnings)
    assert "# warning: smtp.office365.com refuses client submission on port 25" in to_toml(
        config, "a@contoso.example"
    )


def test_cli_prints_the_block() -> None:
    cli = typer.Typer()
    register_commands(cli)
    with respx.mock(assert_all_called=False) as mock:
        mock.get(url__startswith="https://autoconfig.example.org/").mock(
            return_value=httpx.Response(200, content=CONFIG_XML)
        )
        result = CliRunner().invoke(cli, ["email", "autoconfig", "jan@example.org"])
    assert result.exit_code == 0, result.output
    assert 'imap_host = "imap.example.org"' in result.output
    assert "[[accounts]]" in result.output
