"""Inbound rules as data: conditions and actions named by kind, parameters validated.

A rule is stored as JSON and checked against the known kinds when it is saved, so a typo
fails at configuration time, not silently at 3 a.m. Kinds are a registry: the built-ins
below, plus whatever plugins return from the ``register_rule_kinds`` hook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tidings.errors import PluginError, TidingsError
from tidings.models import Address, AddressKind, ContactMatch, ContactType, InboundMessage
from tidings.models.addresses import normalise_email, normalise_phone

log = logging.getLogger("tidings.routing.rules")

TAG_MAX = 100


class InvalidRule(TidingsError, ValueError):
    """A rule names an unknown kind, has bad parameters or refers to something missing."""


class Match(StrEnum):
    ALL = "all"
    ANY = "any"


class Condition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(min_length=1, max_length=63)
    params: dict[str, Any] = Field(default_factory=dict)


class Action(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(min_length=1, max_length=63)
    params: dict[str, Any] = Field(default_factory=dict)


class Rule(BaseModel):
    """When ``conditions`` hold (all or any of them; none means always), run ``actions``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    enabled: bool = True
    match: Match = Match.ALL
    conditions: tuple[Condition, ...] = ()
    actions: tuple[Action, ...] = Field(min_length=1)


@dataclass(frozen=True)
class Facts:
    """What a condition may look at: one new inbound message and where it came from."""

    message: InboundMessage
    account_id: str
    project: str
    contacts: tuple[ContactMatch, ...] = ()
    """Contact-lookup answers for the sender (every source)."""


@dataclass
class Outcome:
    """What the matching rules decided for a message's conversation; the router applies
    it. Plugin actions change it exactly like the built-ins."""

    group: str | None = None
    assignee: str | None = None
    tags: list[str] = field(default_factory=list)
    priority: str | None = None
    category: str | None = None
    status: str | None = None
    stop: bool = False
    matched: list[str] = field(default_factory=list)

    def merge(self, later: Outcome) -> None:
        """Fold a later message's outcome into this one: later decisions win."""
        for name in ("group", "assignee", "priority", "category", "status"):
            value = getattr(later, name)
            if value is not None:
                setattr(self, name, value)
        self.tags.extend(t for t in later.tags if t not in self.tags)
        self.matched.extend(later.matched)


@dataclass(frozen=True)
class ConditionKind:
    """A condition a rule may use: ``test(params, facts)`` with ``params`` an instance of
    the ``params`` model."""

    name: str
    params: type[BaseModel]
    test: Callable[[Any, Facts], bool]
    description: str = ""


@dataclass(frozen=True)
class ActionKind:
    """An action a rule may use: ``apply(params, facts, outcome)`` changes the outcome."""

    name: str
    params: type[BaseModel]
    apply: Callable[[Any, Facts, Outcome], None]
    description: str = ""


# --- parameter models of the built-ins ------------------------------------------------------


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NoParams(_Params):
    pass


class TextParams(_Params):
    value: str = Field(min_length=1, max_length=998)


class AccountParams(_Params):
    account: str = Field(min_length=1, max_length=100)


class TypeParams(_Params):
    type: ContactType


class OwnerParams(_Params):
    owner: str = Field(min_length=1, max_length=300)


class GroupParams(_Params):
    group: str = Field(min_length=1, max_length=100)


class AgentParams(_Params):
    agent: str = Field(min_length=1, max_length=100, description="username")


class TagsParams(_Params):
    tags: tuple[str, ...] = Field(min_length=1)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for text in tags:
            tag = text.strip().lower()
            if not tag or len(tag) > TAG_MAX:
                raise ValueError(f"a tag has 1 to {TAG_MAX} characters, got {text!r}")
            out.append(tag)
        return tuple(dict.fromkeys(out))


class PriorityParams(_Params):
    priority: str = Field(min_length=1, max_length=50)


class CategoryParams(_Params):
    category: str = Field(min_length=1, max_length=100)


class StatusParams(_Params):
    status: str = Field(min_length=1, max_length=100)


# --- built-in conditions --------------------------------------------------------------------


def _fold(text: str | None) -> str:
    return (text or "").casefold()


