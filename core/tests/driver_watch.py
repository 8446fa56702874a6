"""Watching SQLite's driver thread in tests: which calls cross to it, and which thread
runs each statement (``tidings.store.sqlite_connection``)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tidings.store import sqlite_connection


def watch_driver(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[tuple[bool, str]]]:
    """From now on: each crossing to the driver thread, named by the function run there;
    and every statement as (ran on this, the event loop's, thread; its SQL)."""
    crossings: list[str] = []
    ran: list[tuple[bool, str]] = []
    loop_thread = threading.get_ident()
    original = sqlite_connection.Connection._execute
    run, run_many = sqlite_connection._run, sqlite_connection._run_many

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        crossings.append(fn.__name__)
        return await original(self, fn, *args, **kwargs)

    def watched(fn: Any) -> Any:
        def statement(conn: Any, sql: str, parameters: Any) -> Any:
            ran.append((threading.get_ident() == loop_thread, sql))
            return fn(conn, sql, parameters)

        return statement

    monkeypatch.setattr(sqlite_connection.Connection, "_execute", counted)
    monkeypatch.setattr(sqlite_connection, "_run", watched(run))
    monkeypatch.setattr(sqlite_connection, "_run_many", watched(run_many))
    return crossings, ran
