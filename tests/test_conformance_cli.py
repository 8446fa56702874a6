"""``tidings conformance`` run as an operator runs it, on real installed distributions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

TIDINGS = str(Path(sys.executable).parent / "tidings")
REFERENCE = Path(__file__).with_name("conformance_reference.py")


def make_dist(site: Path, name: str, plugin_attr: str) -> None:
    """A distribution whose plugin is a variant of the reference channel, with its suite."""
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(REFERENCE, site / "tidings_acme_ref.py")
    (site / f"tidings_{name}_conformance.py").write_text(
        textwrap.dedent(f"""
            from tidings_acme_ref import AcmeConformance

            class TestAcme(AcmeConformance):
                plugin = "{name}"
        """)
    )
    info = site / f"tidings_{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tidings-{name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[tidings]\n{name} = tidings_acme_ref:{plugin_attr}\n\n"
        f"[tidings.conformance]\n{name} = tidings_{name}_conformance\n"
    )


def conformance(*args: str, site: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("PYTHONPATH", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [TIDINGS, "conformance", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_broken_channel_exits_non_zero_naming_the_check(tmp_path: Path) -> None:
    make_dist(tmp_path / "site", "acme_broken", "RATE_LIMIT_PERMANENT")
    result = conformance("acme_broken", site=tmp_path / "site")
    assert result.returncode == 1, result.stdout + result.stderr
    (row,) = [line for line in result.stdout.splitlines() if "send_transient_failures" in line]
    assert "FAIL" in row
    assert "rate limited: raised PermanentSendError" in row
    assert "15/16 checks passed" in result.stdout


def test_correct_channel_from_a_temporary_distribution_exits_zero(tmp_path: Path) -> None:
    make_dist(tmp_path / "site", "acme_ok", "GOOD")
    result = conformance("acme_ok", site=tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "16/16 checks passed" in result.stdout
    assert "lookup_contacts_follows_the_contract" in result.stdout  # listed as n/a


def test_example_telegram_channel_exits_zero() -> None:
    result = conformance("telegram")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "13/13 checks passed" in result.stdout
    assert "the channel has no delivery reports" in result.stdout


def test_shipped_twilio_channel_exits_zero() -> None:
    result = conformance("sms_twilio")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "16/16 checks passed" in result.stdout
    assert "the channel is pushed through webhooks, not polled" in result.stdout


def test_shipped_email_channel_exits_zero_with_its_own_mail_servers() -> None:
    # The child pytest has an empty configuration: the suite module itself loads
    # tidings.testing.mailservers, which starts a private Dovecot and SMTP server.
    result = conformance("email_imap")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "17/17 checks passed" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "polled_items_need_no_ack" in line]
    assert len(rows) == 1
    assert "pass" in rows[0]


def test_unknown_plugin_is_a_usage_error() -> None:
    result = conformance("no_such_plugin")
    assert result.returncode == 2
    assert "no 'tidings.conformance' entry point named 'no_such_plugin'" in result.stderr
    assert "telegram" in result.stderr


def test_path_option_runs_a_suite_file_directly(tmp_path: Path) -> None:
    make_dist(tmp_path / "site", "acme_file", "UNKNOWN_DROPPED")
    suite = tmp_path / "site" / "tidings_acme_file_conformance.py"
    result = conformance("acme_file", "--path", str(suite), site=tmp_path / "site")
    assert result.returncode == 1
    assert "unknown_status_word_is_kept_as_unknown" in result.stdout
