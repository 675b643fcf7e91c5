"""Streaming merge for the mean-based strategies: the sample-weighted mean delta.

Updates arrive as ``UpdateSource`` values whose ``load`` fetches the weights
only when called, so a round never needs every update in memory at once. Every
strategy runs the same guards in front of its merge (``GuardConfig``): per-update
validation, the round-level delta-norm outlier test and optional norm clipping.

The mean-based strategies merge with ``merge_mean_delta``, which loads one update
at a time. The outlier test and ``clip_norm="auto"`` need every norm of the round
before anything is summed, so they cost a first pass that loads each update and
computes its delta norm. The second pass loads each update again and sums it.
Memory stays flat in the number of updates, and each blob is loaded twice.

Peak memory is the global model, one loaded update, one scratch delta, a block
sum in the working dtype and a float64 total: about six model sizes for a float32
model, whatever the number of updates (see ``coordinator.aggregation.delta``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from coordinator.aggregation.delta import DeltaWorkspace, Float64Array, WeightedDeltaSum
from coordinator.aggregation.interface import UpdateSource
from coordinator.aggregation.screening import (
    GuardConfig,
    ScreenedRound,
    check_global_finite,
    clip_factor,
    drop_duplicates,
    inspect_update,
    screen_round,
)
from coordinator.aggregation.validation import Rejection
from plantfed.modelio import Array


@dataclass(frozen=True)
class MeanDelta:
    """Sample-weighted mean delta of a round, or None when nothing was included."""

    delta: dict[str, Float64Array] | None
    included: tuple[str, ...]
    rejected: tuple[Rejection, ...]
    delta_norms: dict[str, float]
    total_samples: int


def merge_mean_delta(
    global_weights: Mapping[str, Array], updates: Iterable[UpdateSource], guard: GuardConfig
) -> MeanDelta:
    """Compute the sample-weighted mean delta, loading one update at a time.

    Runs one pass when the guards need no round-wide norms, two passes otherwise
    (see the module docstring). Raises ModelFormatError when the global model has
    non-finite values.
    """
    check_global_finite(global_weights)
    sources = list(updates)
    if guard.needs_norms_first(len(sources)):
        screened = screen_round(global_weights, sources, guard)
    else:
        unique, duplicates = drop_duplicates(sources)
        clip_to = None if isinstance(guard.clip_norm, str) else guard.clip_norm
        screened = ScreenedRound(unique, duplicates, {}, clip_to)

    workspace = DeltaWorkspace(global_weights)
    total = WeightedDeltaSum(global_weights)
    included: list[str] = []
    rejected = list(screened.rejected)
    samples = 0
    reference_samples = 0
    for source in screened.accepted:
        outcome = inspect_update(source, global_weights, guard, workspace)
        if isinstance(outcome, Rejection):
            rejected.append(outcome)
            continue
        norm = outcome[1]
        del outcome
        screened.delta_norms[source.site_id] = norm
        # Weights relative to the first included update leave the mean unchanged,
        # and a round of equal sample counts then skips the multiply.
        reference_samples = reference_samples or source.samples
        weight = source.samples / reference_samples
        total.add(workspace.delta, weight, clip_factor(norm, screened.clip_to))
        included.append(source.site_id)
        samples += source.samples

    delta = total.mean() if included else None
    return MeanDelta(delta, tuple(included), tuple(rejected), screened.delta_norms, samples)
