"""A trainer that trains nothing, for connectivity checks and overhead benchmarks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from plantfed.modelio import Weights
from worker.trainers.base import SiteData, TrainParams, TrainResult


class NoopTrainer:
    """Returns the global model unchanged; ``params["samples"]`` sets the reported count."""

    name = "noop"
    primary_metric = "n"
    higher_is_better = True
    needs_data = False

    def load_data(self, path: Path) -> SiteData:
        return SiteData(path=path, train=None, holdout=None, train_samples=1, holdout_samples=1)

    def initial_weights(self, seed: int) -> Weights:
        rng = np.random.default_rng(seed)
        return {"weight": rng.standard_normal(16).astype(np.float32)}

    def train(
        self,
        weights: Weights,
        data: SiteData,
        params: TrainParams,
        deadline_monotonic_s: float,
    ) -> TrainResult:
        return TrainResult(weights=weights, samples=int(params.get("samples", 1)))

    def evaluate(self, weights: Weights, data: SiteData) -> dict[str, float]:
        return {"n": float(data.holdout_samples)}

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
        return {"n": float(sums.get("n", 0.0))}
