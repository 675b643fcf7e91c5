"""One federated round: select, publish, open, dispatch, wait, close.

``run_round`` is the protocol in order; each phase lives in its own module.
A site that fails is recorded in the result; only a broken deployment (Redis
gone for good, a round record that contradicts itself) raises.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from coordinator.closing import RoundClosure, close_round
from coordinator.collect import wait_for_round
from coordinator.context import Hq
from coordinator.dispatch import TaskLimits, WaveDispatcher, send_round
from coordinator.health import HealthHook, HealthThresholds, read_site_health
from coordinator.selection import Selection, select_sites
from coordinator.waiting import WaitPolicy
from plantfed.crashpoints import crash_point
from plantfed.errors import RoundStateError
from plantfed.keys import RoundRef
from plantfed.messages import SiteOutcome
from plantfed.roundstore import RoundSpec, RoundState

logger = logging.getLogger(__name__)

#: Status of a round that never started because too few sites were ready.
NOT_STARTED = "not_started"

#: Status of a round whose record Redis lost while it ran.
RECORD_LOST = "record_lost"

#: Maximum wait for another closer (the chord body) to finish closing a round.
CLOSE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RoundPlan:
    """Everything a round needs besides the model: who, what, and how long.

    Attributes
    ----------
    trainer, params
        Registered trainer name and its parameters.
    strategy
        Merge strategy as JSON (``{"name": "fedavg", ...}``).
    min_sites
        Sites needed to start and completed outcomes needed to count.
    deadline_s
        Round length from dispatch to the hard stop of waiting.
    grace_s
        Wait after quorum for the remaining sites.
    soft_limit_s, hard_limit_s
        Celery soft and hard time limits of each training task, from dispatch;
        the trainer stops by itself at the deadline, the limits are the backstop.
    max_concurrency
        Most training tasks in flight at once; None sends every task at once.
    """

    trainer: str
    params: dict[str, Any]
    strategy: dict[str, Any]
    min_sites: int = 2
    deadline_s: float = 120.0
    grace_s: float = 10.0
    soft_limit_s: float = 130.0
    hard_limit_s: float = 150.0
    sites: tuple[str, ...] | None = None
    thresholds: HealthThresholds = field(default_factory=lambda: HealthThresholds(2.0, 3.0))
    check_interval_s: float = 0.25
    timing_reason: str = ""
    server_state_hash: str | None = None
    max_concurrency: int | None = None


@dataclass(frozen=True)
class RoundResult:
    """Outcome of one round, in the operators' vocabulary."""

    ref: RoundRef
    success: bool
    status: str
    completed_datasites: list[str]
    failed_datasites: dict[str, str]
    excluded_datasites: dict[str, str]
    datasite_results: dict[str, SiteOutcome]
    execution_time_s: float
    model_hash_in: str
    model_hash_out: str
    closed_by: str = ""
    samples: int = 0
    rejected_datasites: dict[str, str] = field(default_factory=dict)
    server_state_hash: str | None = None

    @property
    def participants(self) -> int:
        return len(self.completed_datasites) + len(self.failed_datasites)


def select_round_sites(
    hq: Hq,
    plan: RoundPlan,
    hooks: Sequence[HealthHook] = (),
    quarantined: dict[str, str] | None = None,
) -> Selection:
    """Read site health and keep the sites that can train this round."""
    health = read_site_health(hq.client, hq.keys, hq.monitor, plan.thresholds, plan.sites, hooks)
    return select_sites(health, plan.trainer, plan.sites, quarantined)


def run_round(
    hq: Hq, plan: RoundPlan, ref: RoundRef, model_hash: str, selection: Selection
) -> RoundResult:
    """Run one round on the selected sites, starting from the model ``model_hash``."""
    started = time.monotonic()
    if len(selection.selected) < plan.min_sites:
        logger.warning(
            "%s: not started, %d of %d required sites ready; missing: %s",
            ref,
            len(selection.selected),
            plan.min_sites,
            selection.describe_missing() or "none known",
        )
        return _not_started(ref, selection, model_hash, time.monotonic() - started)

    spec = RoundSpec(
        campaign_id=ref.campaign_id,
        index=ref.index,
        attempt=ref.attempt,
        sites=selection.selected,
        trainer=plan.trainer,
        params=dict(plan.params),
        model_hash=model_hash,
        strategy=dict(plan.strategy),
        min_completed=plan.min_sites,
        deadline_unix_s=time.time() + plan.deadline_s,
        grace_s=plan.grace_s,
        opened_unix_s=time.time(),
        timing_reason=plan.timing_reason,
        excluded=dict(selection.excluded),
        declared_samples=dict(selection.declared_samples),
        server_state_hash=plan.server_state_hash,
        token=uuid.uuid4().hex,
        max_concurrency=plan.max_concurrency,
    )
    if not hq.rounds.open(spec):
        raise RoundStateError(f"{ref}: a round record already exists; resume it instead")
    logger.info(
        "%s: opened with %d sites (%s), deadline %.1f s, grace %.1f s",
        ref,
        len(spec.sites),
        ",".join(spec.sites),
        plan.deadline_s,
        plan.grace_s,
    )
    crash_point("round-opened")
    dispatch_round(hq, spec, plan)
    crash_point("round-dispatched")
    return collect_round(hq, spec, plan, started)


