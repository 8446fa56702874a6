"""Real mail servers for tests: Dovecot (IMAP, IMAPS, LMTP) and an SMTP server in front.

Loaded as a pytest plugin (``-p tidings.testing.mailservers``). It provides:

* ``imap_server`` (session scope): a started :class:`DovecotServer` — a private Dovecot
  listening on 127.0.0.1 with plain IMAP (STARTTLS offered), implicit-TLS IMAP and LMTP
  on free ports, a self-signed certificate (``ca_file``), users from a passwd-file with
  fixed passwords, Maildir storage in a temporary directory;
* ``smtp_server`` (session scope): a started :class:`SmtpServer` — real SMTP (aiosmtpd,
  STARTTLS and AUTH offered) that hands every accepted message to Dovecot over LMTP, so
  what is sent arrives in the recipients' INBOX. Recipients in ``reject`` get
  ``550 5.1.1``, those in ``tempfail`` get ``451 4.3.0``, unknown users ``550 5.1.1``;
* ``mail_user`` (function scope): a fresh mailbox user for one test, so tests never see
  each other's mail.

Why a real Dovecot: IMAP clients break on details (literals, UID ranges, UIDVALIDITY,
IDLE, SPECIAL-USE) that a fake server would only imitate. Dovecot refuses to run its
login processes as root, so when the session runs as root Dovecot keeps its default
unprivileged login users (``dovenull``, ``dovecot``) and mail is owned by the non-root
``dovecot`` user; otherwise everything runs as the current user.

Tests that need these servers never skip: when Dovecot is missing they fail, telling you
to run ``scripts/system-packages``.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import pwd
import re
import secrets
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "DOMAIN",
    "DovecotServer",
    "MailServerError",
    "MailUser",
    "SmtpServer",
    "imap_server",
    "mail_user",
    "running_mail_servers",
    "smtp_server",
]

DOMAIN = "example.test"
_HINT = "run `scripts/system-packages` (as root) to install dovecot-imapd and dovecot-lmtpd"
_DIR_PREFIX = "tidings-mail-"
_START_TIMEOUT = 30.0
_MAIL_USER = "dovecot"  # the non-root owner of the mail when the session runs as root


class MailServerError(RuntimeError):
    """A test mail server could not be found, started or used."""


@dataclass(frozen=True)
class MailUser:
    """A mailbox on the test Dovecot: log in with ``address`` and ``password``."""

    address: str
    password: str

    @property
    def username(self) -> str:
        return self.address


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        time.sleep(0.05)
    return False


def find_dovecot() -> Path:
    """The ``dovecot`` master binary, or :class:`MailServerError` naming the fix."""
    for candidate in (shutil.which("dovecot"), "/usr/sbin/dovecot"):
        if candidate and Path(candidate).is_file():
            lmtp = Path("/usr/lib/dovecot/lmtp")
            if not lmtp.is_file():
                raise MailServerError(f"Dovecot's LMTP server ({lmtp}) is missing; {_HINT}")
            return Path(candidate)
    raise MailServerError(f"the dovecot binary was not found; {_HINT}")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost (also the CA tests trust)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = shutil.which("openssl")
    if openssl is None:
        raise MailServerError(f"openssl is missing; {_HINT}")
    result = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if result.returncode != 0:
        raise MailServerError(f"openssl could not make a test certificate: {result.stderr}")
    return cert, key


_CONFIG = """\
# Written by tidings.testing.mailservers for one test session.
base_dir = {base}/run
state_dir = {base}/state
instance_name = {instance}
log_path = {base}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
{users}
first_valid_uid = 1
first_valid_gid = 1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = 0
mail_location = maildir:~/Maildir
mail_fsync = never
mailbox_list_index = no
imap_idle_notify_interval = 1 secs
verbose_proctitle = no
shutdown_clients = yes
# One passwd-file per user: a file Dovecot has never seen cannot be stale in its cache
# (one shared file rewritten twice within a second may not be re-read).
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu {base}/users/%Lu
}}
userdb {{
  driver = passwd-file
  args = username_format=%Lu {base}/users/%Lu
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = create
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = create
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
service managesieve-login {{
  inet_listener sieve {{
    port = 0
  }}
}}
protocol lmtp {{
  lmtp_save_to_detail_mailbox = no
}}
"""


class DovecotServer:
    """A private Dovecot for one test session (see the module docstring)."""

    def __init__(self, *, binary: Path | None = None) -> None:
        self._binary = binary
        self._dir: Path | None = None
        self._users: dict[str, MailUser] = {}
        self._lock = threading.Lock()
        self.imap_port = 0
        self.imaps_port = 0
        self.lmtp_port = 0
        self.host = "127.0.0.1"
        self.ca_file: Path | None = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(_MAIL_USER)
            except KeyError:
                raise MailServerError(
                    f"running as root, but there is no {_MAIL_USER!r} user to own the mail "
                    f"(Dovecot refuses root); {_HINT}"
                ) from None
            self._uid, self._gid = entry.pw_uid, entry.pw_gid
            self._login_users = ""  # keep Dovecot's defaults (dovenull, dovecot)
        else:
            self._uid, self._gid = os.getuid(), os.getgid()
            me = pwd.getpwuid(self._uid).pw_name
            self._login_users = f"default_internal_user = {me}\ndefault_login_user = {me}\n"

    # -- life cycle ---------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise MailServerError("the Dovecot server has not been started")
        return self._dir

    @property
    def log_file(self) -> Path:
        return self.directory / "dovecot.log"

    def start(self) -> None:
        binary = self._binary or find_dovecot()
        self._reap_stale()
        self._dir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        try:
            (self._dir / "owner.pid").write_text(f"{os.getpid()}\n")
            self._dir.chmod(0o755)  # Dovecot's unprivileged processes must traverse it
            for sub in ("mail", "state"):
                (self._dir / sub).mkdir()
                os.chown(self._dir / sub, self._uid, self._gid)
            cert, key = make_certificate(self._dir)
            self.ca_file = cert
            (self._dir / "users").mkdir()
            (self._dir / "users").chmod(0o755)
            self._start_on_free_ports(binary, cert, key)
        except BaseException:
            self.stop()
            raise

    def _start_on_free_ports(self, binary: Path, cert: Path, key: Path) -> None:
        assert self._dir is not None
        last = ""
        for _attempt in range(3):  # another process may take a port we picked
            self.imap_port, self.imaps_port, self.lmtp_port = (_free_port() for _ in range(3))
            conf = self._dir / "dovecot.conf"
            conf.write_text(
                _CONFIG.format(
                    base=self._dir, instance=self._dir.name, users=self._login_users,
                    cert=cert, key=key, imap_port=self.imap_port,
                    imaps_port=self.imaps_port, lmtp_port=self.lmtp_port,
                )
            )  # fmt: skip
            # The daemon's children inherit stdout/stderr: a pipe would never reach EOF.
            startup = self._dir / "startup.log"
            with startup.open("w") as out:
                result = subprocess.run(
                    [str(binary), "-c", str(conf)],
                    stdout=out, stderr=subprocess.STDOUT, timeout=60, check=False,
                    stdin=subprocess.DEVNULL,
                )  # fmt: skip
            last = startup.read_text(errors="replace") + self._log_tail()
            if result.returncode == 0 and all(
                _wait_port(p, _START_TIMEOUT) for p in (self.imap_port, self.lmtp_port)
            ):
                return
            self._kill_master()
            if "in use" not in last:
                break
        raise MailServerError(f"could not start Dovecot:\n{last}")

    def stop(self) -> None:
        """Stop Dovecot (by the pid in ``base_dir/master.pid``) and remove its directory."""
        if self._dir is None:
            return
        try:
            self._kill_master()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _kill_master(self, directory: Path | None = None) -> None:
        pid_file = (directory or self.directory) / "run" / "master.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _reap_stale(self) -> None:
        """Stop servers left behind by sessions that died without cleaning up."""
        for directory in Path(tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*"):
            try:
                owner = int((directory / "owner.pid").read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(owner, 0)
                continue  # still running: not ours to stop
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            self._kill_master(directory)
            shutil.rmtree(directory, ignore_errors=True)

    def _log_tail(self, limit: int = 5000) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except (OSError, MailServerError):
            return ""
        return f"\n--- dovecot log ---\n{text[-limit:]}" if text else ""

    # -- users --------------------------------------------------------------------------

    def add_user(self, local_part: str | None = None, password: str | None = None) -> MailUser:
        """Create a mailbox user (``local_part@example.test``); returns its credentials."""
        local = local_part or f"u{secrets.token_hex(5)}"
        if not re.fullmatch(r"[a-z0-9][a-z0-9._+-]{0,40}", local):
            raise ValueError(f"not a simple local part: {local!r}")
        user = MailUser(f"{local}@{DOMAIN}", password or secrets.token_urlsafe(12))
        home = self.directory / "mail" / user.address
        with self._lock:
            if user.address in self._users:
                return self._users[user.address]
            home.mkdir()
            os.chown(home, self._uid, self._gid)
            entry = self.directory / "users" / user.address
            entry.write_text(
                f"{user.address}:{{PLAIN}}{user.password}:{self._uid}:{self._gid}::{home}::\n"
            )
            entry.chmod(0o644)
            self._users[user.address] = user
        return user

    @property
    def users(self) -> dict[str, MailUser]:
        return dict(self._users)

    def has_user(self, address: str) -> bool:
        return address.lower() in self._users

    # -- IMAP helpers (blocking, stdlib imaplib: independent of the code under test) ------

    @contextlib.contextmanager
    def connect(self, user: MailUser) -> Iterator[imaplib.IMAP4]:
        """A logged-in stdlib IMAP connection for checking what the code under test did."""
        conn = imaplib.IMAP4(self.host, self.imap_port, timeout=30)
        try:
            conn.login(user.address, user.password)
            yield conn
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                conn.logout()

    def append(
        self,
        user: MailUser,
        raw: bytes,
        *,
        folder: str = "INBOX",
        flags: Sequence[str] = (),
    ) -> int:
        """IMAP APPEND ``raw`` to ``folder``; returns the new message's UID (APPENDUID)."""
        with self.connect(user) as conn:
            return self._append(conn, raw, folder, flags)

    def append_many(
        self,
        user: MailUser,
        raws: Sequence[bytes],
        *,
        folder: str = "INBOX",
        flags: Sequence[str] = (),
        batch_bytes: int = 8 * 1024 * 1024,
    ) -> list[int]:
        """APPEND every message of ``raws`` in order; returns their UIDs.

        One APPEND per message costs Dovecot a whole save transaction (a new file, a
        uidlist and index update) plus a round trip: seeding thousands of messages took
        minutes. MULTIAPPEND (RFC 3502) with non-synchronising literals (LITERAL+, RFC 7888)
        saves a batch in one transaction and one round trip, so large mailboxes for sync
        tests and benchmarks take seconds.
        """
        uids: list[int] = []
        with self.connect(user) as conn:
            batch: list[bytes] = []
            size = 0
            for raw in raws:
                if batch and size + len(raw) > batch_bytes:
                    uids += self._multiappend(conn, batch, folder, flags)
                    batch, size = [], 0
                batch.append(raw)
                size += len(raw)
            if batch:
                uids += self._multiappend(conn, batch, folder, flags)
        return uids

    @staticmethod
    def _multiappend(
        conn: imaplib.IMAP4, raws: Sequence[bytes], folder: str, flags: Sequence[str]
    ) -> list[int]:
        flag_text = ("(" + " ".join(flags) + ") ").encode() if flags else b""
        tag = b"M" + secrets.token_hex(4).encode()
        command = [tag, b" APPEND ", _quote(folder).encode()]
        for raw in raws:
            command += [b" ", flag_text, b"{%d+}\r\n" % len(raw), raw]
        conn.send(b"".join(command) + b"\r\n")
        answer = b""
        while True:  # untagged lines (EXISTS, RECENT) come first; the tagged one ends it
            line = conn.readline()
            if not line:
                raise MailServerError("the IMAP server closed the connection during APPEND")
            if line.startswith(tag + b" "):
                answer = line
                break
        if not answer.startswith(tag + b" OK"):
            raise MailServerError(f"APPEND to {folder} failed: {answer!r}")
        match = re.search(rb"APPENDUID \d+ ([\d:,]+)", answer)
        if match is None:
            raise MailServerError(f"APPEND gave no APPENDUID: {answer!r}")
        uids = _uid_set(match.group(1).decode())
        if len(uids) != len(raws):
            raise MailServerError(f"APPEND of {len(raws)} messages gave UIDs {answer!r}")
        return uids

    @staticmethod
    def _append(conn: imaplib.IMAP4, raw: bytes, folder: str, flags: Sequence[str]) -> int:
        flag_text = "(" + " ".join(flags) + ")" if flags else None
        typ, data = conn.append(_quote(folder), flag_text, None, raw)
        if typ != "OK":
            raise MailServerError(f"APPEND to {folder} failed: {data!r}")
        match = re.search(rb"APPENDUID \d+ (\d+)", b" ".join(d for d in data if d))
        if match is None:
            raise MailServerError(f"APPEND gave no APPENDUID: {data!r}")
        return int(match.group(1))

    def flags(self, user: MailUser, folder: str = "INBOX") -> dict[int, set[str]]:
        """UID → flags of every message in ``folder``."""
        with self.connect(user) as conn:
            typ, _ = conn.select(_quote(folder), readonly=True)
            if typ != "OK":
                raise MailServerError(f"cannot select {folder}")
            typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS)")
            out: dict[int, set[str]] = {}
            for line in data:
                if not isinstance(line, bytes):
                    continue
                uid = re.search(rb"UID (\d+)", line)
                flags = re.search(rb"FLAGS \(([^)]*)\)", line)
                if uid and flags:
                    out[int(uid.group(1))] = set(flags.group(1).decode().split())
            return out

    def messages(self, user: MailUser, folder: str = "INBOX") -> list[bytes]:
        """The raw bytes of every message in ``folder``, in UID order."""
        with self.connect(user) as conn:
            typ, _ = conn.select(_quote(folder), readonly=True)
            if typ != "OK":
                raise MailServerError(f"cannot select {folder}")
            typ, data = conn.uid("FETCH", "1:*", "(BODY.PEEK[])")
            return [part[1] for part in data if isinstance(part, tuple)]

    def uidvalidity(self, user: MailUser, folder: str = "INBOX") -> int:
        with self.connect(user) as conn:
            typ, data = conn.status(_quote(folder), "(UIDVALIDITY)")
            match = re.search(rb"UIDVALIDITY (\d+)", data[0] if data and data[0] else b"")
            if typ != "OK" or match is None:
                raise MailServerError(f"no UIDVALIDITY for {folder}: {data!r}")
            return int(match.group(1))

    def recreate_folder(self, user: MailUser, folder: str) -> None:
        """Delete and re-create ``folder``: the server gives it a new UIDVALIDITY."""
        with self.connect(user) as conn:
            conn.delete(_quote(folder))
            typ, data = conn.create(_quote(folder))
            if typ != "OK":
                raise MailServerError(f"cannot create {folder}: {data!r}")

    def kick(self, user: MailUser) -> None:
        """Disconnect every IMAP session of ``user`` (``doveadm kick``), as a network cut."""
        doveadm = shutil.which("doveadm") or "/usr/bin/doveadm"
        subprocess.run(
            [doveadm, "-c", str(self.directory / "dovecot.conf"), "kick", user.address],
            capture_output=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip


def _uid_set(text: str) -> list[int]:
    """``3:5,9`` → ``[3, 4, 5, 9]`` (an APPENDUID answer, RFC 4315)."""
    out: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition(":")
        low, high = sorted((int(first), int(last or first)))
        out.extend(range(low, high + 1))
    return out


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- SMTP -----------------------------------------------------------------------------------


@dataclass
class _Delivery:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None


@dataclass
class SmtpServer:
    """Real SMTP (aiosmtpd) on 127.0.0.1 delivering into Dovecot over LMTP.

    ``reject`` and ``tempfail`` hold recipient addresses answered ``550`` and ``451`` at
    RCPT; ``deliveries`` records every accepted transaction (envelope, bytes, AUTH login).
    """

    dovecot: DovecotServer
    host: str = "127.0.0.1"
    port: int = 0
    reject: set[str] = field(default_factory=set)
    tempfail: set[str] = field(default_factory=set)
    data_reply: str | None = None
    """When set, the reply to DATA instead of delivering (e.g. ``"452 4.3.1 full"``)."""
    deliveries: list[_Delivery] = field(default_factory=list)
    _controller: Any = None

    def start(self) -> None:
        try:
            from aiosmtpd.controller import Controller
            from aiosmtpd.smtp import AuthResult, LoginPassword
        except ImportError as exc:
            raise MailServerError(
                "aiosmtpd is not installed (a dev dependency of tidings-email-imap); "
                "run scripts/bootstrap"
            ) from exc

        server = self
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        directory = self.dovecot.directory
        tls.load_cert_chain(directory / "cert.pem", directory / "key.pem")

        def authenticate(
            srv: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
        ) -> Any:
            if isinstance(auth_data, LoginPassword):
                login = auth_data.login.decode()
                user = server.dovecot.users.get(login.lower())
                if user is not None and auth_data.password.decode() == user.password:
                    return AuthResult(success=True, auth_data=login)
            return AuthResult(success=False, handled=False)

        class Handler:
            async def handle_RCPT(
                self, srv: Any, session: Any, envelope: Any, address: str, options: Any
            ) -> str:
                key = address.lower()
                if key in server.tempfail:
                    return "451 4.3.0 Temporary failure, try again later"
                if key in server.reject or not server.dovecot.has_user(key):
                    return f"550 5.1.1 <{address}>: Recipient address rejected: no such user"
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 OK"

            async def handle_DATA(self, srv: Any, session: Any, envelope: Any) -> str:
                if server.data_reply is not None:
                    return server.data_reply
                data = bytes(envelope.original_content or envelope.content)
                login = session.auth_data if isinstance(session.auth_data, str) else None
                loop = asyncio.get_running_loop()
                try:
                    await loop.run_in_executor(
                        None, server._lmtp, envelope.mail_from, list(envelope.rcpt_tos), data
                    )
                except (smtplib.SMTPException, OSError) as exc:
                    return f"451 4.3.0 LMTP delivery failed: {exc}"
                server.deliveries.append(
                    _Delivery(envelope.mail_from, list(envelope.rcpt_tos), data, login)
                )
                return "250 2.0.0 OK delivered"

        for _attempt in range(3):
            port = _free_port()
            controller = Controller(
                Handler(), hostname=self.host, port=port, tls_context=tls,
                require_starttls=False, auth_required=False, auth_require_tls=True,
                authenticator=authenticate, server_hostname="localhost",
                decode_data=False, data_size_limit=50 * 1024 * 1024,
            )  # fmt: skip
            try:
                controller.start()
            except (OSError, RuntimeError):
                continue
            self._controller, self.port = controller, port
            return
        raise MailServerError("could not start the test SMTP server on a free port")

    def _lmtp(self, mail_from: str, rcpt_tos: list[str], data: bytes) -> None:
        # LMTP answers DATA once per recipient, which smtplib does not read: one
        # transaction per recipient keeps the replies in step.
        with smtplib.LMTP(self.dovecot.host, self.dovecot.lmtp_port, timeout=30) as lmtp:
            for rcpt in rcpt_tos:
                refused = lmtp.sendmail(mail_from, [rcpt], data)
                if refused:
                    raise smtplib.SMTPRecipientsRefused(refused)

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def reset(self) -> None:
        """Forget per-test rules and records."""
        self.reject.clear()
        self.tempfail.clear()
        self.data_reply = None
        self.deliveries.clear()


# -- outside pytest -------------------------------------------------------------------------


@contextlib.contextmanager
def running_mail_servers(
    *, smtp: bool = False
) -> Iterator[tuple[DovecotServer, SmtpServer | None]]:
    """The fixtures' servers for scripts (benchmarks, demos): started, then stopped.

    The same code as the fixtures, so a benchmark measures against exactly the Dovecot the
    tests use. Raises :class:`MailServerError` naming the fix when Dovecot is missing.
    """
    dovecot = DovecotServer()
    dovecot.start()
    mta = SmtpServer(dovecot) if smtp else None
    try:
        if mta is not None:
            mta.start()
        yield dovecot, mta
    finally:
        try:
            if mta is not None:
                mta.stop()
        finally:
            dovecot.stop()


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def imap_server() -> Iterator[DovecotServer]:
    """A running Dovecot for the whole session (see the module docstring)."""
    try:
        server = DovecotServer()
        server.start()
    except MailServerError as exc:
        pytest.fail(f"tidings.testing.mailservers: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def smtp_server(imap_server: DovecotServer) -> Iterator[SmtpServer]:
    """A running SMTP server delivering into ``imap_server`` (see the module docstring)."""
    server = SmtpServer(imap_server)
    try:
        server.start()
    except MailServerError as exc:
        pytest.fail(f"tidings.testing.mailservers: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mail_user(imap_server: DovecotServer) -> MailUser:
    """A new, empty mailbox for this test."""
    return imap_server.add_user()
