"""Closing a round exactly once: the gate, the merge, and the closed record.

Two callers race to close a round: the chord body on the HQ worker, when every
site answered, and the coordinator, when its waiting policy says so. Both call
``close_round``; the gate in Redis lets exactly one of them through. The winner
merges the completed outcomes recorded so far, stores the new global model and
marks the record closed. Tasks still running are revoked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from coordinator.aggregation import StrategyConfig, UpdateSource, make_strategy
from coordinator.context import Hq
from plantfed.crashpoints import crash_point
from plantfed.errors import RoundStateError
from plantfed.keys import RoundRef
from plantfed.messages import OutcomeStatus, SiteOutcome
from plantfed.modelio import Weights, decode_weights, encode_weights
from plantfed.roundstore import RoundRecord, RoundState

logger = logging.getLogger(__name__)

#: Failure reason of a site whose worker was found gone before the round closed.
LOST_REASON = "lost: worker gone"


@dataclass(frozen=True)
class RoundClosure:
    """Result of a closed round, stored in its record."""

    success: bool
    close_reason: str
    closed_by: str
    model_hash_in: str
    model_hash_out: str
    completed: list[str]
    failed: dict[str, str]
    samples: int
    aggregate_s: float
    norms: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    server_state_hash: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundClosure:
        return cls(**data)


def close_round(
    hq: Hq, ref: RoundRef, closer: str, reason: str, lost: Iterable[str] = ()
) -> RoundClosure | None:
    """Pass the gate and close the round; None when another caller closed it first."""
    if not hq.rounds.pass_gate(ref, closer, reason):
        logger.debug("%s: %s lost the close gate", ref, closer)
        return None
    logger.info("%s: closing (%s) by %s", ref, reason, closer)
    crash_point("round-closing")
    return finish_closing(hq, ref, set(lost))


def finish_closing(hq: Hq, ref: RoundRef, lost: set[str]) -> RoundClosure:
    """Merge the recorded outcomes of a round in state closing and mark it closed.

    Merging is deterministic, so a coordinator that resumes a round left in
    ``closing`` by a dead closer may run this again and reach the same model.
    """
    record = _closing_record(hq, ref)
    spec = record.spec
    started = time.monotonic()
    outcomes = hq.rounds.outcomes(ref)
    failed = _failed_sites(spec.sites, outcomes, lost, set(hq.rounds.task_ids(ref)))
    completed = [s for s in spec.sites if s in outcomes and outcomes[s].completed]
    model_hash_out = spec.model_hash
    norms: dict[str, float] = {}
    rejected: dict[str, str] = {}
    samples = 0
    state_hash = spec.server_state_hash
    if len(completed) >= spec.min_completed:
        merged = _merge(hq, record, [outcomes[s] for s in completed])
        model_hash_out, norms, rejected, samples, state_hash = merged
        failed.update(rejected)
        completed = [s for s in completed if s not in rejected]
    success = len(completed) >= spec.min_completed
    closure = RoundClosure(
        success=success,
        close_reason=record.close_reason or "",
        closed_by=record.closed_by or "",
        model_hash_in=spec.model_hash,
        model_hash_out=model_hash_out if success else spec.model_hash,
        completed=completed,
        failed=failed,
        samples=samples,
        aggregate_s=time.monotonic() - started,
        norms=norms,
        rejected=rejected,
        server_state_hash=state_hash if success else spec.server_state_hash,
    )
    hq.rounds.finish_close(ref, closure.to_json())
    _revoke_unfinished(hq, ref, outcomes)
    logger.info(
        "%s: closed (%s), %d completed, %d failed, model %s",
        ref, closure.close_reason, len(completed), len(failed), closure.model_hash_out[:12],
    )  # fmt: skip
    return closure


def _closing_record(hq: Hq, ref: RoundRef) -> RoundRecord:
    record = hq.rounds.load(ref)
    if record is None:
        raise RoundStateError(f"{ref}: no round record in Redis")
    if record.state is not RoundState.CLOSING:
        raise RoundStateError(f"{ref}: expected state closing, found {record.state.value}")
    return record


def _failed_sites(
    sites: Iterable[str], outcomes: dict[str, SiteOutcome], lost: set[str], sent: set[str]
) -> dict[str, str]:
    failed: dict[str, str] = {}
    for site in sites:
        outcome = outcomes.get(site)
        if outcome is None and site not in sent:
            failed[site] = "not sent before the round closed (bounded concurrency)"
        elif outcome is None:
            failed[site] = LOST_REASON if site in lost else "no answer before the round closed"
        elif outcome.status is not OutcomeStatus.COMPLETED:
            failed[site] = f"{outcome.status.value}: {outcome.error or 'no detail'}"
    return failed


def _merge(
    hq: Hq, record: RoundRecord, completed: list[SiteOutcome]
) -> tuple[str, dict[str, float], dict[str, str], int, str | None]:
    spec = record.spec
    global_weights = decode_weights(hq.blobs.get(spec.model_hash))
    sources = [
        UpdateSource(
            site_id=o.site_id,
            samples=o.samples,
            load=_loader(hq, o.update_hash),
            declared_samples=spec.declared_samples.get(o.site_id),
        )
        for o in completed
    ]
    strategy = make_strategy(StrategyConfig.from_json(spec.strategy))
    state = decode_weights(hq.blobs.get(spec.server_state_hash)) if spec.server_state_hash else None
    result = strategy.aggregate(global_weights, sources, state)
    rejected = {r.site_id: f"rejected ({r.reason.value}): {r.message}" for r in result.rejected}
    for site_id, reason in rejected.items():
        logger.warning("%s site %s: update %s", spec.ref, site_id, reason)
    if len(result.included) < spec.min_completed:
        return spec.model_hash, dict(result.delta_norms), rejected, 0, spec.server_state_hash
    digest = hq.blobs.put(encode_weights(result.weights), hq.settings.model_ttl_s)
    state_hash = None
    if result.state:
        state_hash = hq.blobs.put(encode_weights(result.state), hq.settings.model_ttl_s)
    return digest, dict(result.delta_norms), rejected, result.total_samples, state_hash


def _loader(hq: Hq, digest: str | None) -> Callable[[], Weights]:
    def load() -> Weights:
        if digest is None:
            raise RoundStateError("completed outcome without an update hash")
        return decode_weights(hq.blobs.get(digest))

    return load


def _revoke_unfinished(hq: Hq, ref: RoundRef, outcomes: dict[str, SiteOutcome]) -> None:
    running = [tid for site, tid in hq.rounds.task_ids(ref).items() if site not in outcomes]
    if not running:
        return
    try:
        hq.app.control.revoke(running, terminate=True, signal="SIGUSR1")
        logger.info("%s: revoked %d unfinished tasks", ref, len(running))
    except Exception as exc:  # revocation is best effort; late results are discarded anyway
        logger.warning("%s: could not revoke unfinished tasks: %s", ref, exc)
