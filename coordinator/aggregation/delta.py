"""Delta arithmetic: the one-pass streaming sum of weighted deltas, and a whole-delta workspace.

``DeltaSum`` adds one update at a time. For each parameter, one compiled loop
(``coordinator.aggregation.kernels``) sums the squares of ``local - global`` for
the update's norm, adds the weighted delta to a block sum and writes the sampled
coordinates of the delta into the update's sketch. The loaded update is read
once, right after it was loaded, and no delta is stored. With numpy alone the
same work took four passes over each parameter (subtract, dot, multiply, add),
and ``bench/README.md`` compares the two.

Precision: deltas are computed in the model's working dtype (float32 for
float16 and float32 models) and summed in a block of that dtype, which is folded
into a float64 total every ``FOLD_EVERY`` updates. The float32 rounding error on
each coordinate is thus that of a ``FOLD_EVERY``-term sum, at most about
``FOLD_EVERY * 2**-24 * sum_k |w_k * delta_k|``, whatever the number of updates.
Squares are summed in float64.

A NaN or infinity makes a sub-block's sum of squares non-finite, so the norm
doubles as the finite check. The loop stops before adding that sub-block, but
the sub-blocks before it stay in the sum: ``DeltaSum.tainted`` then records that, and
the caller merges the accepted updates again. ``DeltaWorkspace`` holds a whole
delta, for the screening pass of strategies that need every norm before merging.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from coordinator.aggregation import kernels
from coordinator.aggregation.direction import Float32Array, IndexArray, SketchPlan
from coordinator.aggregation.validation import Rejection, RejectionReason, non_finite_rejection
from plantfed.modelio import Array

Float64Array = npt.NDArray[np.float64]

#: Updates summed in the working dtype before the block is folded into float64.
FOLD_EVERY = 32


def working_dtype(dtype: np.dtype[np.generic]) -> np.dtype[np.generic]:
    """Return the dtype deltas of a parameter are computed in: at least float32."""
    return np.result_type(dtype, np.float32)


class DeltaSum:
    """Running sum of weighted deltas, one update at a time (see the module docstring).

    Peak memory is a block sum in the working dtype and, from the first fold, a
    float64 total: three model sizes for a float32 model. A float16 model also
    keeps a float32 copy of the global model.
    """

    def __init__(self, global_weights: Mapping[str, Array]) -> None:
        self._global = global_weights
        self._flat_global = {
            name: _flat(a, working_dtype(a.dtype)) for name, a in global_weights.items()
        }
        self._block = {
            name: np.zeros(a.size, dtype=working_dtype(a.dtype))
            for name, a in global_weights.items()
        }
        # Allocated by the first fold: a round of fewer than FOLD_EVERY updates needs none.
        self._total: dict[str, Float64Array] = {}
        self._in_block = 0
        # Per parameter: the sketch's indices and its slice of the sketch.
        self._sketch_slices: dict[str, tuple[IndexArray, slice]] = {}
        self.total_weight = 0.0
        self.tainted = False

    def add(
        self,
        site_id: str,
        local: Mapping[str, Array],
        weight: float,
        clip_to: float | None = None,
        sketch: tuple[SketchPlan, Float32Array] | None = None,
    ) -> float | Rejection:
        """Add ``weight * scale * (local - global)`` to the sum; return the delta's L2 norm.

        ``scale`` is 1, or ``clip_to / norm`` when ``clip_to`` is set and the norm
        exceeds it: the delta shrinks but keeps its weight in the mean. Clipping
        needs the norm first, so it costs a second walk over the update. When
        ``sketch`` is given, the plan's coordinates of the delta are written into
        its vector. A non-finite delta returns its rejection and adds nothing more.
        """
        if clip_to is None:
            outcome = self._walk(site_id, local, weight, sketch)
        else:
            outcome = self._walk(site_id, local, None, sketch)
            if not isinstance(outcome, Rejection):
                # The expression of screening.clip_factor, which subtract's caller repeats.
                scale = 1.0 if outcome <= clip_to else clip_to / outcome
                self._walk(site_id, local, weight * scale, None)
        if isinstance(outcome, Rejection):
            return outcome
        self.total_weight += weight
        self._in_block += 1
        if self._in_block == FOLD_EVERY:
            self._fold()
        return outcome

    def subtract(self, local: Mapping[str, Array], factor: float) -> float:
        """Take ``factor * (local - global)`` out of the sum, in float64; return the delta's norm.

        The delta and its norm are computed as ``add`` computed them, so only the
        rounding of the block sums it was part of remains (see ``streaming``). The
        norm is NaN when the delta is no longer finite.
        """
        self._fold()
        sum_sq = 0.0
        for name, flat_global in self._flat_global.items():
            flat_local = _flat(local[name], flat_global.dtype)
            stop, square_sum = kernels.delta_square_sum(flat_local, flat_global)
            if stop < flat_local.size:
                return math.nan
            sum_sq += square_sum
            delta = np.subtract(flat_local, flat_global)
            if factor != 1.0:
                np.multiply(delta, factor, out=delta)
            np.subtract(self._total[name], delta, out=self._total[name])
        return math.sqrt(sum_sq)

    def mean(self) -> dict[str, npt.NDArray[np.floating]]:
        """Return the weighted mean delta by parameter, computed in place.

        A round of fewer than ``FOLD_EVERY`` updates never folded its block sum, so
        its mean is in the working dtype. Otherwise the mean is in float64. Call it
        once, after the last ``add``, with a positive total weight: the sum's
        buffers become the result.
        """
        mean: dict[str, npt.NDArray[np.floating]] = {}
        for name, block in self._block.items():
            total = self._total.get(name)
            if total is None:
                block /= block.dtype.type(self.total_weight)
                total = block
            else:
                np.add(total, block, out=total)
                total /= self.total_weight
            mean[name] = total.reshape(self._global[name].shape)
        self._block = {}
        self._total = {}
        return mean

    def _walk(
        self,
        site_id: str,
        local: Mapping[str, Array],
        factor: float | None,
        sketch: tuple[SketchPlan, Float32Array] | None,
    ) -> float | Rejection:
        """Sum the delta's squares and add ``factor`` times it, unless ``factor`` is None."""
        sum_sq = 0.0
        added = False
        for name, flat_global in self._flat_global.items():
            flat_local = _flat(local[name], flat_global.dtype)
            target = None if sketch is None else self._sketch_target(sketch, name)
            if factor is None:
                stop, square_sum = kernels.delta_square_sum(flat_local, flat_global, sketch=target)
            else:
                block = self._block[name]
                stop, square_sum = kernels.add_weighted_delta(
                    flat_local, flat_global, block, factor, sketch=target
                )
            if stop < flat_local.size:
                # Earlier parameters, and this one's values before stop, are in the sum.
                self.tainted = self.tainted or added or (factor is not None and stop > 0)
                return _non_finite(site_id, name, local[name], flat_local, flat_global)
            added = factor is not None
            sum_sq += square_sum
        return math.sqrt(sum_sq)

    def _sketch_target(
        self, sketch: tuple[SketchPlan, Float32Array], name: str
    ) -> kernels.SketchTarget:
        """Return where the loop writes parameter ``name``'s sampled deltas; slices are cached."""
        plan, vector = sketch
        if name not in self._sketch_slices:
            self._sketch_slices[name] = plan.chunk_slices(name, 0, self._flat_global[name].size)
        indices, target = self._sketch_slices[name]
        return indices, vector[target]

    def _fold(self) -> None:
        """Add the block sums into the float64 totals and empty the blocks."""
        for name, block in self._block.items():
            total = self._total.get(name)
            if total is None:
                self._total[name] = block.astype(np.float64)
            else:
                np.add(total, block, out=total)
            block.fill(0)
        self._in_block = 0


