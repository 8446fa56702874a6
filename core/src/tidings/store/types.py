"""Column types whose behaviour must be identical on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Always timezone-aware UTC in Python, whatever the backend stores.

    SQLite has no time zones and SQLAlchemy hands back naive values there; comparing those
    with aware ones raises. Stored as naive UTC everywhere, returned aware.
    """

    impl = sa.DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any]:
        # Every view returns a dozen of these per row: one plain function per value instead
        # of TypeDecorator's wrapper around the impl's processor and process_result_value.
        # SQLite hands over ISO text, PostgreSQL a naive datetime.
        def process(value: Any) -> datetime | None:
            if value is None:
                return None
            if value.__class__ is str:
                value = datetime.fromisoformat(value)
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]

        return process
