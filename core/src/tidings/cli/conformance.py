"""``tidings conformance PLUGIN``: run an installed channel's conformance suite.

A plugin ships its ``ChannelConformance`` subclass in a module named by an entry point in
the ``tidings.conformance`` group (``telegram = "tidings_telegram.conformance"``), so a
deployment can check the very distribution it installed, not the vendor's checkout.
pytest runs in a child process — the suite imports the plugin and patches HTTP, none of
which should leak into the command — with an empty configuration, so a project's own
pytest settings and conftest files never change the verdict.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

CONFORMANCE_GROUP = "tidings.conformance"

out = Console()
err = Console(stderr=True)


def suite_path(plugin: str) -> Path:
    """The file of ``plugin``'s conformance module, found through its entry point."""
    found = [ep for ep in entry_points(group=CONFORMANCE_GROUP) if ep.name == plugin]
    if not found:
        known = sorted(ep.name for ep in entry_points(group=CONFORMANCE_GROUP))
        raise LookupError(
            f"no {CONFORMANCE_GROUP!r} entry point named {plugin!r} "
            f"(plugins with a suite: {', '.join(known) or 'none'}); "
            "give the suite's file with --path"
        )
    module = found[0].value.partition(":")[0].strip()
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise LookupError(f"conformance module {module!r} cannot be found: {exc}") from None
    if spec is None or spec.origin is None:
        raise LookupError(f"conformance module {module!r} is not installed")
    return Path(spec.origin)


def run_suite(path: Path, workdir: Path, extra: list[str]) -> tuple[int, dict[str, Any], str]:
    """Run pytest on ``path``; its exit status, the JSON report and the console output."""
    ini = workdir / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")
    report = workdir / "report.json"
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(path),
        "-c",
        str(ini),
        "--rootdir",
        str(workdir),
        "-p",
        "tidings.testing.conformance",
        "-p",
        "no:cacheprovider",
        f"--conformance-report={report}",
        "-q",
        "--color=no",
        *extra,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, check=False, cwd=workdir)
    data: dict[str, Any] = {}
    if report.exists():
        data = json.loads(report.read_text(encoding="utf-8"))
    return proc.returncode, data, proc.stdout + proc.stderr


def conformance(
    plugin: Annotated[str, typer.Argument(help="The plugin's entry-point name, e.g. telegram")],
    path: Annotated[
        Path | None,
        typer.Option("--path", help="Run this conformance module instead of the entry point's."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show pytest's output.")] = False,
    pytest_args: Annotated[
        list[str] | None, typer.Option("--pytest-arg", help="Passed on to pytest (repeatable).")
    ] = None,
) -> None:
    """Run PLUGIN's channel conformance suite; exit 0 only when every check passes."""
    try:
        import pytest  # noqa: F401  (only to fail early with a useful message)
    except ImportError:
        err.print("[bold red]error:[/] the suite needs pytest: install tidings-PLUGIN[conformance]")
        raise typer.Exit(2) from None
    try:
        target = path or suite_path(plugin)
    except LookupError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    with tempfile.TemporaryDirectory(prefix="tidings-conformance-") as tmp:
        status, data, output = run_suite(target.resolve(), Path(tmp), list(pytest_args or []))
    checks = data.get("checks", [])
    if verbose or not checks:
        err.print(output, markup=False, highlight=False)
    table = Table(title=f"conformance of {plugin} ({target.name})")
    table.add_column("check", no_wrap=True)
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    styles = {"passed": "[green]pass[/]", "failed": "[bold red]FAIL[/]", "error": "[red]ERROR[/]"}
    for row in checks:
        detail = row.get("doc", "") if row["outcome"] == "passed" else row.get("message", "")
        table.add_row(
            row["check"].removeprefix("test_"), styles.get(row["outcome"], row["outcome"]), detail
        )
    for row in data.get("not_applicable", []):
        table.add_row(row["check"].removeprefix("test_"), "[dim]n/a[/]", f"[dim]{row['reason']}[/]")
    out.print(table)
    passed = sum(1 for row in checks if row["outcome"] == "passed")
    ok = status == 0 and bool(checks) and passed == len(checks)
    summary = f"{passed}/{len(checks)} checks passed"
    out.print(f"[bold green]{summary}[/]" if ok else f"[bold red]{summary}[/]")
    if not ok:
        raise typer.Exit(1)
