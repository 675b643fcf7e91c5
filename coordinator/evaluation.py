"""Federated evaluation: a global model scored on every site's held-out split.

Each site returns additive sums (counts, squared errors); the coordinator pools
them and lets the trainer turn the pooled sums into metrics, which weighs every
plant by its number of held-out samples.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from coordinator.context import Hq
from plantfed.keys import RoundRef
from plantfed.messages import EVALUATE_TASK, EvaluateRequest, EvaluationOutcome, site_queue
from worker.trainers.base import Trainer
from worker.trainers.registry import get_trainer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one global model: pooled over sites, and per site."""

    model_hash: str
    metrics: dict[str, float]
    per_site: dict[str, dict[str, float]]
    missing: dict[str, str] = field(default_factory=dict)


def evaluate_model(
    hq: Hq,
    ref: RoundRef,
    site_ids: Sequence[str],
    trainer: str,
    model_hash: str,
    timeout_s: float,
) -> Evaluation:
    """Ask each site to score ``model_hash`` and pool what arrives within ``timeout_s``."""
    for site_id in site_ids:
        request = EvaluateRequest(
            campaign_id=ref.campaign_id,
            round_index=ref.index,
            attempt=ref.attempt,
            site_id=site_id,
            trainer=trainer,
            model_hash=model_hash,
            ttl_s=hq.settings.update_ttl_s,
        )
        hq.app.send_task(
            EVALUATE_TASK,
            kwargs=request.to_json(),
            queue=site_queue(site_id),
            expires=timeout_s,
            time_limit=timeout_s + 5.0,
        )
    outcomes = _collect(hq, ref, set(site_ids), model_hash, timeout_s)
    return _pool(get_trainer(trainer), model_hash, site_ids, outcomes)


def _collect(
    hq: Hq, ref: RoundRef, expected: set[str], model_hash: str, timeout_s: float
) -> dict[str, EvaluationOutcome]:
    give_up = time.monotonic() + timeout_s
    outcomes: dict[str, EvaluationOutcome] = {}
    while True:
        raw = cast(dict[bytes, bytes], hq.client.hgetall(hq.keys.evaluations(ref)))
        for site, text in raw.items():
            outcome = EvaluationOutcome.loads(text)
            if outcome.model_hash == model_hash and site.decode() in expected:
                outcomes[site.decode()] = outcome
        remaining_s = give_up - time.monotonic()
        if expected <= set(outcomes) or remaining_s <= 0:
            return outcomes
        hq.rounds.next_event(ref, timeout_s=min(remaining_s, 0.25))


def _pool(
    trainer: Trainer,
    model_hash: str,
    site_ids: Sequence[str],
    outcomes: dict[str, EvaluationOutcome],
) -> Evaluation:
    summarize = trainer.summarize
    pooled: dict[str, float] = {}
    per_site: dict[str, dict[str, float]] = {}
    missing: dict[str, str] = {}
    for site_id in site_ids:
        outcome = outcomes.get(site_id)
        if outcome is None:
            missing[site_id] = "no evaluation before the time-out"
            continue
        if outcome.error:
            missing[site_id] = outcome.error
            continue
        per_site[site_id] = summarize(outcome.sums)
        for name, value in outcome.sums.items():
            pooled[name] = pooled.get(name, 0.0) + float(value)
    metrics = summarize(pooled) if pooled else {}
    return Evaluation(model_hash, metrics, per_site, missing)
