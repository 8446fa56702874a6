"""Views and filters as SQL, shared by the conversation list and the flat message list."""

from __future__ import annotations

import sqlalchemy as sa

from tidings.conversations.models import (
    Actor,
    DateField,
    Filters,
    State,
    View,
)
from tidings.errors import Forbidden
from tidings.store import search, tables

c, m = tables.conversations, tables.messages

_DATE_COLUMNS = {
    DateField.STARTED: c.c.created_at,
    DateField.REOPENED: c.c.reopened_at,
    DateField.CLOSED: c.c.closed_at,
    DateField.UPDATED: c.c.updated_at,
    DateField.LAST_MESSAGE: c.c.last_message_at,
}


def visible(actor: Actor) -> sa.ColumnElement[bool]:
    """What ``actor`` may see: their projects and channel kinds, and there the pool and
    their own conversations — or every conversation with the All permission."""
    if not actor.permissions:
        return sa.false()
    scope = sa.or_(
        *(
            sa.and_(c.c.project_id == project, c.c.kind == kind)
            for project, kind in sorted(actor.permissions)
        )
    )
    if actor.can_view_all:
        return scope
    return sa.and_(scope, sa.or_(c.c.assignee_id.is_(None), c.c.assignee_id == actor.id))


def view_condition(actor: Actor, view: View) -> sa.ColumnElement[bool]:
    if view is View.MINE:
        return sa.and_(c.c.assignee_id == actor.id, c.c.state != State.CLOSED.value)
    if view is View.ACTIVE:
        return c.c.state != State.CLOSED.value
    if view is View.UNASSIGNED:
        return c.c.state == State.NEW.value
    if view is View.CLOSED:
        return c.c.state == State.CLOSED.value
    if not actor.can_view_all:
        raise Forbidden("the All view needs the 'view all' permission")
    return sa.true()


def _contains(column: sa.ColumnElement[str], text: str) -> sa.ColumnElement[bool]:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sa.func.lower(column).like(f"%{escaped.lower()}%", escape="\\")


def filter_conditions(filters: Filters, dialect: str) -> list[sa.ColumnElement[bool]]:
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
            sa.exists().where(t.c.conversation_id == c.c.id, t.c.tag == tag.strip().lower())
        )
    if filters.project is not None:
        p = tables.projects
        conds.append(c.c.project_id == sa.select(p.c.id).where(p.c.key == filters.project)
                     .scalar_subquery())  # fmt: skip
    if filters.contact is not None:
        cc = tables.conversation_contacts
        source, external_id = filters.contact
        conds.append(
            sa.exists().where(
                cc.c.conversation_id == c.c.id,
                cc.c.source == source,
                cc.c.external_id == external_id,
            )
        )
    if filters.assignee is not None:
        conds.append(c.c.assignee_id == filters.assignee)
    if filters.participant:
        p = tables.participants
        cond = [p.c.conversation_id == c.c.id, _contains(p.c.address_key, filters.participant)]
        if filters.participant_side is not None:
            cond.append(p.c.side == filters.participant_side.value)
        conds.append(sa.exists().where(*cond))
    elif filters.participant_side is not None:
        raise ValueError("participant_side needs participant")
    if filters.subject:
        conds.append(_contains(c.c.subject, filters.subject))
    if filters.conversation_id is not None:
        conds.append(c.c.id == filters.conversation_id)
    if filters.attachment_name:
        a = tables.attachments
        conds.append(
            sa.exists().where(
                a.c.message_id == m.c.id,
                m.c.conversation_id == c.c.id,
                _contains(a.c.filename, filters.attachment_name),
            )
        )
    if filters.kind is not None:
        conds.append(c.c.kind == filters.kind)
    if filters.channel is not None:
        conds.append(c.c.channel == filters.channel)
    if filters.state is not None:
        conds.append(c.c.state == filters.state.value)
    if filters.search is not None:
        tokens = search.query_tokens(filters.search)
        matches = search.matching_conversations(dialect, tokens).columns(
            sa.column("conversation_id", sa.Integer)
        )
        conds.append(c.c.id.in_(sa.select(matches.subquery().c.conversation_id)))
    return conds
