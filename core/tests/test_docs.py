"""Every hook spec has a docs entry with its exact signature and a test of its own."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from tidings import hookspecs

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "plugin_hooks.md"
TEST_DIRS = [ROOT / "core" / "tests", ROOT / "tests"]


def hook_specs() -> list[str]:
    return sorted(
        name
        for name, func in vars(hookspecs).items()
        if inspect.isfunction(func) and hasattr(func, "tidings_spec")
    )


def signature(name: str) -> str:
    params = inspect.signature(getattr(hookspecs, name)).parameters
    return f"{name}({', '.join(params)})"


def test_the_contract_has_the_four_operations() -> None:
    assert set(hook_specs()) >= {"receive", "send", "delivery_status", "lookup_contacts"}


@pytest.mark.parametrize("hook", hook_specs())
def test_hook_has_docs_entry(hook: str) -> None:
    headings = re.findall(r"^## (.+)$", DOCS.read_text(), flags=re.MULTILINE)
    assert signature(hook) in headings, f"docs/plugin_hooks.md needs '## {signature(hook)}'"


@pytest.mark.parametrize("hook", hook_specs())
def test_hook_has_docstring_with_signature(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert doc.startswith(f"``{hook}("), f"{hook}'s docstring must start with its signature"
    assert "Return" in doc or "return" in doc, f"{hook}'s docstring must give its return rule"


@pytest.mark.parametrize("hook", hook_specs())
def test_hook_has_a_test(hook: str) -> None:
    pattern = re.compile(rf"^(async )?def test_hook_{hook}\(", re.MULTILINE)
    found = [
        path
        for folder in TEST_DIRS
        if folder.exists()
        for path in folder.rglob("test_*.py")
        if pattern.search(path.read_text())
    ]
    assert found, f"no test named test_hook_{hook}"