class DeltaWorkspace:
    """One model-sized scratch buffer holding ``local - global`` for the current update."""

    def __init__(self, global_weights: Mapping[str, Array]) -> None:
        self._global = global_weights
        self.delta: dict[str, Array] = {
            name: np.empty(a.shape, dtype=working_dtype(a.dtype))
            for name, a in global_weights.items()
        }

    def compute(
        self,
        site_id: str,
        local: Mapping[str, Array],
        sketch: tuple[SketchPlan, Float32Array] | None = None,
    ) -> float | Rejection:
        """Fill the buffer with the delta and return its L2 norm, or the rejection.

        When ``sketch`` is given, the plan's coordinates of the delta are written
        into its vector.
        """
        sum_sq = 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            for name, d in self.delta.items():
                np.subtract(local[name], self._global[name], out=d)
                flat = d.reshape(-1)
                sum_sq += float(np.dot(flat, flat))
        if not math.isfinite(sum_sq):
            sum_sq = 0.0
            for name, d in self.delta.items():
                checked = _exact_square_sum(site_id, name, local[name], d.reshape(-1))
                if isinstance(checked, Rejection):
                    return checked
                sum_sq += checked
        if sketch is not None:
            plan, vector = sketch
            for name, d in self.delta.items():
                indices, target = plan.chunk_slices(name, 0, d.size)
                vector[target] = d.reshape(-1)[indices]
        return math.sqrt(sum_sq)


def _exact_square_sum(
    site_id: str, name: str, local: Array, delta: npt.NDArray[np.floating]
) -> float | Rejection:
    """Return the float64 sum of squares of ``delta``, or why it is not finite."""
    bad = int(np.count_nonzero(~np.isfinite(local)))
    if bad:
        return non_finite_rejection(site_id, name, bad)
    if not np.isfinite(delta).all():
        message = f"site {site_id}: delta of parameter {name!r} overflows {delta.dtype.name}"
        return Rejection(site_id, RejectionReason.NON_FINITE, message)
    wide = delta.astype(np.float64)
    return float(np.dot(wide, wide))


def _flat(array: Array, dtype: np.dtype[np.generic]) -> npt.NDArray[np.floating]:
    """Return ``array`` flat, contiguous and of ``dtype``, copying only when it must."""
    return np.ascontiguousarray(array.reshape(-1), dtype=dtype)


def _non_finite(
    site_id: str,
    name: str,
    local: Array,
    flat_local: npt.NDArray[np.floating],
    flat_global: npt.NDArray[np.floating],
) -> Rejection:
    """Build the rejection of a parameter whose delta has a non-finite sum of squares."""
    bad = int(np.count_nonzero(~np.isfinite(local)))
    if bad:
        return non_finite_rejection(site_id, name, bad)
    with np.errstate(over="ignore"):
        delta = np.subtract(flat_local, flat_global)
    dtype = flat_global.dtype.name
    if np.isfinite(delta).all():
        message = f"site {site_id}: squared delta of parameter {name!r} overflows float64"
    else:
        message = f"site {site_id}: delta of parameter {name!r} overflows {dtype}"
    return Rejection(site_id, RejectionReason.NON_FINITE, message)
