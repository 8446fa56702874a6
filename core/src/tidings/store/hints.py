"""A planner hint SQL needs on SQLite, which plans without statistics.

SQLite picks an index for every term it can, taking any equality for selective. Where the
fast plan is to walk another index in the result's order (a view's page), the term is
written ``+column``: SQLite's documented way to keep a term out of index selection. Other
databases see the plain column and decide from their statistics.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal


class _Unindexed(sa.ColumnElement[Any]):
    """A column the SQLite planner must not pick an index for (see :func:`unindexed`)."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: sa.ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(_Unindexed)
def _compile_plain(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(_Unindexed, "sqlite")
def _compile_unary_plus(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite's documented way to take a term out of index selection: unary + is a no-op
    # on any value, but a term on "+column" cannot constrain an index.
    return "+" + compiler.process(element.column, **kw)


def unindexed(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """``column`` as SQLite must not use for choosing an index; unchanged elsewhere.

    Visibility matches most of what an agent's view holds, yet SQLite, planning without
    statistics, takes its index for selective: it fetches every matching conversation and
    sorts tens of thousands of rows for a page of 50. The same holds for a search's
    collected matches when they are thousands (``tidings.store.search``).
    """
    return _Unindexed(column)
