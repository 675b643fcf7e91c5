"""Waiting for a round's outcomes, reacting to each event as it arrives.

The wait blocks on the round's event list in Redis, so a completion wakes it at
once; between events it re-judges the health of the sites still out every
``check_interval_s``, which is how a dead or frozen worker is noticed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis

from coordinator.context import Hq
from coordinator.health import HealthThresholds, Verdict, read_site_health
from coordinator.waiting import CloseReason, WaitPolicy, WaitSnapshot
from plantfed.messages import OutcomeStatus, SiteOutcome
from plantfed.roundstore import RecordResult, RoundSpec, RoundState

logger = logging.getLogger(__name__)

#: Interval between full reads of a round's outcomes while waiting for it.
FULL_REFRESH_S = 1.0


@dataclass(frozen=True)
class WaitResult:
    """End of a wait: the coordinator's reason to close, or a sign that another closer did."""

    reason: CloseReason | None
    lost: frozenset[str]
    record_missing: bool = False


#: Called on every wake with the sites that answered and those judged lost.
ProgressHook = Callable[[Iterable[str], Iterable[str]], None]


def wait_for_round(
    hq: Hq,
    spec: RoundSpec,
    policy: WaitPolicy,
    thresholds: HealthThresholds,
    check_interval_s: float = 0.25,
    on_progress: ProgressHook | None = None,
) -> WaitResult:
    """Wait until the policy decides to close, or the chord body closes the round.

    Each wake reads only the outcomes its events name; every ``FULL_REFRESH_S``
    the whole outcome hash is read again, in case an event was lost with a
    Redis restart. Health is judged every ``check_interval_s``, not per event.
    """
    ref = spec.ref
    task_ids: dict[str, str] = {}
    outcomes: dict[str, SiteOutcome] = {}
    quorum_at_s: float | None = None
    lost: frozenset[str] = frozenset()
    named: set[str] | None = None
    refresh_at = health_at = 0.0
    while True:
        try:
            state = hq.rounds.state(ref, token=spec.token)
            if state is None:
                logger.error("%s: round record vanished from Redis (restart without data?)", ref)
                return WaitResult(None, lost, record_missing=True)
            if state is not RoundState.OPEN:
                return WaitResult(None, lost)
            now = time.monotonic()
            if named is None or now >= refresh_at:
                outcomes = hq.rounds.outcomes(ref)
                refresh_at = now + FULL_REFRESH_S
            elif named:
                outcomes.update(hq.rounds.outcomes(ref, named))
            task_ids = task_ids or hq.rounds.task_ids(ref)
            _record_reported_failures(hq, spec, task_ids, outcomes)
            if now >= health_at:
                lost = _lost_sites(hq, set(spec.sites) - set(outcomes), thresholds)
                health_at = now + check_interval_s
            lost -= set(outcomes)
            if on_progress is not None:
                on_progress(outcomes, lost)
            if (
                quorum_at_s is None
                and sum(o.completed for o in outcomes.values()) >= policy.min_completed
            ):
                quorum_at_s = time.time()
            reason = policy.decide(_snapshot(spec, outcomes, lost, quorum_at_s))
            if reason is not None:
                return WaitResult(reason, lost)
            wait_s = max(0.01, min(check_interval_s, health_at - time.monotonic()))
            events = hq.rounds.next_events(ref, timeout_s=wait_s)
            named = {e.partition(":")[2] for e in events if e.startswith("outcome:")}
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.time() >= spec.deadline_unix_s + 60.0:
                raise
            logger.warning("%s: Redis unreachable while waiting, retrying: %s", ref, exc)
            named = None
            time.sleep(0.5)


def _snapshot(
    spec: RoundSpec,
    outcomes: dict[str, SiteOutcome],
    lost: frozenset[str],
    quorum_at_s: float | None,
) -> WaitSnapshot:
    completed = frozenset(s for s, o in outcomes.items() if o.completed)
    return WaitSnapshot(
        sites=frozenset(spec.sites),
        completed=completed,
        failed=frozenset(outcomes) - completed,
        lost=lost,
        now_s=time.time(),
        deadline_s=spec.deadline_unix_s,
        quorum_reached_at_s=quorum_at_s,
    )


def _lost_sites(hq: Hq, outstanding: set[str], thresholds: HealthThresholds) -> frozenset[str]:
    if not outstanding:
        return frozenset()
    health = read_site_health(hq.client, hq.keys, hq.monitor, thresholds, site_ids=outstanding)
    return frozenset(s for s, h in health.items() if h.verdict is Verdict.LOST)


def _record_reported_failures(
    hq: Hq, spec: RoundSpec, task_ids: dict[str, str], outcomes: dict[str, SiteOutcome]
) -> None:
    """Record, on a site's behalf, a failure its worker reported but the task never could.

    A pool process killed by the hard time limit, or by a signal, never returns; the
    worker's main process reports the task as failed on the event stream instead.
    """
    if hq.monitor is None:
        return
    for site_id, task_id in task_ids.items():
        if site_id in outcomes:
            continue
        failure = hq.monitor.task_failure(task_id, since_unix_s=spec.opened_unix_s)
        if failure is None:
            continue
        status = OutcomeStatus.TIMED_OUT if "TimeLimit" in failure else OutcomeStatus.FAILED
        outcome = SiteOutcome(
            campaign_id=spec.campaign_id,
            round_index=spec.index,
            attempt=spec.attempt,
            site_id=site_id,
            status=status,
            error=f"worker reported: {failure}",
            round_token=spec.token,
        )
        if hq.rounds.record_outcome(outcome, hq.settings.update_ttl_s) is RecordResult.RECORDED:
            logger.warning("%s site %s: %s", spec.ref, site_id, outcome.error)
            outcomes[site_id] = outcome
