"""Round timing: network presets, deadlines and grace learned from history, retry backoff.

Everything here is pure. ``plan_round_timing`` turns recent datasite response
times and a resolved ``TimingProfile`` into the ``RoundTiming`` of the next round,
with a sentence that records how each figure was derived.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class NetworkPreset(StrEnum):
    """Network a deployment lives on; each names a ``TimingProfile``."""

    PLANT_LAN = "plant-lan"
    WAN = "wan"
    CELLULAR_EDGE = "cellular-edge"


@dataclass(frozen=True)
class TimingProfile:
    """Round timing settings, from a preset with a campaign's explicit keys applied.

    Attributes
    ----------
    heartbeat_interval_s
        Expected interval between worker heartbeats.
    lost_after_s
        Silence after which a datasite counts as lost.
    health_check_interval_s
        Maximum interval between health checks while a round runs.
    default_deadline_s
        Round deadline used while history is too short to learn one.
    min_deadline_s, max_deadline_s
        Bounds of a learned deadline; ``max_deadline_s`` is ``round.deadline_s``.
    deadline_quantile
        Quantile of recent response times that the deadline must cover.
    safety_factor, deadline_margin_s
        Learned deadline = quantile * safety_factor + deadline_margin_s.
    default_grace_s, min_grace_s, max_grace_s
        Wait after quorum for the remaining datasites: the value used without
        history, and the bounds of a learned one.
    grace_factor
        Learned grace = (p90 - median of response times) * grace_factor.
    soft_limit_margin_s, hard_limit_margin_s
        Celery soft and hard time limits, as seconds past the deadline.
    min_history_samples
        Response times needed before deadline and grace are learned.
    """

    heartbeat_interval_s: float
    lost_after_s: float
    health_check_interval_s: float
    default_deadline_s: float
    min_deadline_s: float
    max_deadline_s: float
    deadline_quantile: float
    safety_factor: float
    deadline_margin_s: float
    default_grace_s: float
    min_grace_s: float
    max_grace_s: float
    grace_factor: float
    soft_limit_margin_s: float
    hard_limit_margin_s: float
    min_history_samples: int


# NOTE: these figures are starting estimates for each kind of network, not
# measurements; the adaptive deadline replaces the defaults after a few rounds.
PRESETS: dict[NetworkPreset, TimingProfile] = {
    NetworkPreset.PLANT_LAN: TimingProfile(
        heartbeat_interval_s=1.0,
        lost_after_s=4.0,
        health_check_interval_s=1.0,
        default_deadline_s=120.0,
        min_deadline_s=10.0,
        max_deadline_s=600.0,
        deadline_quantile=0.95,
        safety_factor=1.5,
        deadline_margin_s=5.0,
        default_grace_s=5.0,
        min_grace_s=1.0,
        max_grace_s=15.0,
        grace_factor=1.0,
        soft_limit_margin_s=10.0,
        hard_limit_margin_s=30.0,
        min_history_samples=5,
    ),
    NetworkPreset.WAN: TimingProfile(
        heartbeat_interval_s=2.0,
        lost_after_s=10.0,
        health_check_interval_s=2.0,
        default_deadline_s=300.0,
        min_deadline_s=30.0,
        max_deadline_s=1800.0,
        deadline_quantile=0.95,
        safety_factor=1.75,
        deadline_margin_s=15.0,
        default_grace_s=20.0,
        min_grace_s=5.0,
        max_grace_s=60.0,
        grace_factor=1.5,
        soft_limit_margin_s=30.0,
        hard_limit_margin_s=90.0,
        min_history_samples=5,
    ),
    NetworkPreset.CELLULAR_EDGE: TimingProfile(
        heartbeat_interval_s=5.0,
        lost_after_s=30.0,
        health_check_interval_s=5.0,
        default_deadline_s=900.0,
        min_deadline_s=120.0,
        max_deadline_s=3600.0,
        deadline_quantile=0.95,
        safety_factor=2.0,
        deadline_margin_s=60.0,
        default_grace_s=60.0,
        min_grace_s=20.0,
        max_grace_s=300.0,
        grace_factor=2.0,
        soft_limit_margin_s=60.0,
        hard_limit_margin_s=180.0,
        min_history_samples=8,
    ),
}

#: Health checks never run more often than this, whatever the deadline.
MIN_HEALTH_CHECK_INTERVAL_S = 0.5

#: Health checks run at least this many times within a round deadline.
HEALTH_CHECKS_PER_DEADLINE = 10


@dataclass(frozen=True)
class RoundTiming:
    """Timing of one round, all in seconds from dispatch.

    Attributes
    ----------
    deadline_s
        When the coordinator closes the round with the outcomes it has.
    soft_limit_s, hard_limit_s
        Celery ``soft_time_limit`` and ``time_limit`` of each training task.
    expires_s
        Celery ``expires``: a task not started by then is dropped unstarted.
    grace_s
        Wait after quorum for the remaining healthy datasites.
    health_check_interval_s
        Interval between health checks while the round runs.
    from_history
        Whether deadline and grace were learned from response times.
    deadline_capped
        Whether the learned deadline was cut down to the maximum.
    reason
        How the figures were derived, for the operator and the round record.
    """

    deadline_s: float
    soft_limit_s: float
    hard_limit_s: float
    expires_s: float
    grace_s: float
    health_check_interval_s: float
    from_history: bool
    deadline_capped: bool
    reason: str


def plan_round_timing(
    durations_s: Sequence[float],
    profile: TimingProfile,
    *,
    adaptive: bool = True,
) -> RoundTiming:
    """Derive the next round's timing from recent response times.

    Parameters
    ----------
    durations_s
        Response times in seconds of recently completed datasite outcomes.
        Negative and non-finite values are ignored.
    profile
        Resolved timing settings of the campaign.
    adaptive
        When false, the profile's defaults are used whatever the history.

    Returns
    -------
    RoundTiming
        Deadline = clamp(quantile * safety_factor + margin, min, max deadline);
        grace = clamp((p90 - median) * grace_factor, min, max grace); the
        profile's defaults when fewer than ``min_history_samples`` are known.
    """
    samples = sorted(d for d in durations_s if math.isfinite(d) and d >= 0)
    if not adaptive or len(samples) < profile.min_history_samples:
        return _default_timing(profile, len(samples), adaptive)

    quantile_s = quantile(samples, profile.deadline_quantile)
    raw_deadline_s = quantile_s * profile.safety_factor + profile.deadline_margin_s
    deadline_s = _clamp(raw_deadline_s, profile.min_deadline_s, profile.max_deadline_s)
    capped = raw_deadline_s > profile.max_deadline_s

    spread_s = quantile(samples, 0.9) - quantile(samples, 0.5)
    grace_s = _clamp(spread_s * profile.grace_factor, profile.min_grace_s, profile.max_grace_s)

    reason = (
        f"learned from {len(samples)} response times: deadline {deadline_s:.0f} s = "
        f"p{profile.deadline_quantile * 100:.0f} {quantile_s:.1f} s x {profile.safety_factor:g}"
        f" + {profile.deadline_margin_s:g} s"
        f"{_clamp_note(raw_deadline_s, profile.min_deadline_s, profile.max_deadline_s)}; "
        f"grace {grace_s:.1f} s from p90 - median = {spread_s:.1f} s x {profile.grace_factor:g}"
        f"{_clamp_note(spread_s * profile.grace_factor, profile.min_grace_s, profile.max_grace_s)}"
    )
    return _timing(profile, deadline_s, grace_s, reason, from_history=True, capped=capped)


def _default_timing(profile: TimingProfile, sample_count: int, adaptive: bool) -> RoundTiming:
    deadline_s = min(profile.default_deadline_s, profile.max_deadline_s)
    grace_s = _clamp(profile.default_grace_s, profile.min_grace_s, profile.max_grace_s)
    if adaptive:
        cause = (
            f"{sample_count} response times known, fewer than the "
            f"{profile.min_history_samples} needed to learn timing"
        )
    else:
        cause = "adaptive timing is off"
    reason = f"{cause}: default deadline {deadline_s:.0f} s and grace {grace_s:.1f} s"
    return _timing(profile, deadline_s, grace_s, reason, from_history=False, capped=False)


def _timing(
    profile: TimingProfile,
    deadline_s: float,
    grace_s: float,
    reason: str,
    *,
    from_history: bool,
    capped: bool,
) -> RoundTiming:
    health_s = min(
        profile.health_check_interval_s,
        max(deadline_s / HEALTH_CHECKS_PER_DEADLINE, MIN_HEALTH_CHECK_INTERVAL_S),
    )
    return RoundTiming(
        deadline_s=deadline_s,
        soft_limit_s=deadline_s + profile.soft_limit_margin_s,
        hard_limit_s=deadline_s + profile.hard_limit_margin_s,
        expires_s=deadline_s,
        grace_s=grace_s,
        health_check_interval_s=health_s,
        from_history=from_history,
        deadline_capped=capped,
        reason=reason,
    )


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Return the ``q`` quantile of ascending values by linear interpolation.

    This is the same estimator as numpy's default (``method="linear"``).

    Raises
    ------
    ValueError
        When ``sorted_values`` is empty or ``q`` is outside [0, 1].
    """
    if not sorted_values:
        raise ValueError("quantile of an empty sequence")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], found {q}")
    position = q * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    weight = position - lower
    return sorted_values[lower] * (1.0 - weight) + sorted_values[upper] * weight


def retry_delay_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Return the wait before retry number ``attempt``: exponential backoff, full jitter.

    The delay is uniform in [0, min(max_s, base_s * 2 ** (attempt - 1))], so
    retries of many campaigns do not synchronise.

    Parameters
    ----------
    attempt
        1 for the first retry, 2 for the second, and so on.
    base_s, max_s
        Upper bound of the first delay, and the cap of every delay, in seconds.
    rng
        Source of the jitter; inject a seeded ``random.Random`` for reproducibility.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, found {attempt}")
    if base_s < 0 or max_s < 0:
        raise ValueError(f"base_s and max_s must be >= 0, found {base_s} and {max_s}")
    # Cap the exponent so that large attempt numbers cannot overflow a float.
    ceiling_s = min(max_s, base_s * 2.0 ** min(attempt - 1, 64))
    return rng.uniform(0.0, ceiling_s)


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _clamp_note(value: float, low: float, high: float) -> str:
    if value > high:
        return f", capped at the max {high:g} s"
    if value < low:
        return f", raised to the min {low:g} s"
    return ""
