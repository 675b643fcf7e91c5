"""Streaming merge for the mean-based strategies: the sample-weighted mean delta.

Updates arrive as ``UpdateSource`` values whose ``load`` fetches the weights
only when called, so a round never needs every update in memory at once. Every
strategy runs the same guards in front of its merge (``GuardConfig``).

``merge_mean_delta`` loads each update once. It checks the update, adds its
weighted delta to the sum and records the delta's norm and sketch in the same
walk over the update (``DeltaSum``). The round-level tests (norm outliers, then
the direction screen) run after the pass. An update they reject leaves the sum
in one of two ways:

- subtraction: the update is loaded again and its weighted delta, computed as it
  was added, is subtracted from the float64 total. This costs one load per
  rejected update. What remains is the rounding of the block sums it took part
  in, whose L2 norm is at most about ``FOLD_EVERY * 2**-24`` times the removed
  updates' weighted delta norms. The merge's own rounding has the same bound over
  the kept updates. Subtraction is therefore used only while the removed updates'
  weighted norms add up to no more than the kept updates';
- a second pass over the kept updates otherwise, and whenever an update was
  rejected for a NaN partway through its walk (``DeltaSum.tainted``).

Rounds without rejections after the pass, the common case, thus load each update
once. ``clip_norm="auto"`` needs the round's median norm before anything is
summed, so it keeps a screening pass before the merging pass.

Peak memory is the global model, one loaded update, a block sum in the working
dtype, a float64 total and the sketches (at most a quarter of a float32 model,
see ``coordinator.aggregation.direction``): about five model sizes for a float32
model, whatever the number of updates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from coordinator.aggregation.delta import DeltaSum
from coordinator.aggregation.direction import SketchBook
from coordinator.aggregation.interface import UpdateSource
from coordinator.aggregation.screening import (
    GuardConfig,
    check_global_finite,
    clip_factor,
    drop_duplicates,
    load_checked,
    new_sketch_book,
    round_outliers,
    screen_round,
    sketch_target,
)
from coordinator.aggregation.validation import Rejection
from plantfed.errors import PlantfedError
from plantfed.modelio import Array

logger = logging.getLogger(__name__)

#: Relative difference between a reloaded update's norm and its first norm that counts as a
#: different update. Both come from the same compiled loop, so equal data gives equal norms.
RELOAD_NORM_TOLERANCE = 1e-9


@dataclass(frozen=True)
class MeanDelta:
    """Sample-weighted mean delta of a round, or None when nothing was included."""

    delta: dict[str, npt.NDArray[np.floating]] | None
    included: tuple[str, ...]
    rejected: tuple[Rejection, ...]
    delta_norms: dict[str, float]
    total_samples: int
    cosines: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Summand:
    """An update added to the sum: its source, weight in the mean and factor on its delta."""

    source: UpdateSource
    weight: float
    factor: float


@dataclass
class SummedPass:
    """State after one pass: the sum, what it contains, rejections, norms and sketches."""

    total: DeltaSum
    included: list[Summand]
    rejected: list[Rejection]
    norms: dict[str, float]
    sketches: SketchBook | None


def merge_mean_delta(
    global_weights: Mapping[str, Array], updates: Iterable[UpdateSource], guard: GuardConfig
) -> MeanDelta:
    """Compute the sample-weighted mean delta, loading one update at a time.

    Loads each update once, and again only to take it out after a round-level test
    rejected it (see the module docstring). Raises ModelFormatError when the global
    model has non-finite values.
    """
    check_global_finite(global_weights)
    unique, duplicates = drop_duplicates(list(updates))
    if guard.needs_norms_first():
        screened = screen_round(global_weights, unique, guard)
        summed = sum_updates(global_weights, screened.accepted, guard, screened.clip_to, None)
        rejected = [*duplicates, *screened.rejected, *summed.rejected]
        if summed.total.tainted:
            summed = remove_after_pass(global_weights, summed, set(), guard, screened.clip_to)
            rejected.extend(summed.rejected)
        return _result(summed, rejected, screened.delta_norms, screened.cosines)

    clip_to = None if isinstance(guard.clip_norm, str) else guard.clip_norm
    sketches = new_sketch_book(global_weights, len(unique), guard)
    summed = sum_updates(global_weights, unique, guard, clip_to, sketches)
    tests = round_outliers(summed.norms, sketches, guard)
    summed.sketches = None
    norms = summed.norms
    rejected = [*duplicates, *summed.rejected, *tests.rejected]
    if tests.rejected or summed.total.tainted:
        removed = {r.site_id for r in tests.rejected}
        summed = remove_after_pass(global_weights, summed, removed, guard, clip_to)
        rejected.extend(summed.rejected)
    return _result(summed, rejected, norms, tests.cosines)


def sum_updates(
    global_weights: Mapping[str, Array],
    sources: Sequence[UpdateSource],
    guard: GuardConfig,
    clip_to: float | None,
    sketches: SketchBook | None,
) -> SummedPass:
    """Check, load and add each update to a new ``DeltaSum``; one load per update.

    Weights are relative to the first loaded update's sample count, which leaves the
    mean unchanged and keeps them near 1.
    """
    summed = SummedPass(DeltaSum(global_weights), [], [], {}, sketches)
    reference_samples = 0
    for source in sources:
        local = load_checked(source, global_weights, guard)
        if isinstance(local, Rejection):
            summed.rejected.append(local)
            continue
        reference_samples = reference_samples or source.samples
        weight = source.samples / reference_samples
        target = sketch_target(sketches)
        norm = summed.total.add(source.site_id, local, weight, clip_to, target)
        del local
        if isinstance(norm, Rejection):
            summed.rejected.append(norm)
            continue
        summed.norms[source.site_id] = norm
        summed.included.append(Summand(source, weight, weight * clip_factor(norm, clip_to)))
        if sketches is not None:
            sketches.commit(source.site_id)
    return summed


def remove_after_pass(
    global_weights: Mapping[str, Array],
    summed: SummedPass,
    removed: set[str],
    guard: GuardConfig,
    clip_to: float | None,
) -> SummedPass:
    """Take the ``removed`` sites out of the sum, by subtraction or by a second pass.

    A tainted sum always takes the second pass. Returns the pass that holds only the
    kept updates. Its ``rejected`` lists what the second pass rejected, if one ran.
    """
    kept = [s for s in summed.included if s.source.site_id not in removed]
    dropped = [s for s in summed.included if s.source.site_id in removed]
    summed.included = kept
    summed.rejected = []
    if not kept:
        return summed
    subtract = not summed.total.tainted
    subtract = subtract and _weighted_norm(summed, dropped) <= _weighted_norm(summed, kept)
    if subtract and _subtract_all(summed, dropped):
        return summed
    logger.info("merging %d kept updates again without %s", len(kept), sorted(removed))
    again = sum_updates(global_weights, [s.source for s in kept], guard, clip_to, None)
    again.norms = summed.norms
    return again


def _subtract_all(summed: SummedPass, dropped: Sequence[Summand]) -> bool:
    """Subtract each dropped update; False when one no longer loads as it did."""
    for summand in dropped:
        site_id = summand.source.site_id
        try:
            local = summand.source.load()
        except PlantfedError as exc:
            logger.warning("site %s: update could not be loaded again: %s", site_id, exc)
            return False
        norm = summed.total.subtract(local, summand.factor)
        del local
        first = summed.norms[site_id]
        if not math.isclose(norm, first, rel_tol=RELOAD_NORM_TOLERANCE):
            logger.warning(
                "site %s: update loaded again has delta norm %.6g, first load had %.6g",
                site_id, norm, first,
            )  # fmt: skip
            return False
        summed.total.total_weight -= summand.weight
    return True


def _weighted_norm(summed: SummedPass, summands: Sequence[Summand]) -> float:
    return sum(s.factor * summed.norms[s.source.site_id] for s in summands)


def _result(
    summed: SummedPass,
    rejected: list[Rejection],
    norms: dict[str, float],
    cosines: dict[str, float],
) -> MeanDelta:
    included = tuple(s.source.site_id for s in summed.included)
    samples = sum(s.source.samples for s in summed.included)
    delta = summed.total.mean() if included else None
    return MeanDelta(delta, included, tuple(rejected), norms, samples, cosines)
