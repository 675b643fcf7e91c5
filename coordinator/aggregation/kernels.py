"""Compiled loops of the streaming merge: a delta's sum of squares, weighted add and sketch.

With numpy, adding ``weight * (local - global)`` to a running sum and measuring
the delta's norm takes four passes (subtract, dot, multiply, add), and each pass
walks a parameter through memory again. These loops, compiled by numba, make one
walk. The walk goes through the parameter in sub-blocks of ``sub_block`` values.
It sums the squares of a sub-block's delta first and adds the sub-block only when
that sum is finite, so the sub-block that holds a NaN or an infinity, and every
sub-block after it, stays out of the sum. The second read of a sub-block is served
from the L1 cache, and so are the sampled deltas the walk copies into a sketch for
the direction screen.

Each square is taken in float64, and so is each sub-block's sum of squares. The
square of a finite float32 delta is at most about 1.2e77, far below the float64
maximum of 1.8e308, so for a float32 model a non-finite sum means a non-finite
delta. The weighted add runs in the block sum's dtype, as numpy's ``multiply`` and
``add`` would. LLVM may reorder the sums of squares (``reassoc``) so that it can
vectorise them, and it may fuse a multiply and an add (``contract``). Neither
changes a result by more than the rounding of the sum. NaN and infinity keep their
IEEE meaning, because the ``nnan`` and ``ninf`` flags are left off.

Compiled code is cached in ``NUMBA_CACHE_DIR`` when it is set, else next to this
module, else in the user's cache directory: the first of these that numba can
write to (numba's ``cache=True``). Where none is writable, as under systemd's
``ProtectSystem=strict`` without a cache directory, the loops are compiled in every
process and a warning tells how to cache them. Compiling the float32 loops took
0.5 s on a 2-core AMD EPYC virtual machine, and loading them from the cache 0.1 s.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

#: LLVM fast-math flags of the loops: reordering and fused multiply-add, nothing about NaN.
FASTMATH_FLAGS = {"reassoc", "contract"}

#: Values per sub-block. Their update, global and block values take 12 KiB in float32 and
#: 24 KiB in float64, within a 32 KiB L1 data cache.
SUB_BLOCK_ELEMENTS = 1024

FloatArray = npt.NDArray[np.floating[Any]]

#: Target of a walk's sampled deltas: sorted flat indices and the float32 values they fill.
SketchTarget = tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]

_NO_INDICES: npt.NDArray[np.intp] = np.empty(0, dtype=np.intp)
_NO_VALUES: npt.NDArray[np.float32] = np.empty(0, dtype=np.float32)

logger = logging.getLogger(__name__)


def _compile(function: Callable[..., Any]) -> Any:
    """Compile ``function`` with the loops' options, cached on disk where numba can be."""
    try:
        return numba.njit(fastmath=FASTMATH_FLAGS, nogil=True, cache=True)(function)
    except RuntimeError as exc:
        # numba 0.68 raises "cannot cache function ...: no locator available ..." at
        # decoration when no cache directory is writable.
        if "no locator available" not in str(exc):
            raise
        _warn_uncached()
        return numba.njit(fastmath=FASTMATH_FLAGS, nogil=True)(function)


@functools.cache
def _warn_uncached() -> None:
    """Log once per process that the loops are compiled without a cache."""
    cache_dir = os.environ.get("NUMBA_CACHE_DIR")
    advice = (
        f"NUMBA_CACHE_DIR={cache_dir} is not writable: make it writable"
        if cache_dir
        else "set NUMBA_CACHE_DIR to a writable directory"
    )
    logger.warning(
        "compiled merge loops in %s are not cached, because numba found no writable cache "
        "directory: each process compiles them again. To cache them, %s.",
        __file__,
        advice,
    )


@_compile
def _square_sum(local: Any, global_: Any) -> float:
    total = 0.0
    for i in range(local.size):
        delta = np.float64(local[i] - global_[i])
        total += delta * delta
    return total


@_compile
def _add_scaled(local: Any, global_: Any, block: Any, weight: Any) -> None:
    for i in range(local.size):
        block[i] += weight * (local[i] - global_[i])


