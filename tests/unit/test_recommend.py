"""Unit tests of the plain-language recommendation rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from coordinator.config import CampaignConfig, RoundConfig
from coordinator.recommend import recommendations
from coordinator.reliability import ExecutionStats, SiteReliability, record_outcome
from coordinator.tuning import PRESETS, NetworkPreset, plan_round_timing
from plantfed.messages import OutcomeStatus

CONFIG = CampaignConfig(id="c1", trainer="ai4i-mlp", rounds=10)
HEALTHY_STATS = ExecutionStats(
    rounds_completed=10, total_participations=40, expected_participations=40
)

OK = OutcomeStatus.COMPLETED


def history(statuses: Sequence[OutcomeStatus], response_s: float = 10.0) -> SiteReliability:
    rel = SiteReliability()
    for status in statuses:
        rel = record_outcome(rel, status, response_s, deadline_s=60.0, reason="disk full")
    return rel


def healthy_sites() -> dict[str, SiteReliability]:
    return {f"plant-{name}": history([OK] * 10) for name in "abcd"}


def test_healthy_campaign_has_no_recommendations() -> None:
    assert recommendations(HEALTHY_STATS, healthy_sites(), None, CONFIG) == []


def test_site_timeouts_reported() -> None:
    timeout = OutcomeStatus.TIMED_OUT
    sites = healthy_sites()
    sites["plant-h"] = history([OK, timeout, OK, timeout, timeout, timeout])

    found = recommendations(HEALTHY_STATS, sites, None, CONFIG)

    assert found == [
        "plant-h timed out in 4 of its last 6 rounds; raise round.deadline_s (now 1800 s) "
        "or check its link"
    ]


def test_occasional_timeout_not_reported() -> None:
    sites = healthy_sites()
    sites["plant-h"] = history([OK, OK, OutcomeStatus.TIMED_OUT, OK, OK, OK])

    assert recommendations(HEALTHY_STATS, sites, None, CONFIG) == []


def test_site_failures_name_last_error() -> None:
    sites = healthy_sites()
    sites["plant-f"] = history([OK, OutcomeStatus.FAILED, OutcomeStatus.LOST])

    found = recommendations(HEALTHY_STATS, sites, None, CONFIG)

    assert len(found) == 1
    assert found[0].startswith("plant-f failed in 2 of its last 3 rounds (last error: disk full)")
    assert "check its worker log" in found[0]


def test_rejections_reported() -> None:
    sites = healthy_sites()
    sites["plant-r"] = history([OK] * 6 + [OutcomeStatus.REJECTED] * 2)

    found = recommendations(HEALTHY_STATS, sites, None, CONFIG)

    assert len(found) == 1
    assert "plant-r had 2 of its last 8 updates rejected" in found[0]
    assert "quarantined after 3 rejections" in found[0]


def test_straggler_reported() -> None:
    sites = healthy_sites()
    sites["plant-s"] = history([OK] * 5, response_s=50.0)

    found = recommendations(HEALTHY_STATS, sites, None, CONFIG)

    assert len(found) == 1
    assert found[0].startswith("plant-s is a straggler: mean response 50.0 s")
    assert "median of 10.0 s" in found[0]


def test_deadline_closes_reported() -> None:
    stats = replace(HEALTHY_STATS, deadline_closes=3)

    found = recommendations(stats, healthy_sites(), None, CONFIG)

    assert len(found) == 1
    assert found[0].startswith("3 of 10 rounds closed at the deadline: the deadline is tight")


def test_rare_deadline_close_not_reported() -> None:
    stats = replace(HEALTHY_STATS, deadline_closes=1)

    assert recommendations(stats, healthy_sites(), None, CONFIG) == []


def test_capped_deadline_reported() -> None:
    timing = plan_round_timing([5000.0] * 10, PRESETS[NetworkPreset.WAN])

    found = recommendations(HEALTHY_STATS, healthy_sites(), timing, CONFIG)

    assert found == [
        "the learned deadline was capped at round.deadline_s = 1800 s; "
        "raise it if slow sites should still count"
    ]


def test_low_participation_reported() -> None:
    stats = replace(HEALTHY_STATS, total_participations=18)

    found = recommendations(stats, healthy_sites(), None, CONFIG)

    assert found == ["participation is 45%: check drained or lost sites"]


def test_participation_accounts_for_sampling() -> None:
    sampled = replace(CONFIG, round=RoundConfig(sample_fraction=0.5))
    stats = replace(HEALTHY_STATS, total_participations=20)
    low_stats = replace(HEALTHY_STATS, total_participations=10)

    assert recommendations(stats, healthy_sites(), None, sampled) == []
    assert recommendations(low_stats, healthy_sites(), None, sampled) == [
        "participation is 25%: check drained or lost sites (sampling alone would give about 50%)"
    ]


def test_round_failures_near_limit_reported() -> None:
    stats = replace(HEALTHY_STATS, rounds_completed=7, rounds_failed=3)

    found = recommendations(stats, healthy_sites(), None, CONFIG)

    assert len(found) == 1
    assert found[0].startswith("3 of 10 rounds failed (30%)")
    assert "failures.max_failure_rate = 50%" in found[0]


def test_few_rounds_give_no_campaign_findings() -> None:
    stats = ExecutionStats(
        rounds_completed=2, deadline_closes=2, total_participations=1, expected_participations=8
    )

    assert recommendations(stats, {}, None, CONFIG) == []
