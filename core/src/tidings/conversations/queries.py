"""Views and filters as SQL, shared by the conversation list and the flat message list.

Shaped for the planner (``bench/conversations.py`` measures it at a million messages):

* A view lists ``starred DESC, last_message_at DESC, id DESC`` and shows one page, so the
  fast plan walks an index in that order (``tidings.store.tables_indexes``) within the
  view's state and stops after a page. SQLite plans without statistics and would rather
  fetch every conversation of the agent's (project, kind) pairs and sort them, so there
  the visibility terms are marked :func:`unindexed`; PostgreSQL sees plain columns and
  decides from its statistics.
* States are spelled as the positive set (``IN ('new', 'assigned')``, never
  ``!= 'closed'``) so an index on ``state`` can serve them.
* Filters on other tables are ``id IN (subquery)``: a selective filter (one customer's
  address, a rare tag) then drives the query from its own index instead of being
  re-checked for every conversation.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from tidings.conversations.models import (
    Actor,
    DateField,
    Filters,
    State,
    View,
)
from tidings.errors import Forbidden
from tidings.store import search, tables, tables_routing
from tidings.store.hints import unindexed
from tidings.store.tables_indexes import OPEN_STATES

c, m = tables.conversations, tables.messages

_DATE_COLUMNS = {
    DateField.STARTED: c.c.created_at,
    DateField.REOPENED: c.c.reopened_at,
    DateField.CLOSED: c.c.closed_at,
    DateField.UPDATED: c.c.updated_at,
    DateField.LAST_MESSAGE: c.c.last_message_at,
}


@functools.lru_cache(maxsize=1024)
def visible(actor: Actor) -> sa.ColumnElement[bool]:
    """What ``actor`` may see: their projects and channel kinds, and there the pool and
    their own conversations — or every conversation with the All permission.

    Kept per actor (an immutable value, as is the clause): every view and search call of
    an agent starts from it."""
    if not actor.permissions:
        return sa.false()
    project, kind, assignee = (unindexed(x) for x in (c.c.project_id, c.c.kind,
                                                        c.c.assignee_id))  # fmt: skip
    # One term per project, its kinds in a list: an agent of one project then has a plain
    # ``project_id =``, which PostgreSQL's index of open conversations by project can
    # walk in view order (migration 0018); an OR of (project, kind) pairs it cannot.
    kinds: dict[int, list[str]] = {}
    for p, k in sorted(actor.permissions):
        kinds.setdefault(p, []).append(k)
    scope = sa.and_(
        sa.or_(*(sa.and_(project == p, kind.in_(ks)) for p, ks in kinds.items())),
        ~_blacklisted(),
    )
    if actor.can_view_all:
        return scope
    return sa.and_(
        scope,
        sa.or_(assignee == actor.id, sa.and_(assignee.is_(None), ~_in_other_group(actor))),
    )


def _blacklisted() -> sa.Exists:
    """The customer is blocked in the conversation's project (tidings.routing)."""
    bl = tables_routing.blacklist
    return sa.exists().where(
        bl.c.project_id == c.c.project_id, bl.c.customer_key == c.c.customer_key
    )


def _in_other_group(actor: Actor) -> sa.Exists:
    """The pool conversation was distributed to a group ``actor`` is not a member of."""
    cr, gm = tables_routing.conversation_routing, tables_routing.agent_group_members
    return sa.exists().where(
        cr.c.conversation_id == c.c.id,
        cr.c.group_id.is_not(None),
        cr.c.group_id.not_in(sa.select(gm.c.group_id).where(gm.c.agent_id == actor.id)),
    )


_OPEN = OPEN_STATES  # the partial index ix_conversations_open_sort holds these


def view_condition(actor: Actor, view: View) -> sa.ColumnElement[bool]:
    """The view as a condition on conversations, for the conversation list: the state
    leads the index (``ix_conversations_state_sort``), so the work is bounded by the
    conversations in that state, not by all the agent may see."""
    return _view_condition(actor, view, c.c.state)


