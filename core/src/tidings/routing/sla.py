"""Priorities, business hours and the three SLA signals, as pure functions of time.

Kept free of the database so the rules are easy to test with any instant: the routing
service stores the deadlines these functions compute and sweeps them with ``due_signals``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tidings.conversations.models import SlaSignal

__all__ = [
    "BusinessHours",
    "Deadlines",
    "OpeningSpan",
    "PriorityLevel",
    "SlaSignal",
    "deadlines",
    "due_signals",
]

NAME = re.compile(r"^[\w .-]{1,50}$")
SEARCH_DAYS = 800
"""How far ahead business time is searched: two years covers every real calendar."""


class PriorityLevel(BaseModel):
    """A priority and its three times; ``None`` switches that signal off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=50)
    reaction: timedelta | None = None
    """Until the first agent reply."""
    alarm: timedelta | None = None
    """The execution alarm: a warning before the execution time runs out."""
    execution: timedelta | None = None
    """Until the conversation is closed."""
    business_hours: bool = False
    """Count only the project's opening hours."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("a priority name has letters, digits, spaces, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _times(self) -> PriorityLevel:
        for label, span in (("reaction", self.reaction), ("alarm", self.alarm),
                            ("execution", self.execution)):  # fmt: skip
            if span is not None and span <= timedelta(0):
                raise ValueError(f"the {label} time must be positive")
        if self.alarm and self.execution and self.alarm > self.execution:
            raise ValueError("the execution alarm must come before the execution time")
        return self


class OpeningSpan(BaseModel):
    """Open from ``opens`` to ``closes`` on ``weekday`` (0 is Monday); ``closes`` 00:00 is
    midnight at the end of the day."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weekday: int = Field(ge=0, le=6)
    opens: time
    closes: time

    @property
    def minutes(self) -> tuple[int, int]:
        start = self.opens.hour * 60 + self.opens.minute
        end = self.closes.hour * 60 + self.closes.minute or 24 * 60
        return start, end

    @model_validator(mode="after")
    def _order(self) -> OpeningSpan:
        if self.opens.tzinfo or self.closes.tzinfo:
            raise ValueError("opening times are local times of the project's time zone")
        start, end = self.minutes
        if start >= end:
            raise ValueError("an opening span must close after it opens")
        return self


class BusinessHours(BaseModel):
    """A project's week of opening hours in its time zone, and its days off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str = "UTC"
    spans: tuple[OpeningSpan, ...] = ()
    days_off: frozenset[date] = frozenset()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _no_overlap(self) -> BusinessHours:
        for day in range(7):
            spans = sorted(s.minutes for s in self.spans if s.weekday == day)
            for (_, end), (start, _) in pairwise(spans):
                if start < end:
                    raise ValueError(f"opening spans overlap on weekday {day}")
        return self

    def windows(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Opening windows (UTC) from ``start``'s local day on, in order."""
        zone = ZoneInfo(self.timezone)
        first = start.astimezone(zone).date()
        spans = sorted(self.spans, key=lambda x: x.minutes)
        for offset in range(SEARCH_DAYS):
            day = first + timedelta(days=offset)
            if day in self.days_off:
                continue
            for span in spans:
                if span.weekday == day.weekday():
                    # Wall-clock times, so a DST change moves a window rather than its length.
                    opens, closes = span.minutes
                    lo = _local(day, opens, zone)
                    hi = _local(day + timedelta(days=closes // 1440), closes % 1440, zone)
                    yield lo.astimezone(UTC), hi.astimezone(UTC)

    def add(self, start: datetime, span: timedelta) -> datetime:
        """The instant ``span`` of opening time after ``start``."""
        left = span
        for lo, hi in self.windows(start):
            if hi <= start:
                continue
            begin = max(lo, start)
            if begin + left <= hi:
                return begin + left
            left -= hi - begin
        raise ValueError("the business hours have no opening time in the next two years")


def _local(day: date, minute: int, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone)


@dataclass(frozen=True)
class Deadlines:
    reaction_due: datetime | None
    alarm_at: datetime | None
    execution_due: datetime | None


def deadlines(level: PriorityLevel, start: datetime, hours: BusinessHours | None) -> Deadlines:
    """When each signal falls due for a conversation whose SLA clock started at ``start``.

    Business-hours priorities of a project without opening hours count calendar time: an
    unset calendar must not silently switch the SLA off.
    """

    def after(span: timedelta | None) -> datetime | None:
        if span is None:
            return None
        if level.business_hours and hours is not None and hours.spans:
            return hours.add(start, span)
        return start + span

    return Deadlines(after(level.reaction), after(level.alarm), after(level.execution))


def due_signals(
    due: Deadlines,
    *,
    reacted_at: datetime | None,
    closed_at: datetime | None,
    now: datetime,
) -> dict[SlaSignal, datetime]:
    """The signals passed at ``now``, each with the deadline that was passed.

    Reaction is met by the first agent reply, alarm and execution by closing; a reply or a
    close after the deadline still counts as missed.
    """
    out: dict[SlaSignal, datetime] = {}
    checks = (
        (SlaSignal.REACTION_MISSED, due.reaction_due, reacted_at),
        (SlaSignal.ALARM_REACHED, due.alarm_at, closed_at),
        (SlaSignal.EXECUTION_MISSED, due.execution_due, closed_at),
    )
    for signal, deadline, done in checks:
        if deadline is None:
            continue
        if (done is None and now >= deadline) or (done is not None and done > deadline):
            out[signal] = deadline
    return out
