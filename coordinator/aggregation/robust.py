"""Order-statistic merges: coordinate-wise median and trimmed mean.

Both come from Yin et al., "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates", 2018. They bound the pull of a minority of bad
updates on every coordinate, at the price of ignoring sample counts: each
included site counts once. They need every update at the same time, so they
keep all accepted updates in memory (one model per site) plus, per parameter, a
float64 stack of that parameter's deltas.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from coordinator.aggregation.delta import Float64Array
from coordinator.aggregation.interface import AggregateResult, UpdateSource
from coordinator.aggregation.mean import apply_delta
from coordinator.aggregation.names import StrategyName
from coordinator.aggregation.screening import (
    GuardConfig,
    check_global_finite,
    clip_factor,
    screen_round,
)
from plantfed.modelio import Array


@dataclass(frozen=True)
class CoordinateMedian:
    """Coordinate-wise median of the deltas. Not streaming: every update stays in memory."""

    guard: GuardConfig = field(default_factory=GuardConfig)
    name: StrategyName = field(default=StrategyName.MEDIAN, init=False)
    streaming: bool = field(default=False, init=False)

    def aggregate(
        self,
        global_weights: Mapping[str, Array],
        updates: Iterable[UpdateSource],
        state: Mapping[str, Array] | None = None,
    ) -> AggregateResult:
        """Merge the updates; the median of an even count is the mean of the middle two.

        ``state`` is ignored: the median keeps no state between rounds.
        """
        return _merge_order_statistic(global_weights, updates, self.guard, trim_count=None)


@dataclass(frozen=True)
class TrimmedMean:
    """Coordinate-wise trimmed mean. Not streaming: every update stays in memory.

    On each coordinate, ``floor(trim_fraction * n)`` of the n values are dropped
    at each end and the rest are averaged. ``trim_fraction`` is in [0, 0.5).
    """

    trim_fraction: float = 0.1
    guard: GuardConfig = field(default_factory=GuardConfig)
    name: StrategyName = field(default=StrategyName.TRIMMED_MEAN, init=False)
    streaming: bool = field(default=False, init=False)

    def aggregate(
        self,
        global_weights: Mapping[str, Array],
        updates: Iterable[UpdateSource],
        state: Mapping[str, Array] | None = None,
    ) -> AggregateResult:
        """Merge the updates; ``state`` is ignored because no state is kept between rounds."""
        return _merge_order_statistic(
            global_weights, updates, self.guard, trim_fraction=self.trim_fraction
        )


def _merge_order_statistic(
    global_weights: Mapping[str, Array],
    updates: Iterable[UpdateSource],
    guard: GuardConfig,
    *,
    trim_count: int | None = None,
    trim_fraction: float | None = None,
) -> AggregateResult:
    check_global_finite(global_weights)
    screened = screen_round(global_weights, list(updates), guard, keep_loaded=True)
    included = tuple(s.site_id for s in screened.accepted)
    weights = dict(global_weights)
    if included:
        if trim_fraction is not None:
            trim_count = math.floor(trim_fraction * len(included))
        scales = [clip_factor(screened.delta_norms[s], screened.clip_to) for s in included]
        delta: dict[str, Array] = {}
        for name, g in global_weights.items():
            stack = np.stack(
                [np.subtract(screened.loaded[s][name], g, dtype=np.float64) for s in included]
            )
            stack *= np.reshape(scales, (-1,) + (1,) * g.ndim)
            delta[name] = _reduce(stack, trim_count)
        weights = apply_delta(global_weights, delta)
    return AggregateResult(
        weights=weights,
        included=included,
        rejected=tuple(screened.rejected),
        delta_norms=screened.delta_norms,
        total_samples=sum(s.samples for s in screened.accepted),
        delta_cosines=screened.cosines,
    )


def _reduce(stack: Float64Array, trim_count: int | None) -> Float64Array:
    """Reduce axis 0 by the median (``trim_count`` None) or the trimmed mean."""
    if trim_count is None:
        median: Float64Array = np.median(stack, axis=0)
        return median
    stack.sort(axis=0)
    middle = stack[trim_count : stack.shape[0] - trim_count]
    mean: Float64Array = np.mean(middle, axis=0)
    return mean