def message_view_condition(actor: Actor, view: View) -> sa.ColumnElement[bool]:
    """The view for the flat message list, newest message first.

    There the fast plan walks messages by ``sent_at`` and looks each one's conversation up;
    with an indexable state SQLite would instead fetch every message of every open
    conversation and sort them. The agent's own conversations (Mine) stay indexable:
    they are few, and found through ``ix_conversations_assignee``.
    """
    return _view_condition(actor, view, unindexed(c.c.state))


def _view_condition(
    actor: Actor, view: View, state: sa.ColumnElement[Any]
) -> sa.ColumnElement[bool]:
    if view is View.MINE:
        return sa.and_(c.c.assignee_id == actor.id, c.c.state.in_(_OPEN))
    if view is View.ACTIVE:
        return state.in_(_OPEN)
    if view is View.UNASSIGNED:
        return state == State.NEW.value
    if view is View.CLOSED:
        return state == State.CLOSED.value
    if not actor.can_view_all:
        raise Forbidden("the All view needs the 'view all' permission")
    return sa.true()


def _contains(column: sa.ColumnElement[str], text: str, dialect: str) -> sa.ColumnElement[bool]:
    """``text`` anywhere in ``column``, ignoring case.

    SQLite's ``LIKE`` already ignores the case of ASCII letters, and only of those, just as
    its ``lower()`` folds only ASCII: the same matches without ``lower()``, which was a
    third to a half of the time of a filter that reads every row (the participant filter
    at a million messages: p50 67 → 36 to 46 ms). PostgreSQL's ``LIKE`` is case-sensitive,
    so there the column is lower-cased: ``lower(column)`` is what the trigram indexes of the
    participant's address and the subject hold (migration 0012), so they answer it.
    """
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped.lower()}%"
    if dialect == "sqlite":
        return column.like(pattern, escape="\\")
    return sa.func.lower(column).like(pattern, escape="\\")


def _participant_contains(text: str, dialect: str) -> sa.ColumnElement[bool]:
    """A participant whose address key contains ``text``, ignoring case.

    On SQLite a text of three characters or more is looked up in the trigram index
    ``participant_search`` (migration 0010) as a quoted phrase, which FTS5 reads as that
    substring (characters such as ``%`` and ``_`` are literal there): a few index pages
    instead of a scan of every participant. The index also folds the case of non-ASCII
    letters, as PostgreSQL's ``lower()`` does. Shorter texts have no trigram to look up:
    there it is ``LIKE``. PostgreSQL's ``LIKE`` is answered by a ``pg_trgm`` index
    (migration 0012) from three characters.
    """
    p = tables.participants
    if dialect != "sqlite" or len(text) < 3:  # a trigram
        return _contains(p.c.address_key, text, dialect)
    phrase = '"' + text.replace('"', '""') + '"'
    rowids = sa.text(
        "SELECT rowid FROM participant_search WHERE participant_search MATCH :phrase"
    ).bindparams(phrase=phrase)
    return sa.literal_column("participants.rowid").in_(rowids.columns(sa.column("rowid")))


