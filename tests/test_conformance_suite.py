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
POLL_CHECKS = {
    "test_polled_batches_carry_json_cursors",
    "test_polled_items_need_no_acknowledge_and_keep_their_ids",
}
NOT_FOR_A_SENDER = {
    "test_refuses_to_send_where_capabilities_say_no",
    "test_lookup_contacts_follows_the_contract",
    *POLL_CHECKS,
}
ACME_CHECKS = ALL_CHECKS - NOT_FOR_A_SENDER


@pytest.fixture(scope="module", autouse=True)
def _store_modules_imported(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run the store once in this process before any in-process pytest run.

    pytester forgets the modules an in-process run imported; SQLAlchemy's dialect modules,
    imported again by the next run, would register their SQL functions twice (an
    SAWarning, a RuntimeWarning the root configuration turns into an error). Importing
    them here, outside the runs, keeps them loaded.
    """
    import anyio
    import sqlalchemy.dialects.postgresql
    import sqlalchemy.dialects.sqlite  # noqa: F401

    from tidings.conversations import Conversations  # noqa: F401
    from tidings.store import Store

    async def upgrade() -> None:
        store = Store.open(f"sqlite:///{tmp_path_factory.mktemp('warm') / 'warm.db'}")
        try:
            await store.upgrade()
        finally:
            await store.close()

    anyio.run(upgrade)


def install(pytester: pytest.Pytester, name: str, attr: str) -> None:
    """Put a distribution whose entry point ``name`` is ``conformance_reference:attr``."""
    site = pytester.path / "site"
    info = site / f"tidings_{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tidings-{name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tidings]\n{name} = conformance_reference:{attr}\n")
    pytester.syspathinsert(site)


def run_suite(
    pytester: pytest.Pytester,
    name: str,
    attr: str,
    base: str = "AcmeConformance",
    body: str = "",
) -> dict[str, dict[str, str]]:
    """Run the vendor's ``base`` suite against the variant; outcome and message per check."""
    install(pytester, name, attr)
    pytester.makepyfile(
        **{
            f"test_{name}_conformance": f"""
                import conformance_reference
                from conformance_reference import {base}

                class TestAcme({base}):
                    plugin = "{name}"
                    {body}
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
        **dict.fromkeys(POLL_CHECKS, "the channel is pushed through webhooks, not polled"),
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


# --- store-backed checks: the default ingestion, and ingestion broken on purpose ----------


def test_an_ingestion_that_does_not_dedupe_fails_redelivery(pytester: pytest.Pytester) -> None:
    results = run_suite(
        pytester,
        "acme_nodedupe",
        "GOOD",
        "AcmeWithIngestion",
        "ingestion_class = conformance_reference.NoDedupeIngestion",
    )
    assert failed(results) == {"test_redelivery_yields_the_same_provider_ids"}
    message = results["test_redelivery_yields_the_same_provider_ids"]["message"]
    assert "store: text: redelivery stored 1 new messages (1 -> 2 in the store)" in message


def test_an_ingestion_that_stores_before_verifying_fails(pytester: pytest.Pytester) -> None:
    results = run_suite(
        pytester,
        "acme_eager",
        "GOOD",
        "AcmeWithIngestion",
        "ingestion_class = conformance_reference.StoresBeforeVerifying",
    )
    assert failed(results) == {"test_rejects_unsigned_and_forged_requests"}
    message = results["test_rejects_unsigned_and_forged_requests"]["message"]
    assert "text unsigned: the store went from 0 to 1 messages" in message


def test_forged_requests_accepted_are_stored_by_the_default_ingestion(
    pytester: pytest.Pytester,
) -> None:
    results = run_suite(pytester, "acme_forged_store", "FORGED_ACCEPTED")
    message = results["test_rejects_unsigned_and_forged_requests"]["message"]
    assert "through the store: text unsigned: returned" in message
    assert "the store went from 0 to 1 messages" in message


# --- polled channels ----------------------------------------------------------------------

FEED_CHECKS = ALL_CHECKS - {
    "test_rejects_unsigned_and_forged_requests",
    "test_inbound_attachments_keep_name_type_and_size",
    "test_send_returns_provider_id_and_status",
    "test_send_transient_failures_are_classified",
    "test_send_permanent_failures_are_classified",
    "test_outbound_attachments_reach_the_provider",
    "test_status_words_map_into_delivery_status",
    "test_unknown_status_word_is_kept_as_unknown",
    "test_status_replay_in_any_order_never_regresses",
    "test_lookup_contacts_follows_the_contract",
}


def test_the_polled_reference_passes_every_applicable_check(pytester: pytest.Pytester) -> None:
    results = run_suite(pytester, "feed_good", "FEED_GOOD", "AcmeFeedConformance")
    assert set(results) == FEED_CHECKS
    assert failed(results) == set(), results


def test_a_cursor_that_is_not_json_fails(pytester: pytest.Pytester) -> None:
    results = run_suite(pytester, "feed_datetime", "FEED_CURSOR_NOT_JSON", "AcmeFeedConformance")
    assert failed(results) == {"test_polled_batches_carry_json_cursors"}
    message = results["test_polled_batches_carry_json_cursors"]["message"]
    assert "is not JSON-serialisable" in message


def test_a_cursor_that_never_advances_fails(pytester: pytest.Pytester) -> None:
    results = run_suite(pytester, "feed_stuck", "FEED_CURSOR_STUCK", "AcmeFeedConformance")
    assert failed(results) == {"test_polled_items_need_no_acknowledge_and_keep_their_ids"}
    message = results["test_polled_items_need_no_acknowledge_and_keep_their_ids"]["message"]
    assert "resuming from the last cursor brought back items ['0', '1', '2']" in message
