"""Benchmark-only Celery tasks and trainers, loaded by plant workers (``--plugin bench.plugins``).

- ``bench.noop``: a task that does nothing, the header of the raw-chord reference.
- ``bench.chord_done``: the raw chord's body. It pushes one item onto a Redis list,
  so the benchmark wakes the moment the chord completes, as the coordinator wakes
  on a round event.
- Trainer ``ai4i-attack``: the AI4I trainer with an optional attack. Every plant
  of a poisoning campaign offers it under this one name, because a campaign asks
  all plants for the same trainer. A plant attacks only when its worker process
  has ``PLANTFED_BENCH_ATTACKER=1`` in its environment, and the campaign's trainer
  parameter ``attack`` chooses the attack (``none``, ``nan``, ``scaled`` or
  ``flip``); honest plants ignore that parameter. One federation thus serves
  every attack and strategy in turn.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from enum import StrEnum
from typing import Any

import numpy as np
import redis
from celery import Task, shared_task

from plantfed.celery_app import app_settings
from plantfed.modelio import Weights
from worker.trainers import mlp
from worker.trainers.ai4i import Ai4iTrainer
from worker.trainers.base import DataError, SiteData, TrainParams, TrainResult
from worker.trainers.registry import register_trainer

NOOP_TASK = "bench.noop"
CHORD_DONE_TASK = "bench.chord_done"

#: Environment variable that makes a plant worker process the attacker.
ATTACKER_ENV = "PLANTFED_BENCH_ATTACKER"

#: Trainer parameter that names the attack.
ATTACK_PARAM = "attack"

#: Factor by which the ``scaled`` attack multiplies its delta from the global model.
ATTACK_SCALE = 100.0

#: Lifetime of the list the chord body pushes to.
DONE_KEY_TTL_S = 600

_clients: dict[str, redis.Redis] = {}


@shared_task(name=NOOP_TASK)  # type: ignore[untyped-decorator]
def noop() -> None:
    """Do nothing: one header task of the raw-chord reference."""


@shared_task(name=CHORD_DONE_TASK, bind=True)  # type: ignore[untyped-decorator]
def chord_done(self: Task, key: str) -> None:
    """Push ``1`` onto the Redis list ``key`` so that the waiting benchmark wakes."""
    url = app_settings(self.app).broker_url
    assert url is not None
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url)
    pipe = client.pipeline()
    pipe.lpush(key, 1)
    pipe.expire(key, DONE_KEY_TTL_S)
    pipe.execute()


class Attack(StrEnum):
    """Kind of poisoning an attacking plant applies to its update."""

    NONE = "none"
    NAN = "nan"
    SCALED = "scaled"
    FLIP = "flip"


def attacking_here() -> bool:
    """Return whether this process is the attacking plant."""
    return os.environ.get(ATTACKER_ENV, "") == "1"


class AttackTrainer(Ai4iTrainer):
    """``ai4i-mlp`` that, in the attacking plant only, poisons its update.

    ``nan`` fills every weight with NaN. ``scaled`` sends the global model plus
    ``ATTACK_SCALE`` times the honest delta. ``flip`` trains on inverted failure
    labels (0 and 1 swapped).
    """

    name = "ai4i-attack"

    def train(
        self,
        weights: Weights,
        data: SiteData,
        params: TrainParams,
        deadline_monotonic_s: float,
    ) -> TrainResult:
        """Train honestly, or poisoned when this plant attacks (see the class docstring)."""
        attack = Attack(str(params.get(ATTACK_PARAM, Attack.NONE.value)))
        honest = {key: value for key, value in params.items() if key != ATTACK_PARAM}
        if not attacking_here() or attack is Attack.NONE:
            return super().train(weights, data, honest, deadline_monotonic_s)
        if attack is Attack.FLIP:
            data = _flip_labels(data)
        result = super().train(weights, data, honest, deadline_monotonic_s)
        if attack is Attack.NAN:
            poisoned = {name: np.full_like(a, np.nan) for name, a in result.weights.items()}
            return replace(result, weights=poisoned)
        if attack is Attack.SCALED:
            return replace(result, weights=_scaled(weights, result.weights))
        return result


def _flip_labels(data: SiteData) -> SiteData:
    train = data.train
    if not isinstance(train, mlp.Samples):
        raise DataError(f"{data.path}: site data was not loaded by the AI4I trainer")
    flipped = mlp.Samples(train.features, (1.0 - train.targets).astype(train.targets.dtype))
    return replace(data, train=flipped)


def _scaled(global_weights: Mapping[str, Any], local: Weights) -> Weights:
    return {
        name: (global_weights[name] + ATTACK_SCALE * (a - global_weights[name])).astype(a.dtype)
        for name, a in local.items()
    }


register_trainer(AttackTrainer.name, AttackTrainer)
