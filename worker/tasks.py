"""Celery tasks a plant worker serves on its ``site.<site_id>`` queue."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from plantfed.messages import EVALUATE_TASK, TRAIN_TASK, EvaluateRequest, TrainRequest
from worker.evaluation import run_evaluation
from worker.site import current_runtime
from worker.training import run_training


@shared_task(name=TRAIN_TASK, bind=True, acks_late=True)
def train(self: Task, **request: Any) -> dict[str, Any]:
    """Train one site for one round; returns a ``SiteOutcome`` as JSON, never raises."""
    worker = str(self.request.hostname or "")
    return run_training(current_runtime(), TrainRequest.from_json(request), worker).to_json()


@shared_task(name=EVALUATE_TASK, bind=True, acks_late=True)
def evaluate(self: Task, **request: Any) -> dict[str, Any]:
    """Score a global model on this site's held-out data; returns the sums as JSON."""
    outcome = run_evaluation(current_runtime(), EvaluateRequest.from_json(request))
    return {"site_id": outcome.site_id, "sums": outcome.sums, "error": outcome.error}