@_compile
def _copy_sketch(
    local: Any, global_: Any, stop: int, indices: Any, sketch: Any, next_index: int
) -> int:
    """Write the deltas at ``indices[next_index:]`` below ``stop``; return the next index."""
    while next_index < indices.size and indices[next_index] < stop:
        i = indices[next_index]
        sketch[next_index] = local[i] - global_[i]
        next_index += 1
    return next_index


@_compile
def _walk(
    local: Any,
    global_: Any,
    block: Any,
    weight: Any,
    add: bool,
    sub_block: int,
    indices: Any,
    sketch: Any,
) -> tuple[int, float]:
    """Walk the delta sub-block by sub-block; add it to ``block`` only when ``add`` is set."""
    total = 0.0
    size = local.size
    next_index = 0
    for start in range(0, size, sub_block):
        stop = min(start + sub_block, size)
        local_part, global_part = local[start:stop], global_[start:stop]
        part = _square_sum(local_part, global_part)
        if not np.isfinite(part):
            return start, total
        if add:
            _add_scaled(local_part, global_part, block[start:stop], weight)
        next_index = _copy_sketch(local, global_, stop, indices, sketch, next_index)
        total += part
    return size, total


def delta_square_sum(
    local: FloatArray,
    global_: FloatArray,
    sub_block: int | None = None,
    sketch: SketchTarget | None = None,
) -> tuple[int, float]:
    """Sum the squares of ``local - global_`` over flat arrays of one dtype.

    Returns ``(stop, total)``. ``stop`` equals ``local.size`` when every square
    is finite. Otherwise it is the start of the first sub-block with a non-finite
    square, and ``total`` covers only the values before it. ``sub_block`` defaults
    to ``SUB_BLOCK_ELEMENTS``. With ``sketch`` as ``(indices, values)``, the delta
    at each of the sorted ``indices`` below ``stop`` is written to ``values``.
    """
    _check_flat(local, global_)
    indices, values = _sketch_arrays(sketch)
    block_size = sub_block or SUB_BLOCK_ELEMENTS
    # The walk does not touch the block when it does not add, so an empty one serves.
    unused_block = local[:0]
    zero = local.dtype.type(0.0)
    stop, total = _walk(local, global_, unused_block, zero, False, block_size, indices, values)
    return int(stop), float(total)


def add_weighted_delta(
    local: FloatArray,
    global_: FloatArray,
    block: FloatArray,
    weight: float,
    sub_block: int | None = None,
    sketch: SketchTarget | None = None,
) -> tuple[int, float]:
    """Add ``weight * (local - global_)`` to ``block`` in place and sum the delta's squares.

    All three are flat arrays of one dtype. Returns ``(stop, total)`` and writes
    ``sketch`` as ``delta_square_sum`` does. The values from ``stop`` on are not
    added, so when ``stop`` is 0 ``block`` is unchanged.
    """
    _check_flat(local, global_, block)
    indices, values = _sketch_arrays(sketch)
    scalar = block.dtype.type(weight)
    block_size = sub_block or SUB_BLOCK_ELEMENTS
    stop, total = _walk(local, global_, block, scalar, True, block_size, indices, values)
    return int(stop), float(total)


def _sketch_arrays(sketch: SketchTarget | None) -> SketchTarget:
    """Return the sketch's arrays, or empty ones, so that the loops keep one signature."""
    if sketch is None:
        return _NO_INDICES, _NO_VALUES
    indices, values = sketch
    if indices.ndim != 1 or values.ndim != 1 or indices.size != values.size:
        raise ValueError(
            f"sketch indices {indices.shape} and values {values.shape} must be flat and match"
        )
    if indices.size and indices[0] < 0:
        raise ValueError(f"sketch indices must be sorted and >= 0, got {indices[0]} first")
    return indices, values


def _check_flat(*arrays: FloatArray) -> None:
    """Raise ValueError unless the arrays are one-dimensional, of one size and one dtype.

    The compiled loops index without bounds checks, so a size mismatch would read
    past an array's end.
    """
    first = arrays[0]
    for array in arrays:
        if array.ndim != 1 or array.size != first.size or array.dtype != first.dtype:
            shapes = ", ".join(f"{a.shape} {a.dtype}" for a in arrays)
            raise ValueError(f"expected flat arrays of one size and dtype, got {shapes}")
