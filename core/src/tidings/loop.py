"""The event loop every tidings process runs on: uvloop where it is installed (a
dependency of ``tidings`` on CPython outside Windows), else asyncio's own.

Why uvloop by default: uvicorn already picks it whenever it is installed, so ``tidings
serve`` ran on uvloop or asyncio depending on what else happened to be installed; now every
command runs on one known loop, and the tests run on it too (a channel transport that
assumed asyncio's classes failed only there). Its loop and sockets are C; in alternated
runs of ``bench/sms.py`` the outbox pipeline's CPU per SMS was 1.1-1.5x the bare aiohttp
loop's on uvloop against 1.2-1.8x on asyncio's — a small gain, within this machine's
run-to-run swing (``bench/README.md``, session 9). Everything tidings runs on — anyio,
SQLAlchemy's async engine, aiosqlite, psycopg, httpx — works on either.

``event_loop`` in the configuration (``auto``, ``uvloop``, ``asyncio``) chooses; ``auto``
takes uvloop when it can be imported. One function answers for every entry point: the CLI's
commands (``run``), ``tidings serve`` (``uvicorn_loop``, uvicorn's ``loop`` setting) and the
test fixtures (``anyio_backend``), so the tests exercise the loop deployments run on.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import anyio

from tidings.errors import ConfigError

EventLoop = Literal["auto", "uvloop", "asyncio"]
T = TypeVar("T")


def uses_uvloop(choice: EventLoop = "auto") -> bool:
    """Whether ``choice`` means uvloop on this machine; ``uvloop`` when it is not installed
    is a configuration error, not a silent fallback."""
    available = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not available:
        raise ConfigError(
            "event_loop = 'uvloop' but uvloop is not installed (pip install uvloop)",
            field="event_loop",
        )
    return choice != "asyncio" and available


def anyio_backend(choice: EventLoop = "auto") -> tuple[str, dict[str, Any]]:
    """anyio's backend name and options for ``choice`` (also the tests' ``anyio_backend``)."""
    return "asyncio", {"use_uvloop": uses_uvloop(choice)}


def run(func: Callable[..., Awaitable[T]], *args: Any, event_loop: EventLoop = "auto") -> T:
    """``anyio.run`` on the chosen loop: how every command of the CLI runs its work."""
    backend, options = anyio_backend(event_loop)
    return anyio.run(func, *args, backend=backend, backend_options=options)


def uvicorn_loop(choice: EventLoop = "auto") -> str:
    """uvicorn's ``loop`` setting for ``choice``."""
    return "uvloop" if uses_uvloop(choice) else "asyncio"
