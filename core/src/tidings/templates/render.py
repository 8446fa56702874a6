"""Rendering reply templates in Jinja2's immutable sandbox.

Template text is written by agents, so it is untrusted code: the sandbox refuses
attribute tricks (``__class__``), data cannot be changed, ranges and repetitions are
bounded and so is the output. A variable that does not exist or has no value is an error
naming it (``contact.fields.post_code``), never an empty string sent to a customer.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, NoReturn

from jinja2 import TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateRuntimeError
from jinja2.runtime import Context, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from tidings.errors import TidingsError

ROOTS = ("contact", "conversation", "agent")
BODY_MAX = 20_000
OUTPUT_MAX = 64_000
RANGE_MAX = 1_000
_FORBIDDEN_NODES: dict[type[nodes.Node], str] = {
    nodes.Macro: "a macro",
    nodes.CallBlock: "a call block",
    nodes.Include: "include",
    nodes.Extends: "extends",
    nodes.Import: "import",
    nodes.FromImport: "import",
}


class TemplateError(TidingsError):
    """Base of template refusals."""


class TemplateInvalid(TemplateError):
    """The template cannot be saved or run: bad syntax, an unknown variable root, or
    something the sandbox forbids."""


class MissingVariable(TemplateError):
    """The template uses a variable that has no value for this contact or conversation."""

    def __init__(self, variable: str) -> None:
        self.variable = variable
        super().__init__(f"the template needs {variable}, which has no value here")


class Scope(dict[str, Any]):
    """A group of variables that knows its own path, so a missing one can be named."""

    def __init__(self, path: str, values: Mapping[str, Any]) -> None:
        super().__init__(
            (k, Scope(f"{path}.{k}", v) if isinstance(v, Mapping) else v)
            for k, v in values.items()
            if v is not None
        )
        self.path = path


class _Missing(UndefinedError):
    pass


class _StrictPath(StrictUndefined):
    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = _Missing,
    ) -> None:
        super().__init__(hint, obj, name, exc)

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        if self._undefined_obj is missing:
            return str(self._undefined_name)
        if isinstance(self._undefined_obj, Scope):
            return f"{self._undefined_obj.path}.{self._undefined_name}"
        return f"{self._undefined_name!r} of a {type(self._undefined_obj).__name__} value"


def _too_big(what: str) -> NoReturn:
    raise SecurityError(f"{what} would make the text longer than {OUTPUT_MAX} characters")


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > 100:
                raise SecurityError("exponents above 100 are not allowed in templates")
            return operator.pow(left, right)
        for seq, count in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
            if sized and len(seq) * count > OUTPUT_MAX:
                _too_big("repeating")
        return operator.mul(left, right)


def _small_range(*args: int) -> range:
    r = range(*args)
    if len(r) > RANGE_MAX:
        raise SecurityError(f"ranges in templates have at most {RANGE_MAX} items")
    return r


_env = _Environment(undefined=_StrictPath, autoescape=False, keep_trailing_newline=True)
_env.globals["range"] = _small_range


def _check_structure(tree: nodes.Template) -> None:
    """Bound the work a template can do: one level of loops, no macros or includes.

    The sandbox stops unsafe access but not a loop inside a loop inside a loop; a reply
    template never needs one, so it is refused when saved rather than timed out when sent.
    """
    for node_type, what in _FORBIDDEN_NODES.items():
        if tree.find(node_type) is not None:
            raise TemplateInvalid(f"{what} is not allowed in templates")
    for loop in tree.find_all(nodes.For):
        if loop.recursive:
            raise TemplateInvalid("recursive loops are not allowed in templates")
        inner = [*loop.body, *loop.else_]
        if any(n.find(nodes.For) is not None or isinstance(n, nodes.For) for n in inner):
            raise TemplateInvalid("loops inside loops are not allowed in templates")


def check(body: str) -> None:
    """Refuse a template that could never render: too long, bad syntax, unknown roots."""
    if len(body) > BODY_MAX:
        raise TemplateInvalid(f"a template has at most {BODY_MAX} characters")
    try:
        tree = _env.parse(body)
    except TemplateSyntaxError as exc:
        raise TemplateInvalid(f"line {exc.lineno}: {exc.message}") from None
    _check_structure(tree)
    unknown = sorted(meta.find_undeclared_variables(tree) - set(ROOTS))
    if unknown:
        raise TemplateInvalid(
            f"unknown variable {', '.join(unknown)}; templates use {', '.join(ROOTS)}"
        )


def render(body: str, variables: Mapping[str, Mapping[str, Any] | None]) -> str:
    """Render ``body`` with ``contact``/``conversation``/``agent`` variables (a ``None``
    group is absent: any use of it is a ``MissingVariable``)."""
    check(body)
    context = {
        root: Scope(root, values) for root, values in variables.items() if values is not None
    }
    pieces: list[str] = []
    size = 0
    try:
        # Streamed so that an oversized text is stopped as it grows, not after.
        for piece in _env.from_string(body).generate(context):
            size += len(piece)
            if size > OUTPUT_MAX:
                _too_big_text()
            pieces.append(piece)
    except _Missing as exc:
        raise MissingVariable(exc.message or "a variable") from None
    except SecurityError as exc:
        raise TemplateInvalid(f"not allowed in a template: {exc}") from None
    except UndefinedError as exc:  # pragma: no cover - every undefined is a _Missing
        raise MissingVariable(exc.message or "a variable") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateInvalid(f"the template fails: {exc}") from None
    return "".join(pieces)


def _too_big_text() -> NoReturn:
    raise TemplateInvalid(f"the rendered text is longer than {OUTPUT_MAX} characters")
