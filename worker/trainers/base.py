"""The contract every trainer honours, and the types it exchanges with the worker.

A trainer owns one workload: how a plant's local file is read and split, how a
model is initialised, trained for a bounded time, and evaluated. Evaluation
returns additive sums (counts, squared errors) so that the coordinator can pool
them across plants exactly, instead of averaging per-plant ratios.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from plantfed.errors import PlantfedError
from plantfed.modelio import Weights

#: Parameter values a campaign may pass to a trainer; they travel as JSON.
ParamValue = int | float | str | bool
TrainParams = Mapping[str, ParamValue]


class DataError(PlantfedError):
    """The plant's local data file is missing, unreadable or not in the trainer's format."""


@dataclass(frozen=True)
class SiteData:
    """A plant's local data, split once at load time into training and held-out parts.

    ``train`` and ``holdout`` are trainer-specific (typically feature and target
    arrays); only the trainer that loaded them reads them.
    """

    path: Path
    train: object
    holdout: object
    train_samples: int
    holdout_samples: int


@dataclass(frozen=True)
class TrainResult:
    """Result of one local training run."""

    weights: Weights
    samples: int
    metrics: dict[str, float] = field(default_factory=dict)
    batches: int = 0
    stopped_at_deadline: bool = False


@runtime_checkable
class Trainer(Protocol):
    """One workload: data loading, initial model, local training and evaluation."""

    #: Name a campaign uses to ask for this trainer; stable across versions.
    name: str

    def load_data(self, path: Path) -> SiteData:
        """Read and split a plant's local data; raise ``DataError`` with the cause."""
        ...

    def initial_weights(self, seed: int) -> Weights:
        """Return a freshly initialised global model."""
        ...

    def train(
        self,
        weights: Weights,
        data: SiteData,
        params: TrainParams,
        deadline_monotonic_s: float,
    ) -> TrainResult:
        """Train from ``weights`` on ``data.train`` and return the new weights.

        The trainer checks ``time.monotonic()`` against ``deadline_monotonic_s``
        between batches and returns what it has once the deadline is near.
        """
        ...

    def evaluate(self, weights: Weights, data: SiteData) -> dict[str, float]:
        """Evaluate on ``data.holdout`` and return additive sums, including ``n``."""
        ...

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
        """Turn pooled evaluation sums into metrics (F1, RMSE, ...)."""
        ...

    @property
    def primary_metric(self) -> str:
        """Metric name used for early stopping and "best model" choice."""
        ...

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger ``primary_metric`` is better (F1) or worse (RMSE)."""
        ...
