"""Applying a finished round to the campaign state, as a pure function.

The runner calls ``apply_round`` exactly once per round index, after the round's
last attempt closed; the new state is then checkpointed before anything else runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

from coordinator.checkpoint import CampaignState, RoundSummary
from coordinator.config import CampaignConfig
from coordinator.reliability import SiteReliability, record_round
from coordinator.rounds import RECORD_LOST, RoundResult
from coordinator.stats import update_reliability
from coordinator.tuning import RoundTiming
from coordinator.waiting import CloseReason
from plantfed.messages import OutcomeStatus

logger = logging.getLogger(__name__)

#: Rounds run before the failure rate can end a campaign, so one early failure does not.
MIN_ROUNDS_FOR_FAILURE_RATE = 3

_ADAPTIVE = {CloseReason.QUORUM_REST_LOST.value, CloseReason.GRACE_EXPIRED.value}


def apply_round(
    config: CampaignConfig,
    state: CampaignState,
    attempts: Sequence[RoundResult],
    timing: RoundTiming,
    metrics: Mapping[str, float],
    metric_name: str,
    higher_is_better: bool,
) -> CampaignState:
    """Return the campaign state after a round whose attempts are ``attempts``."""
    final = attempts[-1]
    index = state.next_round
    reliability = dict(state.reliability)
    # A round whose record Redis lost tells nothing about its sites, so it is not counted.
    counted = [a for a in attempts if a.status != RECORD_LOST]
    for attempt in counted:
        update_reliability(reliability, attempt, timing.deadline_s)
    summary = RoundSummary(
        round_index=index,
        status="completed" if final.success else "failed",
        completed_sites=tuple(final.completed_datasites),
        failed_sites=tuple(sorted(final.failed_datasites)),
        duration_s=sum(a.execution_time_s for a in attempts),
        attempts=len(attempts),
        close_reason=final.status,
        model_hash=final.model_hash_out,
        metrics=dict(metrics),
        deadline_s=timing.deadline_s,
        timing_reason=timing.reason,
        response_times_s=tuple(
            final.datasite_results[s].train_s
            for s in final.completed_datasites
            if s in final.datasite_results
        ),
    )
    stats = record_round(
        state.stats,
        completed=final.success,
        participations=sum(a.participants for a in counted),
        failures=sum(len(a.failed_datasites) for a in counted),
        expected=len(config.sites) or final.participants + len(final.excluded_datasites),
        adaptive_wait=final.status in _ADAPTIVE,
        closed_early=final.status in _ADAPTIVE,
        closed_at_deadline=final.status == CloseReason.DEADLINE.value,
        retries=len(attempts) - 1,
    )
    selected = {s: index for a in attempts for s in (*a.completed_datasites, *a.failed_datasites)}
    state = replace(
        state,
        next_round=index + 1,
        global_model_hash=final.model_hash_out,
        history=(*state.history, summary),
        stats=stats,
        reliability=reliability,
        quarantine=_quarantine(
            config,
            state.quarantine,
            reliability,
            index,
            {site for a in counted for site in a.rejected_datasites},
        ),
        last_selected_round={**state.last_selected_round, **selected},
    )
    state = _track_best(config, state, metrics, metric_name, higher_is_better, final)
    return check_stop(config, state)


def _quarantine(
    config: CampaignConfig,
    quarantine: Mapping[str, int],
    reliability: Mapping[str, SiteReliability],
    index: int,
    rejected_now: set[str],
) -> dict[str, int]:
    """Quarantine sites whose last updates were all rejected, this round's included.

    Only a site rejected in this round is judged, so one that comes back from
    quarantine is not sent straight back for the rejections that put it there.
    """
    limit = config.failures.quarantine_after_rejections
    updated = {site: until for site, until in quarantine.items() if until > index + 1}
    for site in sorted(rejected_now):
        rel = reliability[site]
        recent = rel.recent[-limit:]
        rejected_every_time = all(s is OutcomeStatus.REJECTED for s in recent)
        if limit > 0 and len(recent) == limit and rejected_every_time and site not in updated:
            until = index + 1 + config.failures.quarantine_rounds
            logger.warning(
                "Campaign %s: site %s quarantined until round %d after %d rejected updates",
                config.id,
                site,
                until,
                limit,
            )
            updated[site] = until
    return updated


def _track_best(
    config: CampaignConfig,
    state: CampaignState,
    metrics: Mapping[str, float],
    metric_name: str,
    higher_is_better: bool,
    final: RoundResult,
) -> CampaignState:
    name = config.early_stopping.metric or metric_name
    value = metrics.get(name)
    if value is None:
        return state
    best = state.best_metric
    if best is None:
        improved = True
    elif higher_is_better:
        improved = value - best > config.early_stopping.min_delta
    else:
        improved = best - value > config.early_stopping.min_delta
    if improved:
        return replace(
            state,
            best_metric=value,
            best_model_hash=final.model_hash_out,
            best_round=state.next_round - 1,
            rounds_without_improvement=0,
        )
    return replace(state, rounds_without_improvement=state.rounds_without_improvement + 1)


def reconsider_stop(config: CampaignConfig, state: CampaignState) -> CampaignState:
    """Clear a stopped campaign's verdict when the current configuration would not stop it.

    An operator who raises ``failures.max_failure_rate`` or the early-stopping
    patience in the campaign file, then runs the campaign again, continues it.
    """
    if state.stopped_reason is None:
        return state
    rechecked = check_stop(config, replace(state, stopped_reason=None))
    if rechecked.stopped_reason is not None:
        return state
    logger.info(
        "Campaign %s: was stopped (%s); the current file no longer stops it, continuing",
        config.id,
        state.stopped_reason,
    )
    return rechecked


def check_stop(config: CampaignConfig, state: CampaignState) -> CampaignState:
    """Return ``state`` with a stop verdict when early stopping or the failure limit applies."""
    patience = config.early_stopping.patience
    if patience is not None and state.rounds_without_improvement >= patience:
        reason = (
            f"early stop: no gain above {config.early_stopping.min_delta:g} in "
            f"{state.rounds_without_improvement} rounds (best {state.best_metric:.4f} "
            f"at round {state.best_round})"
        )
        return replace(state, stopped_reason=reason)
    rate = state.stats.round_failure_rate
    total = state.stats.rounds_total
    if total >= MIN_ROUNDS_FOR_FAILURE_RATE and rate > config.failures.max_failure_rate:
        reason = (
            f"failure limit: {state.stats.rounds_failed} of {state.stats.rounds_total} rounds "
            f"failed ({rate:.0%}), above failures.max_failure_rate "
            f"{config.failures.max_failure_rate:.0%}"
        )
        return replace(state, stopped_reason=reason)
    return state
