"""One datasite's part of a round, from request to outcome, without ever raising.

Every way a plant can fail (a closed round, a missing model, a bad data file, a
trainer exception, the soft time limit) ends here as a ``SiteOutcome`` that names
the cause, so one plant cannot sink the round's chord.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import redis
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
        outcome, blob_created = _train(runtime, request, ref, worker, started)
    except SoftTimeLimitExceeded:
        outcome = _failed(request, worker, started, OutcomeStatus.TIMED_OUT, "soft time limit hit")
        blob_created = False
    except Exception as exc:  # the task boundary: any failure becomes data
        logger.exception("%s site %s: training failed", ref, request.site_id)
        outcome = _failed(request, worker, started, OutcomeStatus.FAILED, _describe(exc))
        blob_created = False
    if outcome.status is OutcomeStatus.DISCARDED:
        return outcome
    try:
        return _record(runtime, request, ref, outcome, blob_created)
    except SoftTimeLimitExceeded:
        # The soft limit and a revocation each raise once; both landed while recording.
        logger.warning("%s site %s: interrupted twice while recording", ref, request.site_id)
        return replace(outcome, error="interrupted while recording; see the round record")


def _train(
    runtime: PlantRuntime, request: TrainRequest, ref: RoundRef, worker: str, started: float
) -> tuple[SiteOutcome, bool]:
    """Run the trainer; return the outcome and whether this task created the update blob."""
    if request.site_id not in runtime.site_ids:
        raise PlantfedError(
            f"task for site {request.site_id} reached a worker serving {','.join(runtime.site_ids)}"
        )
    state = runtime.rounds.state(ref, token=request.round_token)
    if state is not RoundState.OPEN:
        logger.info("%s site %s: round is %s, task discarded at start", ref, request.site_id, state)
        reason = f"round is {state.value if state else 'unknown'} at task start"
        return _failed(request, worker, started, OutcomeStatus.DISCARDED, reason), False
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

    encoded = encode_weights(result.weights)
    # Blobs are content-addressed: an update equal to the global model, or to another
    # site's update, shares its blob, whose lifetime a discard must then leave alone.
    update_hash, created = runtime.blobs.put_new(encoded, request.update_ttl_s)
    outcome = SiteOutcome(
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
        round_token=request.round_token,
    )
    return outcome, created


def _record(
    runtime: PlantRuntime,
    request: TrainRequest,
    ref: RoundRef,
    outcome: SiteOutcome,
    blob_created: bool,
) -> SiteOutcome:
    try:
        recorded, stored = _offer_and_read(runtime, ref, outcome, request.update_ttl_s)
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:  # Redis unreachable: the round never saw this outcome
        logger.error("%s site %s: could not record outcome: %s", ref, request.site_id, exc)
        return replace(
            outcome, status=OutcomeStatus.FAILED, error=f"could not record the outcome: {exc}"
        )
    if recorded is not RecordResult.RECORDED and stored == outcome:
        recorded = RecordResult.RECORDED  # an interrupted first attempt went through
    if recorded is RecordResult.RECORDED:
        logger.info(
            "%s site %s: %s, %d samples in %.2f s",
            ref, request.site_id, outcome.status.value, outcome.samples, outcome.train_s,
        )  # fmt: skip
        return outcome
    referenced = stored is not None and stored.update_hash == outcome.update_hash
    if outcome.update_hash and blob_created and not referenced:
        runtime.blobs.expire(outcome.update_hash, DISCARDED_UPDATE_TTL_S)
    logger.info("%s site %s: outcome discarded at finish (%s)", ref, request.site_id, recorded.name)
    return replace(
        outcome,
        status=OutcomeStatus.DISCARDED,
        error=f"discarded at finish: {recorded.name.lower().replace('_', ' ')}",
    )


def _offer_and_read(
    runtime: PlantRuntime, ref: RoundRef, outcome: SiteOutcome, ttl_s: float
) -> tuple[RecordResult, SiteOutcome | None]:
    """Offer the outcome and read back what the round stored for the site.

    A time-limit signal that lands inside a Redis call can leave a connection
    half read, so a failed attempt drops the pooled connections and tries once more.
    """
    try:
        recorded = _offer(runtime, outcome, ttl_s)
    except (redis.RedisError, OSError) as exc:
        logger.warning("%s site %s: recording failed, retrying: %s", ref, outcome.site_id, exc)
        runtime.client.connection_pool.disconnect()
        recorded = _offer(runtime, outcome, ttl_s)
    if recorded is RecordResult.RECORDED:
        return recorded, outcome
    try:
        stored = runtime.rounds.outcomes(ref, [outcome.site_id])
    except SoftTimeLimitExceeded:
        # A revocation's signal can land during the read as well; it fires only once.
        stored = runtime.rounds.outcomes(ref, [outcome.site_id])
    return recorded, stored.get(outcome.site_id)


def _offer(runtime: PlantRuntime, outcome: SiteOutcome, ttl_s: float) -> RecordResult:
    """Offer the outcome to its round, once more if a time-limit signal interrupts the call.

    The signal may land after the script ran. A second offer then reports the
    outcome as a duplicate of itself, so the caller compares it with the stored one.
    """
    try:
        return runtime.rounds.record_outcome(outcome, ttl_s)
    except SoftTimeLimitExceeded:
        logger.warning(
            "Site %s: time limit or revocation while recording; offering again", outcome.site_id
        )
        return runtime.rounds.record_outcome(outcome, ttl_s)


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
        round_token=request.round_token,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"[:500]
