"""The conformance suite fails loudly on channels that each break one rule, passes on good ones.

Every variant is a real distribution (``.dist-info`` with a ``tidings`` entry point) on the
path of a fresh pytest run (``pytester``), and the vendor's subclass is the same
``AcmeConformance`` each time: only the channel behind the entry point changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tidings.testing.conformance import iter_checks

pytest_plugins = ["pytester"]

ALL_CHECKS = {name for name, _ in iter_checks()}
NOT_FOR_A_SENDER = {
    "test_refuses_to_send_where_capabilities_say_no",
    "test_lookup_contacts_follows_the_contract",
}
ACME_CHECKS = ALL_CHECKS - NOT_FOR_A_SENDER


def install(pytester: pytest.Pytester, name: str, attr: str) -> None:
    """Put a distribution whose entry point ``name`` is ``conformance_reference:attr``."""
    site = pytester.path / "site"
    info = site / f"tidings_{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tidings-{name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tidings]\n{name} = conformance_reference:{attr}\n")
    pytester.syspathinsert(site)


def run_suite(pytester: pytest.Pytester, name: str, attr: str) -> dict[str, dict[str, str]]:
    """Run ``AcmeConformance`` against the variant; the outcome and message per check."""
    install(pytester, name, attr)
    pytester.makepyfile(
        **{
            f"test_{name}_conformance": f"""
                from conformance_reference import AcmeConformance

                class TestAcme(AcmeConformance):
                    plugin = "{name}"
            """
        }
    )
    report = pytester.path / "report.json"
    pytester.runpytest_inprocess(
        "-p",
        "tidings.testing.conformance",
        f"--conformance-report={report}",
        "-q",
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
    )
    data = json.loads(report.read_text())
    return {
        row["check"]: {"outcome": row["outcome"], "message": row["message"]}
        for row in data["checks"]
    }


def failed(results: dict[str, dict[str, str]]) -> set[str]:
    return {name for name, row in results.items() if row["outcome"] != "passed"}


def test_the_reference_channel_passes_every_applicable_check(pytester: pytest.Pytester) -> None:
    results = run_suite(pytester, "acme_good", "GOOD")
    assert set(results) == ACME_CHECKS
    assert failed(results) == set(), results


def test_not_applicable_checks_are_deselected_with_a_reason(pytester: pytest.Pytester) -> None:
    run_suite(pytester, "acme_good", "GOOD")
    data = json.loads((pytester.path / "report.json").read_text())
    reasons = {row["check"]: row["reason"] for row in data["not_applicable"]}
    assert reasons == {
        "test_refuses_to_send_where_capabilities_say_no": (
            "the channel may send (can_reply or can_initiate)"
        ),
        "test_lookup_contacts_follows_the_contract": "the plugin does not look up contacts",
    }


def test_wrong_signature_accepted_fails(pytester: pytest.Pytester) -> None:
    results = run_suite(pytester, "acme_forged", "FORGED_ACCEPTED")
    assert failed(results) == {"test_rejects_unsigned_and_forged_requests"}
    message = results["test_rejects_unsigned_and_forged_requests"]["message"]
    assert "text unsigned: returned" in message
    assert "instead of raising SignatureError" in message


def test_status_moving_backwards_fails(pytester: pytest.Pytester) -> None:
    results = run_suite(pytester, "acme_backwards", "STATUS_BACKWARDS")
    assert failed(results) == {
        "test_status_words_map_into_delivery_status",
        "test_status_replay_in_any_order_never_regresses",
    }
    assert "'read'" in results["test_status_words_map_into_delivery_status"]["message"]


def test_unknown_status_dropped_fails(pytester: pytest.Pytester) -> None:
    results = run_suite(pytester, "acme_dropped", "UNKNOWN_DROPPED")
    assert failed(results) == {"test_unknown_status_word_is_kept_as_unknown"}
    assert "gave []" in results["test_unknown_status_word_is_kept_as_unknown"]["message"]


def test_unstable_provider_ids_fail_redelivery(pytester: pytest.Pytester) -> None:
    results = run_suite(pytester, "acme_unstable", "UNSTABLE_IDS")
    assert failed(results) == {
        "test_redelivery_yields_the_same_provider_ids",
        "test_receive_normalises_samples",
    }
    assert (
        "store the messages twice"
        in (results["test_redelivery_yields_the_same_provider_ids"]["message"])
    )


def test_key_error_on_malformed_input_fails(pytester: pytest.Pytester) -> None:
    results = run_suite(pytester, "acme_crash", "CRASHES_ON_MALFORMED")
    assert failed(results) == {"test_malformed_payloads_raise_malformed_payload"}
    assert (
        "raised KeyError" in results["test_malformed_payloads_raise_malformed_payload"]["message"]
    )


def test_reply_where_the_capabilities_say_no_fails(pytester: pytest.Pytester) -> None:
    results = run_suite(pytester, "acme_replies", "REPLIES_ANYWAY")
    assert failed(results) == {"test_refuses_to_send_where_capabilities_say_no"}
    assert (
        "send called the provider 1 time(s)"
        in (results["test_refuses_to_send_where_capabilities_say_no"]["message"])
    )
    # A web form generates neither send nor status checks, only the refusal check.
    assert "test_send_returns_provider_id_and_status" not in results
    assert "test_status_words_map_into_delivery_status" not in results


def test_web_form_without_send_passes(pytester: pytest.Pytester) -> None:
    results = run_suite(pytester, "acme_form", "WEBFORM_REFUSING")
    assert failed(results) == set(), results
    assert "test_refuses_to_send_where_capabilities_say_no" in results


def test_settings_accepting_a_bad_value_fail(pytester: pytest.Pytester) -> None:
    results = run_suite(pytester, "acme_lax", "LAX_SETTINGS")
    assert failed(results) == {"test_settings_reject_bad_values"}
    assert (
        "sender is not a number: accepted"
        in (results["test_settings_reject_bad_values"]["message"])
    )


def test_unclassified_rate_limit_fails(pytester: pytest.Pytester) -> None:
    results = run_suite(pytester, "acme_ratelimit", "RATE_LIMIT_PERMANENT")
    assert failed(results) == {"test_send_transient_failures_are_classified"}
    assert (
        "rate limited: raised PermanentSendError"
        in (results["test_send_transient_failures_are_classified"]["message"])
    )


def test_plugin_that_does_not_load_fails_registration(pytester: pytest.Pytester) -> None:
    # An entry point whose target does not exist: nothing else can run either.
    results = run_suite(pytester, "acme_missing", "NO_SUCH_PLUGIN")
    assert "failed to load" in results["test_registers_through_entry_point"]["message"]
    assert failed(results) == set(results)
    assert set(results) == ALL_CHECKS  # nothing deselected for a channel that cannot load


def test_base_class_never_runs_on_its_own(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_only_import="""
            pytest_plugins = ["tidings.testing.conformance"]
            from tidings.testing.conformance import ChannelConformance
            from conformance_reference import AcmeConformance
        """
    )
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes()


def test_forgetting_the_plugin_fails_loudly(pytester: pytest.Pytester) -> None:
    install(pytester, "acme_good", "GOOD")
    pytester.makepyfile(
        test_noplugin="""
            from conformance_reference import AcmeConformance

            class TestAcme(AcmeConformance):
                plugin = "acme_good"
        """
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:tidings.testing.conformance")
    result.stdout.fnmatch_lines(["*add pytest_plugins = *tidings.testing.conformance*"])
    assert result.ret != 0


def test_report_file_lists_each_check_with_its_description(pytester: pytest.Pytester) -> None:
    run_suite(pytester, "acme_good", "GOOD")
    data = json.loads(Path(pytester.path / "report.json").read_text())
    docs = {row["check"]: row["doc"] for row in data["checks"]}
    assert docs["test_rejects_unsigned_and_forged_requests"].startswith("Missing or wrong")
    assert data["exitstatus"] == 0
