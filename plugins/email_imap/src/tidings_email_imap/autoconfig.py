"""``tidings email autoconfig ADDRESS``: find a mailbox's IMAP and SMTP servers.

Sources, in the order mail clients use them: the domain's own autoconfig server, its
``.well-known`` file, the Thunderbird ISPDB, the ISPDB entry of the domain's MX host, then
DNS SRV records (RFC 6186 and RFC 8314). The first source that names both an IMAP and an
SMTP server wins. HTTP and DNS are injectable so the discovery logic is testable offline.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from tidings.models import normalise_email
from tidings_email_imap.settings import Security, is_submission_only

ISPDB = "https://autoconfig.thunderbird.net/v1.1/"
_MAX_XML = 256 * 1024
_SOCKET_TYPES = {"ssl": Security.SSL, "tls": Security.SSL, "starttls": Security.STARTTLS,
                 "plain": Security.PLAIN}  # fmt: skip


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    security: Security
    username: str | None = None


@dataclass(frozen=True)
class MailConfig:
    imap: Server
    smtp: Server
    source: str

    def warnings(self) -> list[str]:
        out = []
        if self.smtp.port == 25 and is_submission_only(self.smtp.host):
            out.append(f"{self.smtp.host} refuses client submission on port 25: use 587 or 465")
        if Security.PLAIN in (self.imap.security, self.smtp.security):
            out.append("a server without TLS was offered: passwords would travel in clear")
        return out


class Resolver(Protocol):
    """DNS lookups: records of ``rdtype`` for ``name`` (dnspython's rdata objects)."""

    async def resolve(self, name: str, rdtype: str) -> Sequence[Any]: ...


class DnsPythonResolver:
    async def resolve(self, name: str, rdtype: str) -> Sequence[Any]:
        import dns.asyncresolver
        import dns.exception

        try:
            answer = await dns.asyncresolver.resolve(name, rdtype, lifetime=10)
        except dns.exception.DNSException:
            return []
        return list(answer)


def _expand(text: str, address: str) -> str:
    local, _, domain = address.rpartition("@")
    return (
        text.replace("%EMAILADDRESS%", address)
        .replace("%EMAILLOCALPART%", local)
        .replace("%EMAILDOMAIN%", domain)
    )


def _server(node: ET.Element, address: str) -> Server | None:
    host = (node.findtext("hostname") or "").strip()
    port = (node.findtext("port") or "").strip()
    socket_type = (node.findtext("socketType") or "").strip().lower()
    if not host or not port.isdigit() or socket_type not in _SOCKET_TYPES:
        return None
    username = node.findtext("username")
    return Server(
        host=_expand(host, address),
        port=int(port),
        security=_SOCKET_TYPES[socket_type],
        username=_expand(username.strip(), address) if username else None,
    )


def _rank(server: Server) -> int:
    return {Security.SSL: 0, Security.STARTTLS: 1, Security.PLAIN: 2}[server.security]


def parse_config_xml(data: bytes, address: str, source: str) -> MailConfig | None:
    """Read Thunderbird's ``clientConfig`` v1.1 format; prefer TLS servers."""
    if len(data) > _MAX_XML:
        return None
    try:
        # Expat refuses external entities and bounds entity expansion; size is capped above.
        root = ET.fromstring(data)  # noqa: S314
    except ET.ParseError:
        return None
    provider = root.find("emailProvider")
    if root.tag != "clientConfig" or provider is None:
        return None
    imaps = [
        s
        for n in provider.findall("incomingServer")
        if n.get("type") == "imap" and (s := _server(n, address))
    ]
    smtps = [
        s
        for n in provider.findall("outgoingServer")
        if n.get("type") == "smtp" and (s := _server(n, address))
    ]
    if not imaps or not smtps:
        return None
    # Documents list servers in preference order; among them, TLS beats plain text.
    imap = min(imaps, key=_rank)
    smtp = min(smtps, key=lambda s: (_rank(s), s.port == 25))
    return MailConfig(imap=imap, smtp=smtp, source=source)


async def _fetch(client: httpx.AsyncClient, url: str) -> bytes | None:
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return response.content


def _base_domain(host: str) -> str:
    labels = host.rstrip(".").lower().split(".")
    return ".".join(labels[-2:]) if len(labels) >= 2 else host


async def _srv(resolver: Resolver, name: str) -> tuple[str, int] | None:
    records = [r for r in await resolver.resolve(name, "SRV") if str(r.target).rstrip(".")]
    if not records:
        return None
    best = min(records, key=lambda r: (int(r.priority), -int(r.weight)))
    return str(best.target).rstrip("."), int(best.port)


async def discover(
    address: str,
    *,
    client: httpx.AsyncClient | None = None,
    resolver: Resolver | None = None,
) -> MailConfig | None:
    """The first configuration found for ``address``, or None."""
    address = normalise_email(address)
    domain = address.rpartition("@")[2]
    resolver = resolver or DnsPythonResolver()
    owned = client is None
    http = client or httpx.AsyncClient(timeout=10, follow_redirects=True)
    try:
        candidates = [
            (f"https://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={quote(address)}",
             f"autoconfig.{domain}"),
            (f"https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml",
             f"{domain}/.well-known"),
            (ISPDB + domain, "Thunderbird ISPDB"),
        ]  # fmt: skip
        for url, source in candidates:
            data = await _fetch(http, url)
            if data and (config := parse_config_xml(data, address, source)):
                return config
        mx = sorted(await resolver.resolve(domain, "MX"), key=lambda r: int(r.preference))
        if mx:
            mx_domain = _base_domain(str(mx[0].exchange))
            if mx_domain != domain:
                data = await _fetch(http, ISPDB + mx_domain)
                if data and (config := parse_config_xml(data, address, f"ISPDB ({mx_domain})")):
                    return config
    finally:
        if owned:
            await http.aclose()
    imap = await _srv(resolver, f"_imaps._tcp.{domain}")
    imap_security = Security.SSL
    if imap is None:
        imap, imap_security = await _srv(resolver, f"_imap._tcp.{domain}"), Security.STARTTLS
    smtp = await _srv(resolver, f"_submissions._tcp.{domain}")
    smtp_security = Security.SSL
    if smtp is None:
        smtp, smtp_security = await _srv(resolver, f"_submission._tcp.{domain}"), Security.STARTTLS
    if imap is None or smtp is None:
        return None
    return MailConfig(
        imap=Server(imap[0], imap[1], imap_security, address),
        smtp=Server(smtp[0], smtp[1], smtp_security, address),
        source="DNS SRV",
    )


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_toml(config: MailConfig, address: str, *, project: str = "support") -> str:
    """A ready ``[[accounts]]`` block; the password is read from the environment."""
    account_id = re.sub(r"[^A-Za-z0-9_.-]+", "-", address.replace("@", "-at-")).strip("-")
    env = re.sub(r"[^A-Z0-9]+", "_", address.upper()).strip("_") + "_PASSWORD"
    lines = [
        f"# found via {config.source}",
        *(f"# warning: {w}" for w in config.warnings()),
        "[[accounts]]",
        f"id = {_toml(account_id[:100])}",
        'channel = "email_imap"',
        f"project = {_toml(project)}",
        f"address = {_toml(address)}",
        f"imap_host = {_toml(config.imap.host)}",
        f"imap_port = {config.imap.port}",
        f"imap_security = {_toml(config.imap.security.value)}",
    ]
    if config.imap.username and config.imap.username != address:
        lines.append(f"imap_username = {_toml(config.imap.username)}")
    lines += [
        f'imap_password = "${{{env}}}"',
        f"smtp_host = {_toml(config.smtp.host)}",
        f"smtp_port = {config.smtp.port}",
        f"smtp_security = {_toml(config.smtp.security.value)}",
    ]
    if config.smtp.username and config.smtp.username not in (address, config.imap.username):
        lines.append(f"smtp_username = {_toml(config.smtp.username)}")
    return "\n".join(lines) + "\n"
