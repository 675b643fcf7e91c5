"""Trainers that misbehave the way plant code does in life, for fault tests and benchmarks.

Plant workers load this module with ``--plugin tests.support.fault_trainers``.
Each trainer that does not fail returns the global model shifted by
``PLANTFED_TEST_SHIFT`` (0 when unset). A distinct shift per plant lets a test
check which updates a merged model contains. Per-plant behaviour comes from the
worker's environment:

- ``PLANTFED_TEST_SLEEP_S`` makes ``sleepy`` that slow there;
- ``PLANTFED_TEST_FAULT`` names the trainer that ``faulty`` runs there
  (``sleepy`` when unset), so one round can mix healthy and failing plants.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from plantfed.modelio import Weights
from worker.trainers.base import SiteData, TrainParams, TrainResult
from worker.trainers.noop import NoopTrainer
from worker.trainers.registry import register_trainer

SLEEP_ENV = "PLANTFED_TEST_SLEEP_S"
SHIFT_ENV = "PLANTFED_TEST_SHIFT"
FAULT_ENV = "PLANTFED_TEST_FAULT"


def shifted(weights: Weights) -> Weights:
    """Return ``weights`` plus this plant's ``PLANTFED_TEST_SHIFT``, in each array's dtype."""
    shift = float(os.environ.get(SHIFT_ENV, "0"))
    if shift == 0.0:
        return weights
    return {name: (a + shift).astype(a.dtype) for name, a in weights.items()}


class SleepyTrainer(NoopTrainer):
    """Sleeps ``PLANTFED_TEST_SLEEP_S`` (or ``params["sleep_s"]``), stopping at the deadline."""

    name = "sleepy"

    def train(
        self, weights: Weights, data: SiteData, params: TrainParams, deadline_monotonic_s: float
    ) -> TrainResult:
        sleep_s = float(os.environ.get(SLEEP_ENV, params.get("sleep_s", 0.0)))
        finish = min(time.monotonic() + sleep_s, deadline_monotonic_s)
        while time.monotonic() < finish:
            time.sleep(min(0.05, max(0.0, finish - time.monotonic())))
        return TrainResult(weights=shifted(weights), samples=int(params.get("samples", 1)))


class RaisingTrainer(NoopTrainer):
    """Raises on every call, like a bug in a plant's pipeline."""

    name = "raises"

    def train(
        self, weights: Weights, data: SiteData, params: TrainParams, deadline_monotonic_s: float
    ) -> TrainResult:
        raise RuntimeError("sensor column 'torque' is empty")


class SignalBlockingTrainer(NoopTrainer):
    """Sleeps with the soft-time-limit signal blocked, as a call stuck in C code does."""

    name = "stuck"

    def train(
        self, weights: Weights, data: SiteData, params: TrainParams, deadline_monotonic_s: float
    ) -> TrainResult:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        time.sleep(float(params.get("sleep_s", 3600.0)))
        return TrainResult(weights=shifted(weights), samples=1)


class SwallowingTrainer(NoopTrainer):
    """Catches every exception, the soft time limit included, and keeps going."""

    name = "swallow"

    def train(
        self, weights: Weights, data: SiteData, params: TrainParams, deadline_monotonic_s: float
    ) -> TrainResult:
        give_up = time.monotonic() + float(params.get("sleep_s", 3600.0))
        while time.monotonic() < give_up:
            # Swallowing even the soft time limit is the misbehaviour under test.
            with contextlib.suppress(BaseException):
                time.sleep(0.1)
        return TrainResult(weights=shifted(weights), samples=1)


_BY_NAME = {
    trainer.name: trainer
    for trainer in (SleepyTrainer, RaisingTrainer, SignalBlockingTrainer, SwallowingTrainer)
}


class FaultyTrainer(NoopTrainer):
    """Runs the trainer that ``PLANTFED_TEST_FAULT`` names on this plant, ``sleepy`` by default."""

    name = "faulty"

    def train(
        self, weights: Weights, data: SiteData, params: TrainParams, deadline_monotonic_s: float
    ) -> TrainResult:
        chosen = _BY_NAME[os.environ.get(FAULT_ENV, SleepyTrainer.name)]
        return chosen().train(weights, data, params, deadline_monotonic_s)


for trainer in (*_BY_NAME.values(), FaultyTrainer):
    register_trainer(trainer.name, trainer)
