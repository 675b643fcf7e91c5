"""Federated evaluation on one site: a global model scored on the site's held-out split."""

from __future__ import annotations

import logging

from plantfed.keys import RoundRef
from plantfed.messages import EvaluateRequest, EvaluationOutcome
from worker.site import PlantRuntime

logger = logging.getLogger(__name__)


def run_evaluation(runtime: PlantRuntime, request: EvaluateRequest) -> EvaluationOutcome:
    """Evaluate the requested model and store the sums where the coordinator collects them."""
    ref = RoundRef(request.campaign_id, request.round_index, request.attempt)
    try:
        offer = runtime.offered.get(request.trainer)
        if offer is None or offer.data is None:
            reason = "not offered" if offer is None else offer.data_error
            outcome = EvaluationOutcome(request.site_id, request.model_hash, error=str(reason))
        else:
            weights = runtime.fetch_model(request.model_hash)
            sums = offer.trainer.evaluate(weights, offer.data)
            outcome = EvaluationOutcome(request.site_id, request.model_hash, sums=sums)
    except Exception as exc:  # the task boundary: any failure becomes data
        logger.exception("%s site %s: evaluation failed", ref, request.site_id)
        outcome = EvaluationOutcome(request.site_id, request.model_hash, error=repr(exc)[:500])
    key = runtime.keys.evaluations(ref)
    ttl_ms = max(1, int(request.ttl_s * 1000))
    pipe = runtime.client.pipeline(transaction=True)
    pipe.hset(key, request.site_id, outcome.dumps())
    pipe.pexpire(key, ttl_ms)
    pipe.rpush(runtime.keys.events(ref), f"eval:{request.site_id}")
    pipe.pexpire(runtime.keys.events(ref), ttl_ms)
    pipe.execute()
    return outcome
