"""Aggregation at headquarters: update validation and merge strategies over numpy weights.

Everything here is a pure function of the global model and the round's updates:
no Redis, no Celery, no clock. ``make_strategy`` builds a strategy from a
``StrategyConfig``, and ``Strategy.aggregate`` turns ``UpdateSource`` values into
an ``AggregateResult``.
"""

from coordinator.aggregation.direction import (
    DEFAULT_MIN_COSINE,
    MIN_UPDATES_FOR_DIRECTION_TEST,
    direction_outliers,
)
from coordinator.aggregation.interface import AggregateResult, UpdateSource
from coordinator.aggregation.mean import FedAvg
from coordinator.aggregation.names import StrategyName
from coordinator.aggregation.robust import CoordinateMedian, TrimmedMean
from coordinator.aggregation.screening import ClipNorm, GuardConfig, clip_factor
from coordinator.aggregation.server_opt import ServerOptimizer, export_state, restore_state
from coordinator.aggregation.strategies import (
    PARAMETER_DEFAULTS,
    STRATEGY_DEFAULTS,
    Strategy,
    StrategyConfig,
    make_strategy,
    parameter_default,
)
from coordinator.aggregation.streaming import merge_mean_delta
from coordinator.aggregation.validation import (
    DEFAULT_MAX_NORM_Z,
    MIN_UPDATES_FOR_OUTLIER_TEST,
    Rejection,
    RejectionReason,
    norm_outliers,
    validate_update,
)

__all__ = [  # noqa: RUF022 (grouped by topic, sorted within each group)
    # Configuration and factory
    "PARAMETER_DEFAULTS",
    "STRATEGY_DEFAULTS",
    "ClipNorm",
    "GuardConfig",
    "StrategyConfig",
    "StrategyName",
    "make_strategy",
    "parameter_default",
    # Strategy interface and its values
    "AggregateResult",
    "Strategy",
    "UpdateSource",
    # Strategies
    "CoordinateMedian",
    "FedAvg",
    "ServerOptimizer",
    "TrimmedMean",
    # Server optimizer state
    "export_state",
    "restore_state",
    # Streaming building blocks
    "clip_factor",
    "merge_mean_delta",
    # Validation
    "DEFAULT_MAX_NORM_Z",
    "DEFAULT_MIN_COSINE",
    "MIN_UPDATES_FOR_DIRECTION_TEST",
    "MIN_UPDATES_FOR_OUTLIER_TEST",
    "Rejection",
    "RejectionReason",
    "direction_outliers",
    "norm_outliers",
    "validate_update",
]