def filter_conditions(
    filters: Filters, dialect: str, searching: search.Plan | None = None
) -> list[sa.ColumnElement[bool]]:
    """The filters as conditions on conversations; a search needs its plan
    (:func:`tidings.store.search.plan`, chosen in the caller's transaction)."""
    conds: list[sa.ColumnElement[bool]] = []
    for rng in filters.dates:
        column = _DATE_COLUMNS[rng.field]
        if rng.start is not None:
            conds.append(column >= rng.start)
        if rng.end is not None:
            conds.append(column <= rng.end)
    if filters.starred is not None:
        conds.append(c.c.starred.is_(filters.starred))
    for tag in dict.fromkeys(filters.tags):
        t = tables.conversation_tags
        conds.append(
            c.c.id.in_(sa.select(t.c.conversation_id).where(t.c.tag == tag.strip().lower()))
        )
    if filters.project is not None:
        # A project is a large share of what a view holds: walking in view order finds a
        # page sooner than fetching the project's conversations and sorting them.
        p = tables.projects
        conds.append(unindexed(c.c.project_id) == sa.select(p.c.id)
                     .where(p.c.key == filters.project).scalar_subquery())  # fmt: skip
    if filters.contact is not None:
        cc = tables.conversation_contacts
        source, external_id = filters.contact
        conds.append(
            c.c.id.in_(
                sa.select(cc.c.conversation_id).where(
                    cc.c.source == source, cc.c.external_id == external_id
                )
            )
        )
    if filters.assignee is not None:
        conds.append(c.c.assignee_id == filters.assignee)
    if filters.participant:
        p = tables.participants
        cond = [_participant_contains(filters.participant, dialect)]
        if filters.participant_side is not None:
            cond.append(p.c.side == filters.participant_side.value)
        conds.append(c.c.id.in_(sa.select(p.c.conversation_id).where(*cond)))
    elif filters.participant_side is not None:
        raise ValueError("participant_side needs participant")
    if filters.subject:
        conds.append(_contains(c.c.subject, filters.subject, dialect))
    if filters.conversation_id is not None:
        conds.append(c.c.id == filters.conversation_id)
    if filters.attachment_name:
        a = tables.attachments
        conds.append(
            sa.exists().where(
                a.c.message_id == m.c.id,
                m.c.conversation_id == c.c.id,
                _contains(a.c.filename, filters.attachment_name, dialect),
            )
        )
    if filters.kind is not None:
        conds.append(c.c.kind == filters.kind)
    if filters.channel is not None:
        conds.append(c.c.channel == filters.channel)
    if filters.state is not None:
        conds.append(c.c.state == filters.state.value)
    if filters.search is not None:
        if searching is None:
            raise ValueError("a search filter needs its plan (tidings.store.search.plan)")
        conds.append(search.conversations_matching(dialect, searching))
    if filters.sla is not None:
        cr = tables_routing.conversation_routing
        flag = cr.c[f"{filters.sla.value}_at"]
        conds.append(sa.exists().where(cr.c.conversation_id == c.c.id, flag.is_not(None)))
    return conds


# --- what a flat page shows beside its rows -------------------------------------------------


def _json_list(dialect: str, value: sa.ColumnElement[Any], *where: Any) -> sa.ScalarSelect[Any]:
    """A JSON list of ``value`` over the rows ``where`` selects, in no particular order
    (the caller sorts: a page's lists are short)."""
    agg = sa.func.json_agg if dialect == "postgresql" else sa.func.json_group_array
    return sa.select(agg(value, type_=sa.JSON)).where(*where).scalar_subquery()


@functools.lru_cache(maxsize=1024)
def message_extras(dialect: str, actor: Actor) -> tuple[sa.Label[Any], ...]:
    """Columns for each ``messages`` row: ``tag_list`` (its tags), ``read_by_actor`` (the
    agent's read mark) and ``attachment_list`` (its attachments, JSON objects).

    Correlated subqueries evaluated for the page's rows only: as statements of their own
    they were three of a flat view's four, each a round trip (on PostgreSQL a wake-up of
    server and client, ~0.3 ms of the client's CPU). Kept per actor, like :func:`visible`:
    built anew they cost as much again in building and in SQLAlchemy's cache key.
    (A conversation view reads its tags by a statement of its own: wrapping its page in a
    subquery to add them cost SQLAlchemy ~1 ms a call, more than the round trip.)
    """
    mt, rd, at = tables.message_tags, tables.message_reads, tables.attachments
    fields = ("id", "filename", "content_type", "size", "sha256", "inline")
    pairs: list[sa.ColumnElement[Any]] = []
    for f in fields:
        pairs += (sa.literal_column(f"'{f}'"), at.c[f])
    obj = sa.func.json_build_object if dialect == "postgresql" else sa.func.json_object
    read = sa.exists().where(rd.c.message_id == m.c.id, rd.c.agent_id == actor.id)
    return (
        _json_list(dialect, mt.c.tag, mt.c.message_id == m.c.id).label("tag_list"),
        read.label("read_by_actor"),
        _json_list(dialect, obj(*pairs), at.c.message_id == m.c.id).label("attachment_list"),
    )
