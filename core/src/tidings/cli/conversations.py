"""``tidings conversations list|show`` and ``tidings send``: the agent's work from a shell.

The same service layer as the HTTP API, acting as the agent named by ``--as`` (or
``$TIDINGS_AGENT``) with exactly that agent's permissions: the operator chooses who they
act as, the services still decide what that agent may see and do.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, TypeVar

import typer

from tidings import events
from tidings.auth import Auth
from tidings.cli.main import ConfigOption, err, friendly_errors, loaded_plugins, out
from tidings.conversations import Actor, Decision, Draft, Filters, Page, State, View
from tidings.errors import Cancelled
from tidings.loop import run
from tidings.runtime import Runtime

T = TypeVar("T")
conversations_app = typer.Typer(help="Conversations, as an agent sees them.", no_args_is_help=True)

AgentOption = Annotated[
    str, typer.Option("--as", envvar="TIDINGS_AGENT", help="The agent to act as (username).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _as_agent(
    config: ConfigOption, username: str, work: Callable[[Runtime, Actor], Awaitable[T]]
) -> T:
    runtime = Runtime.start(config_path=config, plugins=loaded_plugins())

    async def main() -> T:
        try:
            actor = await runtime.conversations.actor(await Auth(runtime.store).agent_id(username))
            return await work(runtime, actor)
        finally:
            await runtime.close()

    return run(main, event_loop=runtime.config.event_loop)


def _dump(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


@conversations_app.command("list")
@friendly_errors
def list_conversations(
    agent: AgentOption,
    config: ConfigOption = None,
    view: Annotated[View, typer.Option(help="mine, active, unassigned, closed or all")] = (
        View.ACTIVE
    ),
    state: Annotated[State | None, typer.Option()] = None,
    project: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Carrying this tag (repeatable).")] = None,
    search: Annotated[str | None, typer.Option(help="Customer name or message text.")] = None,
    assignee: Annotated[int | None, typer.Option(help="Agent id.")] = None,
    starred: Annotated[bool | None, typer.Option("--starred/--not-starred")] = None,
    kind: Annotated[str | None, typer.Option(help="Channel kind (sms, email …).")] = None,
    channel: Annotated[str | None, typer.Option()] = None,
    subject: Annotated[str | None, typer.Option(help="Subject contains.")] = None,
    participant: Annotated[str | None, typer.Option(help="An address, either side.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: JsonOption = False,
) -> None:
    """A view of conversations with filters; starred first, then by last activity."""
    filters = Filters(
        state=state, project=project, tags=tuple(tag or ()), search=search, assignee=assignee,
        starred=starred, kind=kind, channel=channel, subject=subject, participant=participant,
    )  # fmt: skip

    async def work(runtime: Runtime, actor: Actor) -> list[Any]:
        return await runtime.conversations.view(
            actor, view, filters, Page(limit=limit, offset=offset)
        )

    rows = _as_agent(config, agent, work)
    if as_json:
        _dump([r.model_dump(mode="json") for r in rows])
        return
    for r in rows:
        star = "*" if r.starred else " "
        who = f"@{r.assignee_id}" if r.assignee_id else "-"
        out.print(
            f"{star}{r.id}\t{r.state.value}\t{who}\t{r.kind}\t{r.customer_name or r.customer}"
            f"\t{r.subject}",
            highlight=False,
            markup=False,
        )


@conversations_app.command("show")
@friendly_errors
def show(
    conversation_id: int,
    agent: AgentOption,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """A conversation with its messages, notes and linked contacts."""

    async def work(runtime: Runtime, actor: Actor) -> Any:
        return await runtime.conversations.get(actor, conversation_id)

    detail = _as_agent(config, agent, work)
    if as_json:
        _dump(detail.model_dump(mode="json"))
        return
    s = detail.summary
    out.print(f"#{s.id} {s.subject or '(no subject)'} — {s.customer} [{s.state.value}]",
              highlight=False, markup=False)  # fmt: skip
    for msg in detail.messages:
        arrow = {"in": "<", "out": ">", "note": "#"}.get(msg.direction, "?")
        out.print(f"{arrow} {msg.sent_at:%Y-%m-%d %H:%M} {msg.sender_name or msg.sender}: "
                  f"{msg.text}", highlight=False, markup=False)  # fmt: skip


def send(
    agent: AgentOption,
    text: Annotated[str, typer.Option(help="The message text.")],
    config: ConfigOption = None,
    conversation: Annotated[int | None, typer.Option(help="Reply in this conversation.")] = None,
    account: Annotated[str | None, typer.Option(help="Or: a new message from this account.")] = (
        None
    ),
    to: Annotated[list[str] | None, typer.Option(help="Recipient (repeatable).")] = None,
    subject: Annotated[str | None, typer.Option()] = None,
    decision: Annotated[
        Decision | None,
        typer.Option(
            help="When another agent has the customer: cancel, assign_and_send, send_only."
        ),
    ] = None,
    close: Annotated[bool, typer.Option(help="Close the conversation after sending.")] = False,
    delay: Annotated[int | None, typer.Option(min=0, help="Seconds before it goes out.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Reply in a conversation, or write a new message, as an agent; the worker sends it."""
    if (conversation is None) == (account is None):
        err.print("[bold red]error:[/] give --conversation or --account (with --to)")
        raise typer.Exit(2)
    draft = Draft(text=text, subject=subject, to=tuple(to or ()))

    async def work(runtime: Runtime, actor: Actor) -> dict[str, Any]:
        from tidings.service.api.changes import compare, snapshot

        store = runtime.store
        before = await snapshot(store, conversation) if conversation is not None else None
        try:
            sent = await runtime.conversations.send(
                actor, draft, conversation_id=conversation, account_id=account,
                decision=decision, close=close,
                delay=timedelta(seconds=delay) if delay is not None else None,
            )  # fmt: skip
        except Cancelled:
            return {"status": "cancelled"}
        after = await snapshot(store, sent.conversation_id)
        await events.publish(
            store,
            compare(sent.conversation_id, before, after, events.ChangeKind.MESSAGE,
                    sent.message_id, {"direction": "out"}),
        )  # fmt: skip
        return {
            "status": "queued", "conversation_id": sent.conversation_id,
            "message_id": sent.message_id, "created_conversation": sent.created_conversation,
            "send_after": sent.send_after.isoformat(),
        }  # fmt: skip

    result = _as_agent(config, agent, work)
    if as_json:
        _dump(result)
    elif result["status"] == "cancelled":
        err.print("cancelled: nothing was sent")
    else:
        err.print(
            f"queued message {result['message_id']} in conversation "
            f"{result['conversation_id']} (sent from {result['send_after']})"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(conversations_app, name="conversations")
    app.command("send")(friendly_errors(send))
