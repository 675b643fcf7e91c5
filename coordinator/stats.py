"""Execution statistics of rounds: per-site reliability updates and the operator's report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coordinator.config import CampaignConfig
from coordinator.recommend import recommendations
from coordinator.reliability import ExecutionStats, SiteReliability, record_outcome
from coordinator.rounds import RoundResult
from coordinator.tuning import RoundTiming
from plantfed.messages import OutcomeStatus


def update_reliability(
    reliability: dict[str, SiteReliability], result: RoundResult, deadline_s: float
) -> None:
    """Add every participant of ``result`` to its site's reliability record, in place."""
    for site in result.completed_datasites:
        outcome = result.datasite_results.get(site)
        response_s = outcome.train_s if outcome else 0.0
        rel = reliability.get(site, SiteReliability())
        reliability[site] = record_outcome(
            rel, OutcomeStatus.COMPLETED, response_s, deadline_s=deadline_s
        )
    for site, reason in result.failed_datasites.items():
        outcome = result.datasite_results.get(site)
        rel = reliability.get(site, SiteReliability())
        response_s = outcome.train_s if outcome else deadline_s
        reliability[site] = record_outcome(
            rel,
            _failure_status(site, reason, result),
            response_s,
            deadline_s=deadline_s,
            reason=reason,
        )


def _failure_status(site: str, reason: str, result: RoundResult) -> OutcomeStatus:
    outcome = result.datasite_results.get(site)
    if site in result.rejected_datasites:
        return OutcomeStatus.REJECTED
    if outcome is not None:
        return outcome.status
    if reason.startswith("lost"):
        return OutcomeStatus.LOST
    return OutcomeStatus.TIMED_OUT


@dataclass(frozen=True)
class ExecutionReport:
    """Execution statistics, per-datasite reliability and plain-language recommendations."""

    stats: ExecutionStats
    reliability: dict[str, SiteReliability]
    recommendations: list[str]

    def to_json(self) -> dict[str, Any]:
        sites = {}
        for site, rel in sorted(self.reliability.items()):
            sites[site] = {
                "participations": rel.participations,
                "success_rate": rel.success_rate,
                "mean_response_s": rel.mean_response_s,
                "reliability_score": rel.reliability_score,
                "last_failure_reason": rel.last_failure_reason,
            }
        return {
            "stats": self.stats.to_json(),
            "datasites": sites,
            "recommendations": list(self.recommendations),
        }

    def describe(self) -> str:
        """Return the report as plain text."""
        s = self.stats
        lines = [
            f"rounds completed {s.rounds_completed}, failed {s.rounds_failed}; "
            f"datasite participations {s.total_participations}, failures {s.datasite_failures}; "
            f"adaptive waits {s.adaptive_waits}, retries {s.retries}",
        ]
        for site, rel in sorted(self.reliability.items()):
            rate = f"{rel.success_rate:.0%}" if rel.success_rate is not None else "-"
            mean = f"{rel.mean_response_s:.2f} s" if rel.mean_response_s is not None else "-"
            lines.append(
                f"  {site}: success {rate} of {rel.participations}, mean response {mean}, "
                f"reliability {rel.reliability_score:.2f}"
            )
        lines += [f"recommendation: {text}" for text in self.recommendations]
        return "\n".join(lines)


def build_report(
    stats: ExecutionStats,
    reliability: Mapping[str, SiteReliability],
    config: CampaignConfig | None = None,
    timing: RoundTiming | None = None,
) -> ExecutionReport:
    """Assemble the report; without a campaign config the default settings judge it."""
    from coordinator.config import campaign_config_from_dict

    judged_by = config or campaign_config_from_dict(
        {"id": "adhoc", "rounds": 1, "trainer": {"name": "noop"}}
    )
    advice = recommendations(stats, reliability, timing, judged_by)
    return ExecutionReport(stats, dict(reliability), advice)
