"""Planning the next round of a campaign: its timing, plan and sites."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from coordinator.checkpoint import CampaignState
from coordinator.config import CampaignConfig
from coordinator.context import Hq
from coordinator.health import HealthHook, HealthThresholds, read_site_health
from coordinator.rounds import RoundPlan
from coordinator.sampling import select_sites as sample_sites
from coordinator.selection import Selection, select_sites
from coordinator.tuning import RoundTiming, plan_round_timing
from plantfed.settings import Settings

logger = logging.getLogger(__name__)

#: Response times of this many recent rounds feed the learned deadline.
HISTORY_ROUNDS = 10


def recent_response_times_s(state: CampaignState) -> list[float]:
    """Return the per-site response times of the last rounds, oldest first."""
    times: list[float] = []
    for summary in state.history[-HISTORY_ROUNDS:]:
        times.extend(summary.response_times_s)
    return times


def plan_round(
    config: CampaignConfig, state: CampaignState, thresholds: HealthThresholds, settings: Settings
) -> tuple[RoundTiming, RoundPlan]:
    """Derive the next round's timing from history, and the plan that carries it out."""
    timing = plan_round_timing(
        recent_response_times_s(state), config.round.timing, adaptive=config.round.adaptive
    )
    params: dict[str, Any] = dict(config.trainer_params)
    if config.strategy.proximal_mu is not None:
        params.setdefault("proximal_mu", config.strategy.proximal_mu)
    params.setdefault("seed", config.seed + state.next_round)
    plan = RoundPlan(
        trainer=config.trainer,
        params=params,
        strategy=config.strategy.to_json(),
        min_sites=config.min_sites,
        deadline_s=min(timing.deadline_s, settings.max_round_s),
        grace_s=timing.grace_s,
        soft_limit_s=timing.soft_limit_s,
        hard_limit_s=timing.hard_limit_s,
        sites=config.sites or None,
        thresholds=thresholds,
        check_interval_s=min(0.25, timing.health_check_interval_s),
        timing_reason=timing.reason,
        max_concurrency=config.round.max_concurrency,
    )
    return timing, plan


def choose_sites(
    hq: Hq,
    config: CampaignConfig,
    state: CampaignState,
    plan: RoundPlan,
    hooks: Sequence[HealthHook],
    left_out: set[str],
) -> Selection:
    """Select this round's sites: healthy, offering the trainer, not quarantined, sampled."""
    health = read_site_health(hq.client, hq.keys, hq.monitor, plan.thresholds, plan.sites, hooks)
    quarantined = {
        site: f"updates rejected repeatedly; back at round {until}"
        for site, until in state.quarantine.items()
        if until > state.next_round
    }
    quarantined.update({site: "failed the previous attempt of this round" for site in left_out})
    eligible = select_sites(health, plan.trainer, plan.sites, quarantined)
    sampled = sample_sites(
        eligible.selected,
        {site: rel.reliability_score for site, rel in state.reliability.items()},
        state.last_selected_round,
        round_index=state.next_round,
        seed=config.seed,
        fraction=config.round.sample_fraction,
        max_sites=_max_sites(config),
        min_sites=config.min_sites,
        priority_after_rounds=config.round.priority_after_rounds,
    )
    excluded = dict(eligible.excluded)
    excluded.update({site: "not sampled this round" for site in sampled.skipped})
    declared = {
        s: eligible.declared_samples[s] for s in sampled.selected if s in eligible.declared_samples
    }
    return Selection(tuple(sampled.selected), excluded, declared)


def _max_sites(config: CampaignConfig) -> int | None:
    return config.round.max_sites_per_round
