"""Delta arithmetic: the per-update scratch buffer and the running weighted sum.

Memory and precision of the sum: one scratch delta in the model's working dtype
(float32 for float16 and float32 models), a block sum in that dtype and a float64
total. Each delta is scaled by its weight and added to the block, and the block is
folded into the float64 total every ``FOLD_EVERY`` updates. The float32 rounding
error of the merge is thus that of a ``FOLD_EVERY``-term sum, whatever the number
of updates, at the cost of one float64 pass over the model per block. A float64
running sum would instead read and write the model in float64 on every update.
For 1,000,000 parameters, that add took 0.38 ms against 0.16 ms in float32, out
of about 0.6 ms per update (numpy 2 on a 2-core AMD EPYC virtual machine).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from coordinator.aggregation.validation import Rejection, RejectionReason, non_finite_rejection
from plantfed.modelio import Array

#: Updates summed in the working dtype before the block is folded into float64.
FOLD_EVERY = 32

Float64Array = npt.NDArray[np.float64]


def working_dtype(dtype: np.dtype[np.generic]) -> np.dtype[np.generic]:
    """Return the dtype deltas of a parameter are computed in: at least float32."""
    return np.result_type(dtype, np.float32)


class DeltaWorkspace:
    """One model-sized scratch buffer holding ``local - global`` for the current update."""

    def __init__(self, global_weights: Mapping[str, Array]) -> None:
        self._global = global_weights
        self.delta: dict[str, Array] = {
            name: np.empty(a.shape, dtype=working_dtype(a.dtype))
            for name, a in global_weights.items()
        }

    def compute(self, site_id: str, local: Mapping[str, Array]) -> float | Rejection:
        """Fill the buffer with the delta and return its L2 norm, or the rejection.

        A NaN or infinity anywhere makes the float32 sum of squares non-finite, so
        the norm doubles as the finite check. Only then, or when the sum of squares
        overflows float32, are the values inspected one by one.
        """
        sum_sq = 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            for name, d in self.delta.items():
                np.subtract(local[name], self._global[name], out=d)
                flat = d.reshape(-1)
                sum_sq += float(np.dot(flat, flat))
        if math.isfinite(sum_sq):
            return math.sqrt(sum_sq)
        return self._exact_norm(site_id, local)

    def _exact_norm(self, site_id: str, local: Mapping[str, Array]) -> float | Rejection:
        sum_sq = 0.0
        for name, d in self.delta.items():
            bad = int(np.count_nonzero(~np.isfinite(local[name])))
            if bad:
                return non_finite_rejection(site_id, name, bad)
            if not np.isfinite(d).all():
                message = f"site {site_id}: delta of parameter {name!r} overflows {d.dtype.name}"
                return Rejection(site_id, RejectionReason.NON_FINITE, message)
            wide = d.reshape(-1).astype(np.float64)
            sum_sq += float(np.dot(wide, wide))
        return math.sqrt(sum_sq)


class WeightedDeltaSum:
    """Running weighted sum of deltas, one update at a time (see the module docstring)."""

    def __init__(self, global_weights: Mapping[str, Array]) -> None:
        self._block = {
            name: np.zeros(a.shape, dtype=working_dtype(a.dtype))
            for name, a in global_weights.items()
        }
        self._total = {
            name: np.zeros(a.shape, dtype=np.float64) for name, a in global_weights.items()
        }
        self._in_block = 0
        self.total_weight = 0.0

    def add(self, delta: Mapping[str, Array], weight: float, scale: float = 1.0) -> None:
        """Add ``weight * scale * delta`` to the sum and ``weight`` to the total weight.

        ``scale`` shrinks a clipped delta without lowering its weight in the mean.
        ``delta`` is scaled in place, which saves a model-sized temporary.
        """
        factor = weight * scale
        for name, d in delta.items():
            if factor != 1.0:
                np.multiply(d, factor, out=d)
            np.add(self._block[name], d, out=self._block[name])
        self.total_weight += weight
        self._in_block += 1
        if self._in_block == FOLD_EVERY:
            self._fold()

    def mean(self) -> dict[str, Float64Array]:
        """Return the weighted mean delta in float64, computed in place.

        Call it once, after the last ``add``, with a positive total weight: it
        divides the running total in place and frees the block sum.
        """
        self._fold()
        self._block = {}
        for total in self._total.values():
            total /= self.total_weight
        return self._total

    def _fold(self) -> None:
        for name, block in self._block.items():
            np.add(self._total[name], block, out=self._total[name])
            block.fill(0)
        self._in_block = 0
