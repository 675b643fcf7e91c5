"""Per-datasite reliability and campaign execution statistics, and their update rules.

Both records are immutable: ``record_outcome`` and ``record_round`` return a new
record, so the campaign loop can checkpoint the exact values a round produced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from plantfed.messages import OutcomeStatus

#: Number of most recent outcomes kept per datasite for recommendations.
RECENT_WINDOW = 10

#: Weight of the success rate in the reliability score; timeliness gets the rest.
SUCCESS_WEIGHT = 0.75

#: Smoothing factor of the timeliness moving average (weight of the newest outcome).
TIMELINESS_ALPHA = 0.3

#: A completed update that used at most this share of the deadline is fully on time.
#: Above it, timeliness falls linearly to zero at the deadline.
ON_TIME_SHARE = 0.5

_TIMEOUT_STATUSES = frozenset({OutcomeStatus.TIMED_OUT, OutcomeStatus.DISCARDED})
_FAILURE_STATUSES = frozenset({OutcomeStatus.FAILED, OutcomeStatus.LOST})


@dataclass(frozen=True)
class SiteReliability:
    """How one datasite has behaved over a campaign.

    Attributes
    ----------
    participations
        Rounds in which the datasite was dispatched a training task.
    successes, failures, timeouts, rejections
        Outcomes by kind. ``failures`` counts failed tasks and lost workers,
        ``timeouts`` counts tasks that missed the deadline (including late
        results discarded after the round closed), ``rejections`` counts updates
        that failed validation.
    total_response_s
        Sum of the response times of successful participations, in seconds.
    timeliness
        Moving average in [0, 1] of how early the datasite responds relative to
        the round deadline; 1.0 until it has responded once.
    last_failure_reason
        Error text of the most recent unsuccessful outcome, if any.
    recent
        Statuses of the last ``RECENT_WINDOW`` participations, oldest first.
    """

    participations: int = 0
    successes: int = 0
    failures: int = 0
    timeouts: int = 0
    rejections: int = 0
    total_response_s: float = 0.0
    timeliness: float = 1.0
    last_failure_reason: str | None = None
    recent: tuple[OutcomeStatus, ...] = ()

    @property
    def mean_response_s(self) -> float | None:
        """Mean response time of successful participations, or ``None`` before the first."""
        if self.successes == 0:
            return None
        return self.total_response_s / self.successes

    @property
    def success_rate(self) -> float | None:
        """Share of participations that completed, or ``None`` before the first."""
        if self.participations == 0:
            return None
        return self.successes / self.participations

    @property
    def reliability_score(self) -> float:
        """Score in [0, 1] combining the success rate and timeliness.

        The success rate is Laplace-smoothed, ``(successes + 1) / (participations + 2)``,
        so a datasite with no history scores 0.5 + 0.25 * timeliness and is neither
        favoured nor starved by sampling.
        """
        smoothed = (self.successes + 1) / (self.participations + 2)
        return SUCCESS_WEIGHT * smoothed + (1.0 - SUCCESS_WEIGHT) * self.timeliness

    def recent_count(self, status: OutcomeStatus) -> int:
        """Count ``status`` among the recent outcomes."""
        return sum(1 for item in self.recent if item is status)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict, including the derived figures for readers."""
        return {
            "participations": self.participations,
            "successes": self.successes,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "rejections": self.rejections,
            "total_response_s": self.total_response_s,
            "timeliness": self.timeliness,
            "last_failure_reason": self.last_failure_reason,
            "recent": [status.value for status in self.recent],
            "mean_response_s": self.mean_response_s,
            "success_rate": self.success_rate,
            "reliability_score": self.reliability_score,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SiteReliability:
        """Rebuild a record written by ``to_json``; derived figures are recomputed."""
        return cls(
            participations=int(data["participations"]),
            successes=int(data["successes"]),
            failures=int(data["failures"]),
            timeouts=int(data["timeouts"]),
            rejections=int(data["rejections"]),
            total_response_s=float(data["total_response_s"]),
            timeliness=float(data["timeliness"]),
            last_failure_reason=data.get("last_failure_reason"),
            recent=tuple(OutcomeStatus(value) for value in data.get("recent", ())),
        )


def record_outcome(
    rel: SiteReliability,
    status: OutcomeStatus | str,
    response_s: float,
    *,
    deadline_s: float | None = None,
    reason: str | None = None,
) -> SiteReliability:
    """Return ``rel`` updated with one participation.

    Parameters
    ----------
    rel
        The datasite's record before this round.
    status
        How its task ended (an ``OutcomeStatus`` or its value).
    response_s
        Seconds from dispatch to the outcome; only successful outcomes add to
        ``total_response_s``.
    deadline_s
        The round deadline in seconds. Without it a completed outcome counts as
        fully on time.
    reason
        Error text of an unsuccessful outcome, kept as ``last_failure_reason``.

    Raises
    ------
    ValueError
        When ``status`` is not an ``OutcomeStatus`` value or ``response_s`` is negative.
    """
    kind = OutcomeStatus(status)
    if response_s < 0:
        raise ValueError(f"response_s must be >= 0, found {response_s}")
    recent = (*rel.recent, kind)[-RECENT_WINDOW:]
    timeliness = (1.0 - TIMELINESS_ALPHA) * rel.timeliness
    timeliness += TIMELINESS_ALPHA * _outcome_timeliness(kind, response_s, deadline_s)
    updated = replace(
        rel,
        participations=rel.participations + 1,
        timeliness=timeliness,
        recent=recent,
    )
    if kind is OutcomeStatus.COMPLETED:
        return replace(
            updated,
            successes=rel.successes + 1,
            total_response_s=rel.total_response_s + response_s,
        )
    failure_reason = reason or kind.value
    if kind in _TIMEOUT_STATUSES:
        return replace(updated, timeouts=rel.timeouts + 1, last_failure_reason=failure_reason)
    if kind is OutcomeStatus.REJECTED:
        return replace(updated, rejections=rel.rejections + 1, last_failure_reason=failure_reason)
    return replace(updated, failures=rel.failures + 1, last_failure_reason=failure_reason)


def _outcome_timeliness(kind: OutcomeStatus, response_s: float, deadline_s: float | None) -> float:
    if kind in _TIMEOUT_STATUSES:
        return 0.0
    if kind is not OutcomeStatus.COMPLETED or deadline_s is None or deadline_s <= 0:
        return 1.0
    used = response_s / deadline_s
    if used <= ON_TIME_SHARE:
        return 1.0
    return max(0.0, (1.0 - used) / (1.0 - ON_TIME_SHARE))


@dataclass(frozen=True)
class ExecutionStats:
    """Campaign-wide execution statistics.

    Attributes
    ----------
    rounds_completed, rounds_failed
        Rounds that produced a new global model, and rounds that did not (after
        their retries).
    total_participations
        Training tasks dispatched to datasites, over all rounds and attempts.
    datasite_failures
        Participations that did not complete (failed, timed out, lost or rejected).
    adaptive_waits
        Rounds that waited a grace period after reaching quorum.
    early_closes
        Rounds the coordinator closed before every datasite responded and before
        the deadline.
    deadline_closes
        Rounds closed because their deadline passed.
    retries
        Round attempts repeated after a failed attempt.
    expected_participations
        Participations the campaign aimed for: per round, the number of sites
        configured (or known) at the time, whether or not they were ready.
    """

    rounds_completed: int = 0
    rounds_failed: int = 0
    total_participations: int = 0
    datasite_failures: int = 0
    adaptive_waits: int = 0
    early_closes: int = 0
    deadline_closes: int = 0
    retries: int = 0
    expected_participations: int = 0

    @property
    def rounds_total(self) -> int:
        """Rounds completed or failed."""
        return self.rounds_completed + self.rounds_failed

    @property
    def round_failure_rate(self) -> float:
        """Share of rounds that failed, 0.0 before the first round."""
        if self.rounds_total == 0:
            return 0.0
        return self.rounds_failed / self.rounds_total

    @property
    def participation_rate(self) -> float | None:
        """Participations over expected participations, or ``None`` when nothing was expected."""
        if self.expected_participations == 0:
            return None
        return self.total_participations / self.expected_participations

    def to_json(self) -> dict[str, int]:
        """Return the counters as a JSON-ready dict."""
        return {item.name: int(getattr(self, item.name)) for item in fields(self)}

    def dumps(self) -> str:
        """Return the counters as a JSON text."""
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExecutionStats:
        """Rebuild counters from ``to_json`` output; missing counters default to 0."""
        known = {item.name for item in fields(cls)}
        return cls(**{name: int(value) for name, value in data.items() if name in known})

    @classmethod
    def loads(cls, text: str | bytes) -> ExecutionStats:
        """Rebuild counters from ``dumps`` output."""
        return cls.from_json(json.loads(text))


def record_round(
    stats: ExecutionStats,
    *,
    completed: bool,
    participations: int,
    failures: int,
    expected: int,
    adaptive_wait: bool = False,
    closed_early: bool = False,
    closed_at_deadline: bool = False,
    retries: int = 0,
) -> ExecutionStats:
    """Return ``stats`` updated with one finished round, counting all its attempts.

    Parameters
    ----------
    completed
        Whether the round produced a new global model.
    participations, failures
        Tasks dispatched over all attempts, and how many of them did not complete.
    expected
        Sites the round aimed to include (configured or known sites).
    adaptive_wait, closed_early, closed_at_deadline
        How the final attempt closed.
    retries
        Attempts repeated after a failed attempt.
    """
    if min(participations, failures, expected, retries) < 0:
        raise ValueError("round counters must be >= 0")
    if failures > participations:
        raise ValueError(f"failures ({failures}) exceed participations ({participations})")
    return replace(
        stats,
        rounds_completed=stats.rounds_completed + int(completed),
        rounds_failed=stats.rounds_failed + int(not completed),
        total_participations=stats.total_participations + participations,
        datasite_failures=stats.datasite_failures + failures,
        adaptive_waits=stats.adaptive_waits + int(adaptive_wait),
        early_closes=stats.early_closes + int(closed_early),
        deadline_closes=stats.deadline_closes + int(closed_at_deadline),
        retries=stats.retries + retries,
        expected_participations=stats.expected_participations + expected,
    )
