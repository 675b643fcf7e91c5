"""Applying a finished round to the campaign state: stats, best model, stopping rules."""

from __future__ import annotations

from dataclasses import replace

from coordinator.checkpoint import CampaignState
from coordinator.config import campaign_config_from_dict
from coordinator.outcome import apply_round, reconsider_stop
from coordinator.rounds import RoundResult
from coordinator.tuning import RoundTiming
from plantfed.keys import RoundRef
from plantfed.messages import OutcomeStatus, SiteOutcome

TIMING = RoundTiming(60.0, 70.0, 90.0, 60.0, 5.0, 1.0, False, False, "defaults")


def config(**extra: object):
    document = {"id": "c", "rounds": 10, "trainer": {"name": "noop"}, **extra}
    return campaign_config_from_dict(document)


def result(
    index: int,
    success: bool,
    completed=("a", "b"),
    failed=None,
    rejected=None,
    status="all_answered",
) -> RoundResult:
    outcomes = {
        s: SiteOutcome("c", index, 1, s, OutcomeStatus.COMPLETED, 10, train_s=2.0)
        for s in completed
    }
    return RoundResult(
        ref=RoundRef("c", index),
        success=success,
        status=status,
        completed_datasites=list(completed),
        failed_datasites=dict(failed or {}),
        excluded_datasites={},
        datasite_results=outcomes,
        execution_time_s=3.0,
        model_hash_in=f"m{index}",
        model_hash_out=f"m{index + 1}" if success else f"m{index}",
        rejected_datasites=dict(rejected or {}),
    )


def start() -> CampaignState:
    return CampaignState(campaign_id="c", next_round=0, global_model_hash="m0")


def test_successful_round_advances_model_and_stats() -> None:
    state = apply_round(config(), start(), [result(0, True)], TIMING, {"f1": 0.5}, "f1", True)

    assert state.next_round == 1
    assert state.global_model_hash == "m1"
    assert state.stats.rounds_completed == 1
    assert state.stats.total_participations == 2
    assert state.best_metric == 0.5
    assert state.best_model_hash == "m1"
    assert state.history[-1].response_times_s == (2.0, 2.0)
    assert state.reliability["a"].successes == 1


def test_failed_attempts_count_as_retries() -> None:
    attempts = [
        result(0, False, completed=("a",), failed={"b": "lost: worker gone"}),
        result(0, True, completed=("a",)),
    ]

    state = apply_round(config(), start(), attempts, TIMING, {}, "f1", True)

    assert state.stats.retries == 1
    assert state.stats.datasite_failures == 1
    assert state.reliability["b"].failures == 1
    assert state.history[-1].attempts == 2


def test_early_stop_after_patience() -> None:
    cfg = config(early_stopping={"metric": "f1", "patience": 2, "min_delta": 0.01})
    state = start()
    for index, f1 in enumerate([0.5, 0.505, 0.509]):
        state = apply_round(cfg, state, [result(index, True)], TIMING, {"f1": f1}, "f1", True)

    assert state.stopped_reason is not None
    assert state.stopped_reason.startswith("early stop")
    assert state.best_round == 0


def test_lower_is_better_metric_tracks_minimum() -> None:
    state = start()
    for index, rmse in enumerate([30.0, 20.0, 25.0]):
        state = apply_round(
            config(), state, [result(index, True)], TIMING, {"rmse": rmse}, "rmse", False
        )

    assert state.best_metric == 20.0
    assert state.best_round == 1
    assert state.rounds_without_improvement == 1


def test_failure_rate_ends_campaign() -> None:
    cfg = config(failures={"max_failure_rate": 0.5})
    state = start()
    for index in range(3):
        state = apply_round(cfg, state, [result(index, False)], TIMING, {}, "f1", True)

    assert state.stopped_reason is not None
    assert state.stopped_reason.startswith("failure limit")
    assert "3 of 3 rounds failed" in state.stopped_reason


def test_repeated_rejections_quarantine_site() -> None:
    cfg = config(failures={"quarantine_after_rejections": 2, "quarantine_rounds": 3})
    state = start()
    for index in range(2):
        attempt = result(
            index,
            True,
            completed=("a", "b"),
            failed={"c": "rejected: NaN"},
            rejected={"c": "rejected: NaN"},
        )
        state = apply_round(cfg, state, [attempt], TIMING, {}, "f1", True)

    assert state.quarantine == {"c": 5}
    assert state.reliability["c"].rejections == 2


def test_quarantine_expires() -> None:
    state = replace(start(), next_round=4, quarantine={"c": 5})

    state = apply_round(config(), state, [result(4, True)], TIMING, {}, "f1", True)

    assert state.quarantine == {}


def test_round_lost_by_redis_not_charged_to_sites() -> None:
    lost = result(
        0,
        False,
        completed=(),
        failed={"a": "round record lost", "b": "round record lost"},
        status="record_lost",
    )
    attempts = [lost, result(0, True)]

    state = apply_round(config(), start(), attempts, TIMING, {}, "f1", True)

    assert state.stats.datasite_failures == 0
    assert state.stats.total_participations == 2
    assert state.stats.retries == 1
    assert state.reliability["a"].failures == 0
    assert state.reliability["a"].successes == 1


def test_stopped_campaign_continues_after_limit_raised() -> None:
    strict = config(failures={"max_failure_rate": 0.5})
    state = start()
    for index in range(3):
        state = apply_round(strict, state, [result(index, False)], TIMING, {}, "f1", True)
    relaxed = config(failures={"max_failure_rate": 1.0})

    assert reconsider_stop(strict, state).stopped_reason is not None
    assert reconsider_stop(relaxed, state).stopped_reason is None


def test_site_back_from_quarantine_not_requarantined() -> None:
    cfg = config(failures={"quarantine_after_rejections": 2, "quarantine_rounds": 1})
    state = start()
    for index in range(2):
        attempt = result(
            index,
            True,
            completed=("a", "b"),
            failed={"c": "rejected: NaN"},
            rejected={"c": "rejected: NaN"},
        )
        state = apply_round(cfg, state, [attempt], TIMING, {}, "f1", True)
    assert state.quarantine == {"c": 3}

    state = apply_round(cfg, state, [result(2, True)], TIMING, {}, "f1", True)
    state = apply_round(cfg, state, [result(3, True)], TIMING, {}, "f1", True)

    assert state.quarantine == {}
