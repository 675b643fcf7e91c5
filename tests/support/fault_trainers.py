"""Trainers that misbehave the way plant code does in life, for fault tests and benchmarks.

Plant workers load this module with ``--plugin tests.support.fault_trainers``.
Each trainer returns the global model unchanged (like ``noop``) unless it fails.
``PLANTFED_TEST_SLEEP_S`` in a worker's environment makes ``sleepy`` that slow there.
"""

from __future__ import annotations

import os
import signal
import time

from plantfed.modelio import Weights
from worker.trainers.base import SiteData, TrainParams, TrainResult
from worker.trainers.noop import NoopTrainer
from worker.trainers.registry import register_trainer


class SleepyTrainer(NoopTrainer):
    """Sleeps ``PLANTFED_TEST_SLEEP_S`` (or ``params["sleep_s"]``), stopping at the deadline."""

    name = "sleepy"

    def train(
        self, weights: Weights, data: SiteData, params: TrainParams, deadline_monotonic_s: float
    ) -> TrainResult:
        sleep_s = float(os.environ.get("PLANTFED_TEST_SLEEP_S", params.get("sleep_s", 0.0)))
        finish = min(time.monotonic() + sleep_s, deadline_monotonic_s)
        while time.monotonic() < finish:
            time.sleep(min(0.05, max(0.0, finish - time.monotonic())))
        return TrainResult(weights=weights, samples=int(params.get("samples", 10)))


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
        return TrainResult(weights=weights, samples=1)


class SwallowingTrainer(NoopTrainer):
    """Catches every exception, the soft time limit included, and keeps going."""

    name = "swallow"

    def train(
        self, weights: Weights, data: SiteData, params: TrainParams, deadline_monotonic_s: float
    ) -> TrainResult:
        give_up = time.monotonic() + float(params.get("sleep_s", 3600.0))
        while time.monotonic() < give_up:
            try:
                time.sleep(0.1)
            except BaseException:  # noqa: BLE001, S110 (the misbehaviour under test)
                pass
        return TrainResult(weights=weights, samples=1)


for trainer in (SleepyTrainer, RaisingTrainer, SignalBlockingTrainer, SwallowingTrainer):
    register_trainer(trainer.name, trainer)
