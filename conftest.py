"""Fixtures shared by every test folder of the workspace.

* ``database_url`` / ``store``: each storage test runs twice, on a SQLite file and on a
  fresh database of the real PostgreSQL server (``tidings.testing.servers``).
* ``plugin_dists``: installs small plugin distributions (real ``.dist-info`` with entry
  points) on ``sys.path`` so loading, allow/block lists and uninstalling are tested through
  ``importlib.metadata`` exactly as in a deployment.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tidings import loop
from tidings.store import Store


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    # The loop deployments run on (uvloop where installed, ``tidings.loop``); SQLAlchemy's
    # async engine and its drivers need asyncio's interface, which uvloop implements.
    return loop.anyio_backend()


@pytest.fixture(params=["uvloop", "asyncio"])
def each_event_loop(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Both loops a deployment may run on, for the code that touches the loop itself
    (protocols, threads handing results back): a module opts in by defining
    ``anyio_backend`` as this fixture."""
    return loop.anyio_backend(request.param)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tidings.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = Store.open(database_url)
    await s.upgrade()
    try:
        yield s
    finally:
        await s.close()


class PluginDists:
    """Writes importable plugin distributions into a directory on ``sys.path``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[str] = []

    def add(self, dist: str, module: str, source: str, *, entry_point: str | None = None) -> Path:
        """Create distribution ``dist`` whose module ``module`` is registered as a plugin."""
        site = self.root / dist
        site.mkdir(parents=True)
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[tidings]\n{entry_point or module} = {module}\n")
        sys.path.insert(0, str(site))
        importlib.invalidate_caches()
        self.made.append(module)
        return site

    def uninstall(self, site: Path) -> None:
        sys.path.remove(str(site))
        importlib.invalidate_caches()
        for name in list(sys.modules):
            if (getattr(sys.modules[name], "__file__", None) or "").startswith(str(site)):
                del sys.modules[name]

    def cleanup(self) -> None:
        for entry in list(sys.path):
            if entry.startswith(str(self.root)):
                sys.path.remove(entry)
        for module in self.made:
            sys.modules.pop(module, None)
        importlib.invalidate_caches()


@pytest.fixture
def plugin_dists(tmp_path: Path) -> Iterator[PluginDists]:
    dists = PluginDists(tmp_path / "site")
    try:
        yield dists
    finally:
        dists.cleanup()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = tmp_path / "tidings.toml"
        path.write_text(textwrap.dedent(text))
        return path

    return write
