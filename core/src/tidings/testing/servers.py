"""Real servers for tests: a throwaway PostgreSQL server for the test session.

Loaded as a pytest plugin (``-p tidings.testing.servers``, set in the root pytest
``addopts``). It provides:

* ``postgres_server`` (session scope): a started :class:`PostgresServer`;
* ``postgres_url`` (function scope): the URL of a fresh, empty database that is dropped
  after the test.

The server is a private cluster made with ``initdb`` in a temporary directory, listening
only on 127.0.0.1 on a free port, tuned for speed (no fsync), and removed at the end of
the session. Set ``TIDINGS_TEST_POSTGRES_URL`` (e.g. ``postgresql://me@host:5432/postgres``)
to use an existing server instead; its user must be allowed to create databases.

Tests that need PostgreSQL never skip: when the server binaries are missing they fail,
telling you to run ``scripts/system-packages``. Every test using these fixtures gets the
``postgres`` marker, so ``-m "not postgres"`` deselects them explicitly.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

__all__ = [
    "ENV_URL",
    "PostgresServer",
    "PostgresServerError",
    "find_postgres_bindir",
    "postgres_server",
    "postgres_url",
]

ENV_URL = "TIDINGS_TEST_POSTGRES_URL"
"""Environment variable: the URL of an existing server to use instead of starting one."""

SUPERUSER = "tidings"
_SYSTEM_USER = "postgres"  # PostgreSQL refuses to run as root; we run it as this user.
_DIR_PREFIX = "tidings-pg-"
_OWNER_FILE = "owner.pid"
_HINT = "run `scripts/system-packages` (as root) to install the PostgreSQL server"
_START_TIMEOUT = 60  # seconds
_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "log_min_messages": "warning",
}
_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresServerError(RuntimeError):
    """The test PostgreSQL server could not be found, started or used."""


def find_postgres_bindir() -> Path:
    """Find the directory holding ``initdb`` and ``pg_ctl``.

    Tries ``pg_config --bindir``, then the newest ``/usr/lib/postgresql/*/bin`` (Debian),
    then ``PATH``. Raises :class:`PostgresServerError` when none has both programs.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
            if out:
                candidates.append(Path(out))

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresServerError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found "
        f"(looked in: {', '.join(map(str, candidates)) or 'nothing'}); {_HINT}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _with_database(url: str, name: str) -> str:
    """``url`` with its database (the path) replaced by ``name``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


class PostgresServer:
    """A throwaway PostgreSQL server, or an existing one named by a URL.

    ``PostgresServer()`` makes a private cluster on ``start()`` and removes it on
    ``stop()``; ``PostgresServer(external_url=...)`` uses that server and never starts or
    stops anything. Also usable as a context manager.
    """

    def __init__(self, *, external_url: str | None = None, bindir: Path | None = None) -> None:
        self._external_url = external_url
        self._bindir = bindir
        self._dir: Path | None = None
        self._port: int | None = None
        self._running = False
        self._run_as: str | None = _SYSTEM_USER if os.geteuid() == 0 else None

    @classmethod
    def from_environment(cls) -> PostgresServer:
        """Use ``$TIDINGS_TEST_POSTGRES_URL`` when set, else a throwaway server."""
        url = os.environ.get(ENV_URL, "").strip()
        return cls(external_url=url or None)

    # -- properties ---------------------------------------------------------------------

    @property
    def is_external(self) -> bool:
        return self._external_url is not None

    @property
    def running(self) -> bool:
        return self._running

    @property
    def port(self) -> int:
        if self._external_url is not None:
            port = urlsplit(self._external_url).port
            return port if port is not None else 5432
        if self._port is None:
            raise PostgresServerError("the PostgreSQL server has not been started")
        return self._port

    @property
    def url(self) -> str:
        """URL of the server's ``postgres`` database (the maintenance database)."""
        if self._external_url is not None:
            return self._external_url
        if not self._running:
            raise PostgresServerError("the PostgreSQL server is not running")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def directory(self) -> Path | None:
        """The temporary directory holding the cluster (``None`` when external)."""
        return self._dir

    @property
    def log_file(self) -> Path | None:
        return None if self._dir is None else self._dir / "server.log"

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Make and start the cluster (for an external server: check it answers)."""
        if self._running:
            return
        if self._external_url is not None:
            try:
                with psycopg.connect(self._external_url, connect_timeout=10) as conn:
                    conn.execute("select 1")
            except psycopg.Error as exc:
                raise PostgresServerError(
                    f"cannot connect to ${ENV_URL} ({self._external_url}): {exc}"
                ) from exc
            self._running = True
            return

        bindir = self._bindir or find_postgres_bindir()
        self._bindir = bindir
        owner = self._owner_ids()
        base = Path("/tmp") if owner is not None else Path(tempfile.gettempdir())  # noqa: S108
        self._reap_stale(base)
        self._dir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX, dir=base))
        try:
            (self._dir / _OWNER_FILE).write_text(f"{os.getpid()}\n")
            if owner is not None:
                os.chown(self._dir, *owner)
            data = self._dir / "data"
            self._run(
                "initdb",
                ["-D", str(data), "-A", "trust", "-U", SUPERUSER, "--encoding=UTF8",
                 "--locale=C", "--no-sync"],
            )  # fmt: skip
            settings = {**_SETTINGS, "unix_socket_directories": str(self._dir)}
            with (data / "postgresql.conf").open("a") as conf:
                conf.write("\n# tidings.testing.servers\n")
                for key, value in settings.items():
                    conf.write(f"{key} = '{value}'\n")
            self._start_on_free_port(data)
        except BaseException:
            self._remove_dir()
            raise
        self._running = True

    def stop(self) -> None:
        """Stop the cluster at once and remove its directory (no-op when external)."""
        if self._external_url is not None:
            self._running = False
            return
        if self._dir is None:
            return
        try:
            if self._running:
                self._pg_ctl_stop(self._dir / "data")
        finally:
            self._running = False
            self._remove_dir()

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- databases ----------------------------------------------------------------------

    def database_url(self, name: str) -> str:
        return _with_database(self.url, name)

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (lower-case identifier); return its URL."""
        self._check_name(name)
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, ending any connections still open to it."""
        self._check_name(name)
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _check_name(name: str) -> None:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"not a valid database name for tests: {name!r}")

    def _owner_ids(self) -> tuple[int, int] | None:
        """(uid, gid) to own the cluster when we run it as another user, else None."""
        if self._run_as is None:
            return None
        try:
            entry = pwd.getpwnam(self._run_as)
        except KeyError:
            raise PostgresServerError(
                f"running as root, but there is no {self._run_as!r} user to run PostgreSQL "
                f"as (PostgreSQL refuses to run as root); {_HINT}"
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _command(self, program: str, args: Sequence[str]) -> list[str]:
        assert self._bindir is not None
        cmd = [str(self._bindir / program), *args]
        if self._run_as is not None:
            cmd = ["runuser", "-u", self._run_as, "--", *cmd]
        return cmd

    def _run(
        self, program: str, args: Sequence[str], *, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        cmd = self._command(program, args)
        try:
            result = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self._dir,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresServerError(f"{' '.join(cmd)} failed: {exc}{self._log_tail()}") from exc
        if result.returncode != 0:
            raise PostgresServerError(
                f"{' '.join(cmd)} exited {result.returncode}\n"
                f"--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}"
                f"{self._log_tail()}"
            )
        return result

    def _start_on_free_port(self, data: Path) -> None:
        assert self.log_file is not None
        error: PostgresServerError | None = None
        for _attempt in range(3):  # another process may grab the port we picked
            port = _free_port()
            try:
                self._run(
                    "pg_ctl",
                    ["start", "-w", "-t", str(_START_TIMEOUT), "-D", str(data),
                     "-l", str(self.log_file), "-o", f"-p {port}"],
                    timeout=_START_TIMEOUT + 30,
                )  # fmt: skip
            except PostgresServerError as exc:
                error = exc
                with contextlib.suppress(PostgresServerError):
                    self._pg_ctl_stop(data)
                if "already in use" not in self._read_log():
                    break
                continue
            self._port = port
            return
        assert error is not None
        raise PostgresServerError(f"could not start PostgreSQL: {error}")

    def _pg_ctl_stop(self, data: Path) -> None:
        self._run("pg_ctl", ["stop", "-w", "-m", "immediate", "-D", str(data)], timeout=60)

    def _read_log(self) -> str:
        log = self.log_file
        if log is None:
            return ""
        try:
            return log.read_text(errors="replace")
        except OSError:
            return ""

    def _log_tail(self, limit: int = 20_000) -> str:
        text = self._read_log()
        if not text:
            return ""
        return f"\n--- server log ({self.log_file}) ---\n{text[-limit:]}"

    def _remove_dir(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _reap_stale(self, base: Path) -> None:
        """Stop and remove clusters left by test sessions that died without cleaning up."""
        for directory in base.glob(f"{_DIR_PREFIX}*"):
            try:
                pid = int((directory / _OWNER_FILE).read_text().strip())
                if directory.stat().st_uid not in (os.geteuid(), *(self._owner_ids() or ())):
                    continue
            except (OSError, ValueError):
                continue
            if _pid_alive(pid):
                continue
            data = directory / "data"
            if (data / "postmaster.pid").exists():
                with contextlib.suppress(PostgresServerError):
                    self._pg_ctl_stop(data)
            shutil.rmtree(directory, ignore_errors=True)


def _database_name(nodename: str) -> str:
    stem = re.sub(r"[^a-z0-9]+", "_", nodename.lower()).strip("_")[:40]
    return f"t_{stem}_{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server for the whole session (see the module docstring)."""
    server = PostgresServer.from_environment()
    try:
        server.start()
    except PostgresServerError as exc:
        pytest.fail(f"tidings.testing.servers: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a new, empty database for this test; dropped afterwards."""
    name = _database_name(request.node.name)
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgres: needs the real PostgreSQL server started by the test session"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the PostgreSQL fixtures with ``postgres``."""
    for item in items:
        if {"postgres_server", "postgres_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
