"""Unit tests of per-datasite reliability and execution statistics."""

from __future__ import annotations

import json

import pytest

from coordinator.reliability import (
    RECENT_WINDOW,
    ExecutionStats,
    SiteReliability,
    record_outcome,
    record_round,
)
from plantfed.messages import OutcomeStatus


def test_new_site_has_neutral_score() -> None:
    rel = SiteReliability()

    assert rel.success_rate is None
    assert rel.mean_response_s is None
    assert rel.reliability_score == pytest.approx(0.75 * 0.5 + 0.25 * 1.0)


def test_completed_outcome_counts_success_and_time() -> None:
    rel = record_outcome(SiteReliability(), OutcomeStatus.COMPLETED, 12.0, deadline_s=60.0)
    rel = record_outcome(rel, "completed", 18.0, deadline_s=60.0)

    assert rel.participations == 2
    assert rel.successes == 2
    assert rel.total_response_s == pytest.approx(30.0)
    assert rel.mean_response_s == pytest.approx(15.0)
    assert rel.success_rate == 1.0
    assert rel.timeliness == pytest.approx(1.0)
    assert rel.last_failure_reason is None


@pytest.mark.parametrize(
    ("status", "counter"),
    [
        (OutcomeStatus.TIMED_OUT, "timeouts"),
        (OutcomeStatus.DISCARDED, "timeouts"),
        (OutcomeStatus.FAILED, "failures"),
        (OutcomeStatus.LOST, "failures"),
        (OutcomeStatus.REJECTED, "rejections"),
    ],
)
def test_unsuccessful_outcome_counters(status: OutcomeStatus, counter: str) -> None:
    rel = record_outcome(SiteReliability(), status, 60.0, reason="boom")

    assert getattr(rel, counter) == 1
    assert rel.participations == 1
    assert rel.successes == 0
    assert rel.total_response_s == 0.0
    assert rel.success_rate == 0.0
    assert rel.last_failure_reason == "boom"
    assert rel.recent == (status,)


def test_failure_reason_defaults_to_status() -> None:
    rel = record_outcome(SiteReliability(), OutcomeStatus.TIMED_OUT, 60.0)

    assert rel.last_failure_reason == "timed_out"


def test_record_outcome_leaves_input_unchanged() -> None:
    before = SiteReliability()

    record_outcome(before, OutcomeStatus.FAILED, 1.0)

    assert before == SiteReliability()


def test_timeouts_lower_score_more_than_slow_success() -> None:
    slow = SiteReliability()
    timing_out = SiteReliability()
    for _ in range(5):
        slow = record_outcome(slow, OutcomeStatus.COMPLETED, 55.0, deadline_s=60.0)
        timing_out = record_outcome(timing_out, OutcomeStatus.TIMED_OUT, 60.0, deadline_s=60.0)

    assert 0.0 <= timing_out.reliability_score < slow.reliability_score <= 1.0
    assert slow.timeliness < 1.0


def test_fast_success_keeps_full_timeliness() -> None:
    rel = SiteReliability()
    for _ in range(4):
        rel = record_outcome(rel, OutcomeStatus.COMPLETED, 10.0, deadline_s=60.0)

    assert rel.timeliness == pytest.approx(1.0)
    assert rel.reliability_score == pytest.approx(0.75 * 5 / 6 + 0.25)


def test_recent_window_keeps_newest() -> None:
    rel = SiteReliability()
    rel = record_outcome(rel, OutcomeStatus.FAILED, 1.0)
    for _ in range(RECENT_WINDOW):
        rel = record_outcome(rel, OutcomeStatus.COMPLETED, 1.0)

    assert len(rel.recent) == RECENT_WINDOW
    assert rel.recent_count(OutcomeStatus.FAILED) == 0
    assert rel.failures == 1


def test_record_outcome_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="not a valid"):
        record_outcome(SiteReliability(), "exploded", 1.0)
    with pytest.raises(ValueError, match="response_s"):
        record_outcome(SiteReliability(), OutcomeStatus.COMPLETED, -1.0)


def test_reliability_json_round_trip() -> None:
    rel = record_outcome(SiteReliability(), OutcomeStatus.COMPLETED, 3.0, deadline_s=4.0)
    rel = record_outcome(rel, OutcomeStatus.REJECTED, 2.0, reason="shape mismatch")

    data = json.loads(json.dumps(rel.to_json()))

    assert data["success_rate"] == 0.5
    assert SiteReliability.from_json(data) == rel


def test_record_round_counts() -> None:
    stats = record_round(
        ExecutionStats(),
        completed=True,
        participations=5,
        failures=1,
        expected=6,
        adaptive_wait=True,
        closed_early=True,
    )
    stats = record_round(
        stats,
        completed=False,
        participations=4,
        failures=4,
        expected=6,
        closed_at_deadline=True,
        retries=1,
    )

    assert stats.rounds_completed == 1
    assert stats.rounds_failed == 1
    assert stats.rounds_total == 2
    assert stats.total_participations == 9
    assert stats.datasite_failures == 5
    assert stats.adaptive_waits == 1
    assert stats.early_closes == 1
    assert stats.deadline_closes == 1
    assert stats.retries == 1
    assert stats.round_failure_rate == 0.5
    assert stats.participation_rate == pytest.approx(9 / 12)


def test_record_round_rejects_inconsistent_counts() -> None:
    with pytest.raises(ValueError, match="exceed"):
        record_round(ExecutionStats(), completed=True, participations=1, failures=2, expected=2)
    with pytest.raises(ValueError, match=">= 0"):
        record_round(ExecutionStats(), completed=True, participations=-1, failures=0, expected=2)


def test_stats_json_round_trip() -> None:
    stats = ExecutionStats(rounds_completed=3, retries=2, expected_participations=9)

    assert ExecutionStats.loads(stats.dumps()) == stats
    assert ExecutionStats.from_json({"rounds_completed": 1}) == ExecutionStats(rounds_completed=1)


def test_empty_stats_rates() -> None:
    stats = ExecutionStats()

    assert stats.round_failure_rate == 0.0
    assert stats.participation_rate is None
