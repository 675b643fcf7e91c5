"""``ParallelExecutionManager``: the round capabilities in the plant operators' vocabulary.

It runs single rounds across all available datasites, waits for datasites to
be ready, and keeps execution statistics of the rounds it ran. Campaigns build
on the same parts through ``CampaignRunner``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator.context import Hq
from coordinator.health import HealthHook, HealthThresholds, SiteHealth, read_site_health
from coordinator.reliability import ExecutionStats, SiteReliability, record_round
from coordinator.rounds import RoundPlan, RoundResult, run_round
from coordinator.selection import select_sites
from coordinator.stats import ExecutionReport, build_report, update_reliability
from coordinator.waiting import CloseReason
from plantfed.keys import RoundRef
from plantfed.modelio import Weights, encode_weights

logger = logging.getLogger(__name__)

#: How often readiness is re-read while waiting for datasites.
READY_POLL_S = 0.25


@dataclass(frozen=True)
class Readiness:
    """Result of ``wait_for_datasites_ready``."""

    ready: bool
    ready_datasites: list[str]
    missing_datasites: dict[str, str]
    required: int
    waited_s: float

    def describe(self) -> str:
        head = (
            f"{len(self.ready_datasites)} of {self.required} required datasites ready "
            f"after {self.waited_s:.1f} s: {', '.join(self.ready_datasites) or 'none'}"
        )
        if not self.missing_datasites:
            return head
        missing = "; ".join(f"{s}: {r}" for s, r in sorted(self.missing_datasites.items()))
        return f"{head}\nmissing: {missing}"


@dataclass
class ParallelExecutionManager:
    """Runs parallel rounds across datasites and tracks how they went.

    Attributes
    ----------
    hq
        Connections to Redis and Celery; give it a heartbeat monitor
        (``Hq.connect(settings, listen=True)``) so dead workers are noticed fast.
    min_datasites
        Datasites needed to start a round and completed outcomes for it to count.
    health_hooks
        Deployment vetoes applied before each round.
    thresholds
        When a site counts as stale or lost.
    """

    hq: Hq
    min_datasites: int = 2
    health_hooks: list[HealthHook] = field(default_factory=list)
    thresholds: HealthThresholds = field(default_factory=lambda: HealthThresholds(2.0, 3.0))
    stats: ExecutionStats = field(default_factory=ExecutionStats)
    reliability: dict[str, SiteReliability] = field(default_factory=dict)

    def add_health_check(self, hook: HealthHook) -> None:
        """Add a veto: ``hook(site_health)`` returns a reason to keep the site out, or None."""
        self.health_hooks.append(hook)

    def get_datasite_health(self, datasites: Sequence[str] | None = None) -> dict[str, SiteHealth]:
        """Return the verdict on each known (or named) datasite."""
        return read_site_health(
            self.hq.client,
            self.hq.keys,
            self.hq.monitor,
            self.thresholds,
            datasites,
            self.health_hooks,
        )

    def wait_for_datasites_ready(
        self,
        min_datasites: int | None = None,
        timeout_s: float = 60.0,
        expected: Sequence[str] | None = None,
        trainer: str | None = None,
    ) -> Readiness:
        """Wait until at least ``min_datasites`` can train, at most ``timeout_s``.

        Returns as soon as the minimum is met. On time-out, the result names every
        datasite that is not ready and why. With ``trainer``, a site that does not
        offer that trainer does not count as ready.
        """
        required = min_datasites if min_datasites is not None else self.min_datasites
        started = time.monotonic()
        while True:
            health = self.get_datasite_health(expected)
            missing = {s: _not_ready_reason(h, trainer) for s, h in health.items()}
            missing = {s: reason for s, reason in missing.items() if reason}
            ready = [s for s in health if s not in missing]
            waited_s = time.monotonic() - started
            if len(ready) >= required or waited_s >= timeout_s:
                return Readiness(len(ready) >= required, ready, missing, required, waited_s)
            time.sleep(min(READY_POLL_S, max(0.0, timeout_s - waited_s)))

    def execute_parallel_round(
        self,
        model: Weights | str,
        trainer: str,
        params: Mapping[str, Any] | None = None,
        strategy: Mapping[str, Any] | None = None,
        deadline_s: float = 120.0,
        grace_s: float = 10.0,
        datasites: Sequence[str] | None = None,
        campaign_id: str = "adhoc",
        max_concurrency: int | None = None,
    ) -> RoundResult:
        """Run one round across all available datasites (or the named ones).

        ``model`` is the global weights, or the hash of a model already stored.
        ``max_concurrency`` bounds the training tasks in flight at once.
        Each datasite's failure stays with that datasite: the result lists
        completed and failed datasites, per-datasite outcomes and the round's time.
        """
        model_hash = model if isinstance(model, str) else self._publish(model)
        plan = RoundPlan(
            trainer=trainer,
            params=dict(params or {}),
            strategy=dict(strategy or {"name": "fedavg"}),
            min_sites=self.min_datasites,
            deadline_s=deadline_s,
            grace_s=grace_s,
            soft_limit_s=deadline_s + 5.0,
            hard_limit_s=deadline_s + 15.0,
            sites=tuple(datasites) if datasites else None,
            thresholds=self.thresholds,
            max_concurrency=max_concurrency,
        )
        health = self.get_datasite_health(plan.sites)
        selection = select_sites(health, trainer, plan.sites)
        index = int(self.hq.client.incr(self.hq.keys.round_counter(campaign_id))) - 1
        result = run_round(self.hq, plan, RoundRef(campaign_id, index), model_hash, selection)
        self._record(result, deadline_s)
        return result

    def get_execution_stats(self) -> ExecutionReport:
        """Return statistics of the rounds run so far, per-datasite reliability and advice."""
        return build_report(self.stats, self.reliability)

    def _publish(self, weights: Weights) -> str:
        return self.hq.blobs.put(encode_weights(weights), self.hq.settings.model_ttl_s)

    def _record(self, result: RoundResult, deadline_s: float) -> None:
        if result.participants == 0:
            return
        adaptive = result.status in (CloseReason.QUORUM_REST_LOST, CloseReason.GRACE_EXPIRED)
        self.stats = record_round(
            self.stats,
            completed=result.success,
            participations=result.participants,
            failures=len(result.failed_datasites),
            expected=result.participants + len(result.excluded_datasites),
            adaptive_wait=adaptive,
            closed_early=adaptive,
            closed_at_deadline=result.status == CloseReason.DEADLINE,
        )
        update_reliability(self.reliability, result, deadline_s)


def _not_ready_reason(health: SiteHealth, trainer: str | None) -> str:
    """Return why a site cannot train now, or an empty string when it can."""
    if not health.verdict.can_train:
        return f"{health.verdict.value}: {health.reason}"
    offered = health.liveness.trainers if health.liveness else ()
    if trainer is not None and trainer not in offered:
        return f"does not offer trainer {trainer!r} (offers: {', '.join(offered) or 'none'})"
    return ""
