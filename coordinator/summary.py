"""The end-of-campaign summary: rounds, participation, failures, metrics and time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coordinator.checkpoint import CampaignState
from coordinator.config import CampaignConfig
from worker.trainers.base import Trainer


@dataclass(frozen=True)
class SiteSummary:
    """Reliability of one datasite over the campaign."""

    site_id: str
    participations: int
    successes: int
    success_rate: float | None
    mean_response_s: float | None
    reliability_score: float
    last_failure_reason: str | None


@dataclass(frozen=True)
class CampaignSummary:
    """What a campaign (or one invocation of it) achieved."""

    campaign_id: str
    trainer: str
    rounds_planned: int
    rounds_run: int
    rounds_completed: int
    rounds_failed: int
    total_participations: int
    datasite_failures: int
    adaptive_waits: int
    retries: int
    primary_metric: str
    best_metric: float | None
    best_round: int | None
    final_metrics: dict[str, float]
    elapsed_s: float
    stopped_reason: str | None
    finished: bool
    global_model_hash: str
    best_model_hash: str | None
    sites: list[SiteSummary]
    rounds: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["sites"] = [dict(site.__dict__) for site in self.sites]
        return data


def summarize(
    config: CampaignConfig, state: CampaignState, trainer: Trainer, elapsed_s: float
) -> CampaignSummary:
    """Build the summary of a campaign from its state."""
    stats = state.stats
    final_metrics = next((dict(h.metrics) for h in reversed(state.history) if h.metrics), {})
    sites = [
        SiteSummary(
            site_id=site,
            participations=rel.participations,
            successes=rel.successes,
            success_rate=rel.success_rate,
            mean_response_s=rel.mean_response_s,
            reliability_score=rel.reliability_score,
            last_failure_reason=rel.last_failure_reason,
        )
        for site, rel in sorted(state.reliability.items())
    ]
    return CampaignSummary(
        campaign_id=config.id,
        trainer=config.trainer,
        rounds_planned=config.rounds,
        rounds_run=state.next_round,
        rounds_completed=stats.rounds_completed,
        rounds_failed=stats.rounds_failed,
        total_participations=stats.total_participations,
        datasite_failures=stats.datasite_failures,
        adaptive_waits=stats.adaptive_waits,
        retries=stats.retries,
        primary_metric=config.early_stopping.metric or trainer.primary_metric,
        best_metric=state.best_metric,
        best_round=state.best_round,
        final_metrics=final_metrics,
        elapsed_s=elapsed_s,
        stopped_reason=state.stopped_reason,
        finished=state.stopped_reason is not None or state.next_round >= config.rounds,
        global_model_hash=state.global_model_hash,
        best_model_hash=state.best_model_hash,
        sites=sites,
        rounds=[h.to_json() for h in state.history],
    )