def _same_address(address: Address, typed: str) -> bool:
    """An address typed into a rule equals ``address`` once normalised like it."""
    try:
        if address.kind is AddressKind.PHONE:
            return normalise_phone(typed) == address.value
        if address.kind is AddressKind.EMAIL:
            return normalise_email(typed).casefold() == address.value.casefold()
    except ValueError:
        return False
    return typed.strip() == address.value or typed.strip() == address.key


def _recipients(facts: Facts) -> tuple[Address, ...]:
    return (*facts.message.recipients, *facts.message.cc)


BUILTIN_CONDITIONS: tuple[ConditionKind, ...] = (
    ConditionKind(
        "subject_contains", TextParams,
        lambda p, f: _fold(p.value) in _fold(f.message.subject), "subject contains (any case)",
    ),
    ConditionKind(
        "body_contains", TextParams,
        lambda p, f: _fold(p.value) in _fold(f.message.text or f.message.html),
        "text contains (any case)",
    ),
    ConditionKind(
        "sender_is", TextParams, lambda p, f: _same_address(f.message.sender, p.value),
        "the sender's address is",
    ),
    ConditionKind(
        "sender_contains", TextParams,
        lambda p, f: _fold(p.value) in _fold(f.message.sender.value),
        "the sender's address contains",
    ),
    ConditionKind(
        "recipient_is", TextParams,
        lambda p, f: bool(f.message.recipients) and _same_address(f.message.recipients[0], p.value),
        "the (first) To address is",
    ),
    ConditionKind(
        "one_of_recipients_is", TextParams,
        lambda p, f: any(_same_address(a, p.value) for a in _recipients(f)),
        "one of the To/CC addresses is",
    ),
    ConditionKind(
        "from_account", AccountParams, lambda p, f: f.account_id == p.account,
        "fetched from (arrived through) this account",
    ),
    ConditionKind(
        "contact_found", NoParams, lambda p, f: bool(f.contacts), "the sender is a known contact"
    ),
    ConditionKind(
        "contact_type", TypeParams, lambda p, f: any(c.type == p.type for c in f.contacts),
        "the sender is a known contact of this type",
    ),
    ConditionKind(
        "contact_owner", OwnerParams,
        lambda p, f: any(_fold(c.owner) == _fold(p.owner) for c in f.contacts if c.owner),
        "the sender is a known contact with this owner",
    ),
    ConditionKind(
        "contact_vip", NoParams, lambda p, f: any(c.vip for c in f.contacts),
        "the sender is a VIP contact",
    ),
)  # fmt: skip


# --- built-in actions -----------------------------------------------------------------------


def _set(name: str, attr: str) -> Callable[[Any, Facts, Outcome], None]:
    def apply(params: Any, facts: Facts, outcome: Outcome) -> None:
        setattr(outcome, name, getattr(params, attr))

    return apply


def _add_tags(params: Any, facts: Facts, outcome: Outcome) -> None:
    outcome.tags.extend(t for t in params.tags if t not in outcome.tags)


def _stop(params: Any, facts: Facts, outcome: Outcome) -> None:
    outcome.stop = True


BUILTIN_ACTIONS: tuple[ActionKind, ...] = (
    ActionKind("set_group", GroupParams, _set("group", "group"), "queue in this group"),
    ActionKind("assign", AgentParams, _set("assignee", "agent"), "assign to this agent"),
    ActionKind("add_tags", TagsParams, _add_tags, "add these tags"),
    ActionKind("set_priority", PriorityParams, _set("priority", "priority"), "set the priority"),
    ActionKind("set_category", CategoryParams, _set("category", "category"), "set the category"),
    ActionKind("set_status", StatusParams, _set("status", "status"), "set the status"),
    ActionKind("stop", NoParams, _stop, "evaluate no further rules"),
)


# --- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledRule:
    """A rule with its parameters parsed, ready to evaluate."""

    rule: Rule
    conditions: tuple[tuple[ConditionKind, BaseModel], ...]
    actions: tuple[tuple[ActionKind, BaseModel], ...]