def dispatch_round(hq: Hq, spec: RoundSpec, plan: RoundPlan) -> None:
    """Send the round's chord, or its first wave, and record that it was sent."""
    if _bounded(spec):
        WaveDispatcher(hq, spec, lambda: _limits_now(spec, plan)).top_up((), ())
    else:
        send_round(hq, spec, _limits_now(spec, plan))
    hq.rounds.mark_dispatched(spec.ref)


def _bounded(spec: RoundSpec) -> bool:
    return spec.max_concurrency is not None and spec.max_concurrency < len(spec.sites)


def _limits_now(spec: RoundSpec, plan: RoundPlan) -> TaskLimits:
    """Return task limits for a task sent now: the plan's margins, ending with the round."""
    remaining_s = max(1.0, spec.deadline_unix_s - time.time())
    extra_s = remaining_s - plan.deadline_s
    return TaskLimits(
        soft_time_limit_s=max(1.0, plan.soft_limit_s + extra_s),
        time_limit_s=max(2.0, plan.hard_limit_s + extra_s),
        expires_s=remaining_s,
    )


def collect_round(hq: Hq, spec: RoundSpec, plan: RoundPlan, started: float) -> RoundResult:
    """Wait for an open round, close it, and return its result.

    A round opened by a coordinator that died before sending its tasks is
    dispatched now; one whose tasks were sent is only waited for.
    """
    if hq.rounds.state(spec.ref, token=spec.token) is None:
        logger.error("%s: round record lost by Redis before the round closed", spec.ref)
        return _record_lost(spec, time.monotonic() - started)
    if not hq.rounds.dispatched(spec.ref):
        logger.warning("%s: open but never dispatched; dispatching it now", spec.ref)
        dispatch_round(hq, spec, plan)
    policy = WaitPolicy(min_completed=spec.min_completed, grace_s=spec.grace_s)
    waves = WaveDispatcher(hq, spec, lambda: _limits_now(spec, plan)) if _bounded(spec) else None
    on_progress = waves.top_up if waves else None
    waited = wait_for_round(hq, spec, policy, plan.thresholds, plan.check_interval_s, on_progress)
    if waited.record_missing:
        return _record_lost(spec, time.monotonic() - started)
    if waited.reason is not None:
        close_round(hq, spec.ref, "coordinator", waited.reason.value, waited.lost)
    closure = await_closure(hq, spec.ref, timeout_s=CLOSE_TIMEOUT_S)
    # The process that merged has logged each rejected update already.
    for site_id, reason in sorted(closure.failed.items()):
        if site_id not in closure.rejected:
            logger.warning("%s site %s: not in the round: %s", spec.ref, site_id, reason)
    return result_from_closure(hq, spec, closure, time.monotonic() - started)


def await_closure(hq: Hq, ref: RoundRef, timeout_s: float) -> RoundClosure:
    """Wait until the round's record is closed and return its closure."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        record = hq.rounds.load(ref)
        if record is None:
            raise RoundStateError(f"{ref}: round record vanished while closing")
        if record.state is RoundState.CLOSED and record.result is not None:
            return RoundClosure.from_json(record.result)
        hq.rounds.next_event(ref, timeout_s=0.1)
    raise RoundStateError(f"{ref}: still not closed {timeout_s:.0f} s after its close began")


def result_from_closure(
    hq: Hq, spec: RoundSpec, closure: RoundClosure, elapsed_s: float
) -> RoundResult:
    """Build the result of a closed round from its record and outcomes."""
    return RoundResult(
        ref=spec.ref,
        success=closure.success,
        status=closure.close_reason,
        completed_datasites=list(closure.completed),
        failed_datasites=dict(closure.failed),
        excluded_datasites=dict(spec.excluded),
        datasite_results=hq.rounds.outcomes(spec.ref),
        execution_time_s=elapsed_s,
        model_hash_in=closure.model_hash_in,
        model_hash_out=closure.model_hash_out,
        closed_by=closure.closed_by,
        samples=closure.samples,
        rejected_datasites=dict(closure.rejected),
        server_state_hash=closure.server_state_hash,
    )


def _not_started(
    ref: RoundRef, selection: Selection, model_hash: str, elapsed_s: float
) -> RoundResult:
    return RoundResult(
        ref=ref,
        success=False,
        status=NOT_STARTED,
        completed_datasites=[],
        failed_datasites={},
        excluded_datasites=dict(selection.excluded),
        datasite_results={},
        execution_time_s=elapsed_s,
        model_hash_in=model_hash,
        model_hash_out=model_hash,
    )


def output_lost(result: RoundResult) -> RoundResult:
    """Return ``result`` as a round Redis lost: its new model vanished before it was read.

    Like a lost round record, this is no site's fault, and the round is run again.
    """
    sites = [*result.completed_datasites, *result.failed_datasites]
    return replace(
        result,
        success=False,
        status=RECORD_LOST,
        completed_datasites=[],
        failed_datasites={s: "new model lost by Redis before it was read" for s in sites},
        model_hash_out=result.model_hash_in,
        server_state_hash=None,
    )


def _record_lost(spec: RoundSpec, elapsed_s: float) -> RoundResult:
    return RoundResult(
        ref=spec.ref,
        success=False,
        status=RECORD_LOST,
        completed_datasites=[],
        failed_datasites={
            s: "round record lost by Redis before the round closed" for s in spec.sites
        },
        excluded_datasites=dict(spec.excluded),
        datasite_results={},
        execution_time_s=elapsed_s,
        model_hash_in=spec.model_hash,
        model_hash_out=spec.model_hash,
    )
