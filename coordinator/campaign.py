"""A campaign: many rounds from an initial model, durable after every round.

The runner holds the campaign lock, resumes from the newest progress (Redis or
the local checkpoint), finishes a round left open by a previous coordinator
instead of starting it again, and after each round applies its result exactly
once: evaluation, statistics, early stopping, then a checkpoint.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from coordinator.checkpoint import CampaignState
from coordinator.closing import LOST_REASON, RoundClosure, finish_closing
from coordinator.config import CampaignConfig
from coordinator.context import Hq
from coordinator.evaluation import evaluate_model
from coordinator.health import HealthHook, HealthThresholds, read_site_health
from coordinator.lock import CampaignLock
from coordinator.outcome import apply_round, reconsider_stop
from coordinator.persistence import Progress, load_progress, save_progress
from coordinator.roundplan import choose_sites, plan_round
from coordinator.rounds import (
    NOT_STARTED,
    RECORD_LOST,
    RoundPlan,
    RoundResult,
    await_closure,
    collect_round,
    output_lost,
    result_from_closure,
    run_round,
)
from coordinator.selection import Selection, select_sites
from coordinator.summary import CampaignSummary, summarize
from coordinator.tuning import RoundTiming, retry_delay_s
from plantfed.errors import BlobNotFoundError, RoundStateError
from plantfed.keys import RoundRef
from plantfed.modelio import content_hash, encode_weights
from plantfed.roundstore import RoundRecord, RoundState
from worker.trainers.registry import get_trainer

logger = logging.getLogger(__name__)

#: Seconds after which a round still in state closing is taken over by a resuming coordinator.
CLOSING_STALE_S = 15.0

#: Maximum wait for the sites' evaluation of a new global model.
EVALUATION_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RoundReport:
    """Progress report passed to the observer after each round."""

    index: int
    result: RoundResult
    timing: RoundTiming
    metrics: dict[str, float]
    state: CampaignState


RoundObserver = Callable[[RoundReport], None]


@dataclass(frozen=True)
class RoundOutput:
    """Output of a successful round: its new model and server state, read right after the close."""

    model_bytes: bytes
    server_state_bytes: bytes | None


class CampaignRunner:
    """Runs or resumes one campaign under its lock."""

    def __init__(
        self,
        hq: Hq,
        config: CampaignConfig,
        hooks: Sequence[HealthHook] = (),
        on_round: RoundObserver | None = None,
    ) -> None:
        self.hq = hq
        self.config = config
        self.hooks = tuple(hooks)
        self.on_round = on_round
        self.trainer = get_trainer(config.trainer)
        self._rng = random.Random(config.seed)
        self.thresholds = HealthThresholds(
            liveness_interval_s=hq.settings.liveness_interval_s,
            lost_after_s=config.round.timing.lost_after_s,
        )

    def run(self, max_rounds: int | None = None, wait_lock_s: float = 0.0) -> CampaignSummary:
        """Run rounds until the campaign ends or ``max_rounds`` rounds were run."""
        started = time.monotonic()
        lock = CampaignLock(self.hq.client, self.hq.keys, self.config.id)
        lock.acquire(wait_lock_s)
        try:
            progress = self._load_or_start()
            done = 0
            while not self._finished(progress.state) and (max_rounds is None or done < max_rounds):
                progress = self._run_round(progress)
                done += 1
            return summarize(self.config, progress.state, self.trainer, time.monotonic() - started)
        finally:
            lock.release()

    def _finished(self, state: CampaignState) -> bool:
        return state.stopped_reason is not None or state.next_round >= self.config.rounds

    def _load_or_start(self) -> Progress:
        progress = load_progress(self.hq, self.config)
        if progress is not None:
            progress = replace(progress, state=reconsider_stop(self.config, progress.state))
            logger.info(
                "Campaign %s: resuming at round %d from %s",
                self.config.id,
                progress.state.next_round,
                progress.source,
            )
            return progress
        model_bytes = encode_weights(self.trainer.initial_weights(self.config.seed))
        digest = self.hq.blobs.put(model_bytes, self.hq.settings.model_ttl_s)
        state = CampaignState(campaign_id=self.config.id, next_round=0, global_model_hash=digest)
        progress = Progress(state, model_bytes)
        save_progress(self.hq, self.config, progress)
        logger.info("Campaign %s: started with model %s", self.config.id, digest[:12])
        return progress

    def _run_round(self, progress: Progress) -> Progress:
        index = progress.state.next_round
        timing, plan = plan_round(self.config, progress.state, self.thresholds, self.hq.settings)
        if progress.server_state_bytes is not None:
            plan = replace(plan, server_state_hash=content_hash(progress.server_state_bytes))
        logger.info("Campaign %s round %d: timing %s", self.config.id, index, timing.reason)
        attempts, output = self._run_attempts(progress, plan, index)
        progress = self._apply(progress, attempts, output, timing, plan)
        save_progress(self.hq, self.config, progress)
        if self.on_round is not None:
            last = progress.state.history[-1]
            self.on_round(
                RoundReport(index, attempts[-1], timing, dict(last.metrics), progress.state)
            )
        return progress

    def _run_attempts(
        self, progress: Progress, plan: RoundPlan, index: int
    ) -> tuple[list[RoundResult], RoundOutput | None]:
        """Run a round, retrying it with backoff without the sites that failed it.

        Returns every attempt and, when the last one succeeded, its new model and
        server state as read from Redis.
        """
        attempts: list[RoundResult] = []
        left_out: set[str] = set()
        output: RoundOutput | None = None
        for attempt in range(1, self.config.failures.round_retries + 2):
            ref = RoundRef(self.config.id, index, attempt)
            result = self._run_attempt(progress, plan, ref, left_out)
            if result.success:
                output = self._read_output(result)
                if output is None:
                    result = output_lost(result)
            attempts.append(result)
            if result.success or attempt > self.config.failures.round_retries:
                break
            # A round Redis lost, or one too few sites were ready for, was no site's fault.
            if result.status not in (RECORD_LOST, NOT_STARTED):
                left_out |= set(result.failed_datasites)
            delay_s = retry_delay_s(
                attempt,
                self.config.failures.retry_backoff_s,
                self.config.failures.retry_backoff_max_s,
                self._rng,
            )
            without = f"without {','.join(sorted(left_out))}" if left_out else "with every site"
            logger.warning(
                "%s: failed (%s; %s); retrying in %.1f s %s",
                ref,
                result.status,
                _describe_failures(result),
                delay_s,
                without,
            )
            time.sleep(delay_s)
        return attempts, output

    def _read_output(self, result: RoundResult) -> RoundOutput | None:
        """Read a successful round's new model and server state; None when Redis lost them."""
        try:
            model_bytes = self.hq.blobs.get(result.model_hash_out)
            state_bytes = None
            if result.server_state_hash is not None:
                state_bytes = self.hq.blobs.get(result.server_state_hash)
        except BlobNotFoundError as exc:
            logger.warning("%s: closed, but Redis lost its output (%s)", result.ref, exc)
            return None
        return RoundOutput(model_bytes, state_bytes)

    def _apply(
        self,
        progress: Progress,
        attempts: list[RoundResult],
        output: RoundOutput | None,
        timing: RoundTiming,
        plan: RoundPlan,
    ) -> Progress:
        final = attempts[-1]
        metrics: dict[str, float] = {}
        model_bytes = progress.model_bytes
        server_state = progress.server_state_bytes
        if final.success and output is not None:
            model_bytes = output.model_bytes
            if output.server_state_bytes is not None:
                server_state = output.server_state_bytes
            # Stored again in case Redis restarted since the close: the plants fetch it.
            self.hq.blobs.put(model_bytes, self.hq.settings.model_ttl_s)
            metrics = self._evaluate(final, plan)
        state = apply_round(
            self.config,
            progress.state,
            attempts,
            timing,
            metrics,
            self.trainer.primary_metric,
            self.trainer.higher_is_better,
        )
        best_bytes = progress.best_bytes
        if state.best_model_hash == final.model_hash_out and final.success:
            best_bytes = model_bytes
        return Progress(state, model_bytes, best_bytes, server_state, progress.source)

    def _evaluate(self, final: RoundResult, plan: RoundPlan) -> dict[str, float]:
        health = read_site_health(
            self.hq.client, self.hq.keys, self.hq.monitor, plan.thresholds, plan.sites, self.hooks
        )
        # A site whose worker the round found gone would only be waited for until the time-out.
        lost = {s for s, reason in final.failed_datasites.items() if reason == LOST_REASON}
        selected = select_sites(health, plan.trainer, plan.sites).selected
        sites = [s for s in selected if s not in lost]
        evaluation = evaluate_model(
            self.hq,
            final.ref,
            sites,
            plan.trainer,
            final.model_hash_out,
            timeout_s=min(EVALUATION_TIMEOUT_S, plan.deadline_s),
        )
        if evaluation.missing:
            logger.warning(
                "%s: evaluation missing from %s",
                final.ref,
                "; ".join(f"{s}: {r}" for s, r in sorted(evaluation.missing.items())),
            )
        return evaluation.metrics

    def _run_attempt(
        self, progress: Progress, plan: RoundPlan, ref: RoundRef, excluded_sites: set[str]
    ) -> RoundResult:
        record = self.hq.rounds.load(ref)
        if record is not None:
            return self._resume(record, plan)
        self._publish_inputs(progress)
        selection: Selection = choose_sites(
            self.hq, self.config, progress.state, plan, self.hooks, excluded_sites
        )
        return run_round(self.hq, plan, ref, progress.state.global_model_hash, selection)

    def _publish_inputs(self, progress: Progress) -> None:
        """Store the blobs a round's plants and closer fetch: the model and the server state.

        Putting them before every attempt, not once per round, restores them when
        Redis restarted empty during the previous attempt. A plant that then found
        no model would fail, and the retry would leave it out for no fault of its own.
        """
        ttl_s = self.hq.settings.model_ttl_s
        self.hq.blobs.put(progress.model_bytes, ttl_s)
        if progress.server_state_bytes is not None:
            self.hq.blobs.put(progress.server_state_bytes, ttl_s)

    def _await_or_take_over(self, record: RoundRecord) -> RoundClosure:
        """Wait for the closer of a round in state closing; finish its work if it died.

        Closing takes seconds, so a round still closing ``CLOSING_STALE_S`` after
        its gate was passed lost its closer, and merging again is safe because
        the merge is deterministic.
        """
        ref = record.spec.ref
        since_s = time.time() - (record.closing_unix_s or 0.0)
        try:
            return await_closure(self.hq, ref, timeout_s=max(0.5, CLOSING_STALE_S - since_s))
        except RoundStateError:
            logger.warning(
                "%s: closer %s died while closing; finishing its work", ref, record.closed_by
            )
            return finish_closing(self.hq, ref, set())

    def _resume(self, record: RoundRecord, plan: RoundPlan) -> RoundResult:
        """Carry on with a round a previous coordinator dispatched."""
        ref = record.spec.ref
        logger.info("%s: found in state %s, resuming it", ref, record.state.value)
        if record.state is RoundState.OPEN:
            return collect_round(self.hq, record.spec, plan, time.monotonic())
        if record.state is RoundState.CLOSING:
            closure = self._await_or_take_over(record)
        else:
            closure = await_closure(self.hq, ref, timeout_s=1.0)
        elapsed_s = (record.closing_unix_s or time.time()) - record.spec.opened_unix_s
        return result_from_closure(self.hq, record.spec, closure, max(0.0, elapsed_s))


def _describe_failures(result: RoundResult) -> str:
    reasons = {**result.excluded_datasites, **result.failed_datasites}
    if not reasons:
        return "no site failed"
    return "; ".join(f"{site}: {reason}" for site, reason in sorted(reasons.items()))