class RuleKinds:
    """The condition and action kinds rules may name."""

    def __init__(
        self, conditions: Iterable[ConditionKind] = (), actions: Iterable[ActionKind] = ()
    ) -> None:
        self.conditions: dict[str, ConditionKind] = {}
        self.actions: dict[str, ActionKind] = {}
        for kind in (*BUILTIN_CONDITIONS, *BUILTIN_ACTIONS, *conditions, *actions):
            self.add(kind, source="tidings")

    def add(self, kind: object, *, source: str) -> None:
        if not isinstance(kind, ConditionKind | ActionKind):
            raise PluginError(
                f"{source}: register_rule_kinds returned {kind!r}, not a ConditionKind or "
                "ActionKind"
            )
        if not (isinstance(kind.params, type) and issubclass(kind.params, BaseModel)):
            raise PluginError(f"{source}: rule kind {kind.name!r} needs a pydantic params model")
        table: dict[str, Any] = self.conditions if isinstance(kind, ConditionKind) else self.actions
        if kind.name in table:
            raise PluginError(f"{source}: rule kind {kind.name!r} is already registered")
        table[kind.name] = kind

    @classmethod
    def from_plugins(cls, plugins: Any) -> RuleKinds:
        """The built-ins plus every plugin's ``register_rule_kinds`` answer."""
        kinds = cls()
        for impl in plugins.pm.hook.register_rule_kinds.get_hookimpls():
            try:
                answer = impl.function() or ()
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: register_rule_kinds failed: {exc!r}"
                ) from exc
            for kind in answer:
                kinds.add(kind, source=f"plugin {impl.plugin_name!r}")
        return kinds

    def compile(self, rule: Rule | dict[str, Any]) -> CompiledRule:
        """Parse ``rule`` and its parameters; ``InvalidRule`` says exactly what is wrong."""
        try:
            parsed = rule if isinstance(rule, Rule) else Rule.model_validate(rule)
        except ValidationError as exc:
            raise InvalidRule(f"invalid rule: {_errors(exc)}") from None
        conditions = []
        for index, cond in enumerate(parsed.conditions):
            kind = self.conditions.get(cond.kind)
            if kind is None:
                raise InvalidRule(
                    f"rule {parsed.name!r}: unknown condition {cond.kind!r} "
                    f"(known: {', '.join(sorted(self.conditions))})"
                )
            conditions.append((kind, _params(parsed.name, f"condition {index}", kind, cond.params)))
        actions = []
        for index, act in enumerate(parsed.actions):
            akind = self.actions.get(act.kind)
            if akind is None:
                raise InvalidRule(
                    f"rule {parsed.name!r}: unknown action {act.kind!r} "
                    f"(known: {', '.join(sorted(self.actions))})"
                )
            actions.append((akind, _params(parsed.name, f"action {index}", akind, act.params)))
        return CompiledRule(parsed, tuple(conditions), tuple(actions))


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(x) for x in e['loc']) or 'rule'}: {e['msg']}" for e in exc.errors()
    )


def _params(
    rule: str, where: str, kind: ConditionKind | ActionKind, params: dict[str, Any]
) -> BaseModel:
    try:
        return kind.params.model_validate(params)
    except ValidationError as exc:
        raise InvalidRule(f"rule {rule!r}, {where} ({kind.name}): {_errors(exc)}") from None


def _holds(rule: CompiledRule, facts: Facts) -> bool:
    if not rule.conditions:
        return True
    results = (_test(kind, params, facts) for kind, params in rule.conditions)
    return all(results) if rule.rule.match is Match.ALL else any(results)


def _test(kind: ConditionKind, params: BaseModel, facts: Facts) -> bool:
    try:
        return bool(kind.test(params, facts))
    except Exception:  # a broken plugin condition must not stop ingestion
        log.exception("rule condition %s failed; treated as not matching", kind.name)
        return False


def evaluate(rules: Sequence[CompiledRule], facts: Facts) -> Outcome:
    """Run the enabled rules in order on one message; ``stop`` ends the evaluation."""
    outcome = Outcome()
    for rule in rules:
        if not rule.rule.enabled or not _holds(rule, facts):
            continue
        outcome.matched.append(rule.rule.name)
        for kind, params in rule.actions:
            try:
                kind.apply(params, facts, outcome)
            except Exception:  # a broken plugin action must not stop ingestion
                log.exception("rule action %s failed in rule %r", kind.name, rule.rule.name)
        if outcome.stop:
            break
    return outcome


_installed = RuleKinds()


def install(kinds: RuleKinds) -> None:
    """Make ``kinds`` the registry ingestion evaluates stored rules with.

    Ingestion runs inside the conversation service, which does not carry the plugins'
    rule kinds; the routing service installs them when it is built (once per process).
    """
    global _installed
    _installed = kinds


def installed() -> RuleKinds:
    return _installed
