"""Unit tests of round timing: presets, learned deadline and grace, retry backoff."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from coordinator.tuning import (
    PRESETS,
    NetworkPreset,
    plan_round_timing,
    quantile,
    retry_delay_s,
)

LAN = PRESETS[NetworkPreset.PLANT_LAN]


def test_every_preset_has_a_consistent_profile() -> None:
    for preset in NetworkPreset:
        profile = PRESETS[preset]
        assert profile.heartbeat_interval_s < profile.lost_after_s
        assert profile.min_deadline_s <= profile.default_deadline_s <= profile.max_deadline_s
        assert profile.min_grace_s <= profile.default_grace_s <= profile.max_grace_s
        assert 0 < profile.soft_limit_margin_s < profile.hard_limit_margin_s


def test_presets_grow_from_lan_to_cellular() -> None:
    lan, wan, cell = (PRESETS[p] for p in NetworkPreset)

    assert lan.default_deadline_s < wan.default_deadline_s < cell.default_deadline_s
    assert lan.heartbeat_interval_s < wan.heartbeat_interval_s < cell.heartbeat_interval_s
    assert lan.max_grace_s < wan.max_grace_s < cell.max_grace_s


def test_short_history_uses_defaults() -> None:
    timing = plan_round_timing([5.0, 6.0], LAN)

    assert timing.deadline_s == LAN.default_deadline_s
    assert timing.grace_s == LAN.default_grace_s
    assert not timing.from_history
    assert "2 response times known" in timing.reason
    assert "default deadline 120 s" in timing.reason


def test_learned_deadline_formula() -> None:
    durations = [10.0, 12.0, 11.0, 30.0, 14.0, 13.0, 12.5, 11.5, 10.5, 20.0]

    timing = plan_round_timing(durations, LAN)

    p95 = float(np.quantile(durations, 0.95))
    expected = p95 * LAN.safety_factor + LAN.deadline_margin_s
    assert timing.deadline_s == pytest.approx(expected)
    assert timing.from_history
    assert not timing.deadline_capped
    assert timing.soft_limit_s == pytest.approx(expected + LAN.soft_limit_margin_s)
    assert timing.hard_limit_s == pytest.approx(expected + LAN.hard_limit_margin_s)
    assert timing.expires_s == timing.deadline_s
    assert "learned from 10 response times" in timing.reason


def test_learned_grace_from_spread() -> None:
    durations = [10.0, 12.0, 11.0, 30.0, 14.0, 13.0, 12.5, 11.5, 10.5, 20.0]

    timing = plan_round_timing(durations, LAN)

    spread = float(np.quantile(durations, 0.9) - np.median(durations))
    assert timing.grace_s == pytest.approx(spread * LAN.grace_factor)


def test_learned_deadline_capped_at_max() -> None:
    timing = plan_round_timing([1000.0] * 10, LAN)

    assert timing.deadline_s == LAN.max_deadline_s
    assert timing.deadline_capped
    assert "capped at the max 600 s" in timing.reason


def test_learned_deadline_raised_to_min() -> None:
    timing = plan_round_timing([0.1] * 10, LAN)

    assert timing.deadline_s == LAN.min_deadline_s
    assert not timing.deadline_capped
    assert "raised to the min 10 s" in timing.reason


def test_grace_clamped_to_bounds() -> None:
    uniform = plan_round_timing([5.0] * 10, LAN)
    spread = plan_round_timing([1.0] * 5 + [100.0] * 5, LAN)

    assert uniform.grace_s == LAN.min_grace_s
    assert spread.grace_s == LAN.max_grace_s


def test_invalid_durations_are_ignored() -> None:
    timing = plan_round_timing([float("nan"), -1.0, float("inf"), 5.0], LAN)

    assert not timing.from_history
    assert "1 response times known" in timing.reason


def test_adaptive_off_uses_defaults() -> None:
    timing = plan_round_timing([5.0] * 50, LAN, adaptive=False)

    assert timing.deadline_s == LAN.default_deadline_s
    assert "adaptive timing is off" in timing.reason


def test_default_deadline_limited_by_max() -> None:
    profile = replace(LAN, max_deadline_s=60.0)

    assert plan_round_timing([], profile).deadline_s == 60.0


def test_health_check_interval_follows_deadline() -> None:
    short = plan_round_timing([0.1] * 10, replace(LAN, min_deadline_s=2.0, deadline_margin_s=0))
    long = plan_round_timing([], LAN)

    assert short.health_check_interval_s == pytest.approx(0.5)
    assert long.health_check_interval_s == LAN.health_check_interval_s


@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.9, 0.95, 1.0])
def test_quantile_matches_numpy(q: float) -> None:
    values = sorted([3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0])

    assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)))


def test_quantile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        quantile([], 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        quantile([1.0], 1.5)


def test_retry_delay_bounded_and_growing() -> None:
    rng = random.Random(7)

    delays = {
        attempt: [retry_delay_s(attempt, 2.0, 30.0, rng) for _ in range(200)]
        for attempt in (1, 2, 3, 10)
    }

    assert all(0.0 <= d <= 2.0 for d in delays[1])
    assert all(0.0 <= d <= 4.0 for d in delays[2])
    assert all(0.0 <= d <= 30.0 for d in delays[10])
    assert max(delays[10]) > 20.0
    assert max(delays[3]) > 4.0


def test_retry_delay_reproducible_with_seed() -> None:
    first = [retry_delay_s(3, 1.0, 10.0, random.Random(42)) for _ in range(3)]
    second = [retry_delay_s(3, 1.0, 10.0, random.Random(42)) for _ in range(3)]

    assert first == second


def test_retry_delay_huge_attempt_does_not_overflow() -> None:
    assert retry_delay_s(10_000, 1.0, 5.0, random.Random(0)) <= 5.0


def test_retry_delay_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="attempt"):
        retry_delay_s(0, 1.0, 5.0, random.Random(0))
    with pytest.raises(ValueError, match="base_s"):
        retry_delay_s(1, -1.0, 5.0, random.Random(0))
