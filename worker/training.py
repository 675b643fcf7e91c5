"""One datasite's part of a round, from request to outcome, without ever raising.

Every way a plant can fail (a closed round, a missing model, a bad data file, a
trainer exception, the soft time limit) ends here as a ``SiteOutcome`` that names
the cause, so one plant cannot sink the round's chord.
"""

from __future__ import annotations

import logging
import time

from celery.exceptions import SoftTimeLimitExceeded

from plantfed.errors import PlantfedError
from plantfed.keys import RoundRef
from plantfed.messages import OutcomeStatus, SiteOutcome, TrainRequest
from plantfed.modelio import encode_weights
from plantfed.roundstore import RecordResult, RoundState
from worker.site import PlantRuntime

logger = logging.getLogger(__name__)

#: Time kept free before the round deadline for encoding and storing the update.
DEADLINE_RESERVE_S = 0.5

#: Lifetime of an update blob whose round closed before it arrived.
DISCARDED_UPDATE_TTL_S = 60.0


def run_training(runtime: PlantRuntime, request: TrainRequest, worker: str) -> SiteOutcome:
    """Train one site for one round and record the outcome in the round."""
    ref = RoundRef(request.campaign_id, request.round_index, request.attempt)
    started = time.monotonic()
    try:
        outcome = _train(runtime, request, ref, worker, started)
    except SoftTimeLimitExceeded:
        outcome = _failed(request, worker, started, OutcomeStatus.TIMED_OUT, "soft time limit hit")
    except Exception as exc:  # the task boundary: any failure becomes data
        logger.exception("%s site %s: training failed", ref, request.site_id)
        outcome = _failed(request, worker, started, OutcomeStatus.FAILED, _describe(exc))
    if outcome.status is OutcomeStatus.DISCARDED:
        return outcome
    return _record(runtime, request, ref, outcome)


def _train(
    runtime: PlantRuntime, request: TrainRequest, ref: RoundRef, worker: str, started: float
) -> SiteOutcome:
    if request.site_id not in runtime.site_ids:
        raise PlantfedError(
            f"task for site {request.site_id} reached a worker serving {','.join(runtime.site_ids)}"
        )
    state = runtime.rounds.state(ref)
    if state is not RoundState.OPEN:
        logger.info("%s site %s: round is %s, task discarded at start", ref, request.site_id, state)
        reason = f"round is {state.value if state else 'unknown'} at task start"
        return _failed(request, worker, started, OutcomeStatus.DISCARDED, reason)
    offer = runtime.offered.get(request.trainer)
    if offer is None:
        offered = ", ".join(sorted(runtime.offered)) or "none"
        raise PlantfedError(f"trainer {request.trainer!r} is not offered here (offered: {offered})")
    if offer.data is None:
        raise PlantfedError(f"local data unusable: {offer.data_error}")
    weights = runtime.fetch_model(request.model_hash)
    remaining_s = request.deadline_unix_s - time.time() - DEADLINE_RESERVE_S
    result = offer.trainer.train(
        weights, offer.data, request.params, time.monotonic() + remaining_s
    )
    update_hash = runtime.blobs.put(encode_weights(result.weights), request.update_ttl_s)
    return SiteOutcome(
        campaign_id=request.campaign_id,
        round_index=request.round_index,
        attempt=request.attempt,
        site_id=request.site_id,
        status=OutcomeStatus.COMPLETED,
        samples=result.samples,
        train_s=time.monotonic() - started,
        update_hash=update_hash,
        metrics=dict(result.metrics),
        worker=worker,
        stopped_at_deadline=result.stopped_at_deadline,
    )


def _record(
    runtime: PlantRuntime, request: TrainRequest, ref: RoundRef, outcome: SiteOutcome
) -> SiteOutcome:
    try:
        recorded = runtime.rounds.record_outcome(outcome, request.update_ttl_s)
    except Exception as exc:  # Redis unreachable: the outcome still returns through Celery
        logger.error("%s site %s: could not record outcome: %s", ref, request.site_id, exc)
        return outcome
    if recorded is RecordResult.RECORDED:
        logger.info(
            "%s site %s: %s, %d samples in %.2f s",
            ref, request.site_id, outcome.status.value, outcome.samples, outcome.train_s,
        )  # fmt: skip
        return outcome
    if outcome.update_hash:
        runtime.blobs.expire(outcome.update_hash, DISCARDED_UPDATE_TTL_S)
    logger.info("%s site %s: outcome discarded at finish (%s)", ref, request.site_id, recorded.name)
    return SiteOutcome(
        campaign_id=outcome.campaign_id,
        round_index=outcome.round_index,
        attempt=outcome.attempt,
        site_id=outcome.site_id,
        status=OutcomeStatus.DISCARDED,
        samples=outcome.samples,
        train_s=outcome.train_s,
        error=f"discarded at finish: {recorded.name.lower().replace('_', ' ')}",
        worker=outcome.worker,
    )


def _failed(
    request: TrainRequest, worker: str, started: float, status: OutcomeStatus, error: str
) -> SiteOutcome:
    return SiteOutcome(
        campaign_id=request.campaign_id,
        round_index=request.round_index,
        attempt=request.attempt,
        site_id=request.site_id,
        status=status,
        train_s=time.monotonic() - started,
        error=error,
        worker=worker,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"[:500]
