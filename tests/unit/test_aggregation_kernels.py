"""Unit tests of the compiled merge loops against the same arithmetic in numpy."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import numpy.typing as npt
import pytest

from coordinator.aggregation.kernels import add_weighted_delta, delta_square_sum

SIZES = [0, 1, 7, 1023, 1024, 1025, 5000]


def pair(size: int, dtype: type[np.floating], seed: int) -> tuple[npt.NDArray, npt.NDArray]:
    rng = np.random.default_rng(seed)
    global_ = rng.standard_normal(size).astype(dtype)
    local = (global_ + 0.01 * rng.standard_normal(size)).astype(dtype)
    return local, global_


def exact_square_sum(local: npt.NDArray, global_: npt.NDArray) -> float:
    delta = (local - global_).astype(np.float64)
    return float(np.dot(delta, delta))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", SIZES)
def test_add_matches_numpy(size: int, dtype: type[np.floating]) -> None:
    local, global_ = pair(size, dtype, seed=size)
    start = np.linspace(-1.0, 1.0, size).astype(dtype)
    block = start.copy()

    stop, total = add_weighted_delta(local, global_, block, 1.5)

    expected = start + dtype(1.5) * (local - global_)
    assert stop == size
    np.testing.assert_allclose(block, expected, rtol=1e-6, atol=1e-7)
    assert total == pytest.approx(exact_square_sum(local, global_), rel=1e-12, abs=0.0)


@pytest.mark.parametrize("size", SIZES)
def test_square_sum_matches_float64(size: int) -> None:
    local, global_ = pair(size, np.float32, seed=size + 1)

    stop, total = delta_square_sum(local, global_)

    assert stop == size
    assert total == pytest.approx(exact_square_sum(local, global_), rel=1e-12, abs=0.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_add_stops_before_non_finite_sub_block(bad: float) -> None:
    local, global_ = pair(10, np.float32, seed=3)
    local[7] = bad
    block = np.zeros(10, dtype=np.float32)

    stop, total = add_weighted_delta(local, global_, block, 1.0, sub_block=3)

    assert stop == 6
    np.testing.assert_allclose(block[:6], (local - global_)[:6], rtol=1e-6)
    assert not block[6:].any()
    assert total == pytest.approx(exact_square_sum(local[:6], global_[:6]), rel=1e-12)


def test_add_with_leading_nan_changes_nothing() -> None:
    local, global_ = pair(10, np.float32, seed=4)
    local[0] = math.nan
    block = np.ones(10, dtype=np.float32)

    stop, _ = add_weighted_delta(local, global_, block, 2.0)

    assert stop == 0
    assert (block == 1.0).all()


def test_square_sum_stops_at_overflowing_delta() -> None:
    big = np.finfo(np.float32).max
    local = np.array([1.0, big, 1.0], dtype=np.float32)
    global_ = np.array([0.0, -big, 0.0], dtype=np.float32)

    stop, total = delta_square_sum(local, global_, sub_block=1)

    assert stop == 1
    assert total == 1.0


def test_large_float32_delta_squares_in_float64() -> None:
    local = np.array([1e20, 3e30], dtype=np.float32)
    global_ = np.zeros(2, dtype=np.float32)

    stop, total = delta_square_sum(local, global_)

    assert stop == 2
    assert total == pytest.approx(float(local[0]) ** 2 + float(local[1]) ** 2, rel=1e-12)


def test_read_only_inputs_accepted() -> None:
    local, global_ = pair(100, np.float32, seed=5)
    local.setflags(write=False)
    global_.setflags(write=False)
    block = np.zeros(100, dtype=np.float32)

    stop, _ = add_weighted_delta(local, global_, block, 1.0)

    assert stop == 100
    np.testing.assert_allclose(block, local - global_, rtol=1e-6)


@pytest.mark.parametrize(
    ("local", "global_"),
    [
        (np.zeros(3, np.float32), np.zeros(4, np.float32)),
        (np.zeros(3, np.float32), np.zeros(3, np.float64)),
        (np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32)),
    ],
)
def test_mismatched_arrays_rejected(local: npt.NDArray, global_: npt.NDArray) -> None:
    with pytest.raises(ValueError, match="flat arrays of one size and dtype"):
        delta_square_sum(local, global_)


def test_add_writes_sketch_across_sub_blocks() -> None:
    local, global_ = pair(20, np.float32, seed=6)
    indices = np.array([0, 2, 3, 9, 19], dtype=np.intp)
    values = np.zeros(5, dtype=np.float32)

    stop, _ = add_weighted_delta(
        local, global_, np.zeros(20, np.float32), 1.0, sub_block=4, sketch=(indices, values)
    )

    assert stop == 20
    np.testing.assert_array_equal(values, (local - global_)[indices])


def test_sketch_stops_with_the_walk() -> None:
    local, global_ = pair(20, np.float32, seed=7)
    local[9] = math.nan
    indices = np.array([1, 5, 9, 15], dtype=np.intp)
    values = np.full(4, -1.0, dtype=np.float32)

    stop, _ = delta_square_sum(local, global_, sub_block=4, sketch=(indices, values))

    assert stop == 8
    np.testing.assert_array_equal(values[:2], (local - global_)[[1, 5]])
    assert (values[2:] == -1.0).all()


def test_sketch_of_float64_delta_stored_as_float32() -> None:
    local, global_ = pair(10, np.float64, seed=8)
    indices = np.array([4], dtype=np.intp)
    values = np.zeros(1, dtype=np.float32)

    delta_square_sum(local, global_, sketch=(indices, values))

    assert values[0] == np.float32(local[4] - global_[4])


@pytest.mark.parametrize(
    ("indices", "values", "message"),
    [
        (np.array([0, 1]), np.zeros(1, np.float32), "must be flat and match"),
        (np.array([-1, 2]), np.zeros(2, np.float32), "sorted and >= 0"),
    ],
)
def test_bad_sketch_rejected(indices: npt.NDArray, values: npt.NDArray, message: str) -> None:
    local, global_ = pair(5, np.float32, seed=9)

    with pytest.raises(ValueError, match=message):
        delta_square_sum(local, global_, sketch=(indices.astype(np.intp), values))


LOOP_SCRIPT = (
    "import numpy as np\n"
    "from coordinator.aggregation.kernels import add_weighted_delta\n"
    "block = np.zeros(3, np.float32)\n"
    "print(add_weighted_delta(np.ones(3, np.float32), np.zeros(3, np.float32), block, 2.0))\n"
)


def run_with_numba_env(**numba_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(numba_env)
    return subprocess.run(
        [sys.executable, "-c", LOOP_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )


def test_loops_work_without_cache_directory() -> None:
    # Only the NUMBA_CACHE_DIR locator, with no NUMBA_CACHE_DIR: numba finds nowhere to cache.
    completed = run_with_numba_env(NUMBA_CACHE_LOCATOR_CLASSES="UserProvidedCacheLocator")

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "(3, 3.0)"
    assert completed.stderr.count("are not cached") == 1
    assert "set NUMBA_CACHE_DIR to a writable directory" in completed.stderr


def test_unwritable_cache_dir_named_in_warning() -> None:
    completed = run_with_numba_env(
        NUMBA_CACHE_LOCATOR_CLASSES="UserProvidedCacheLocator",
        NUMBA_CACHE_DIR="/proc/plantfed-cache",
    )

    assert completed.returncode == 0, completed.stderr
    assert "NUMBA_CACHE_DIR=/proc/plantfed-cache is not writable" in completed.stderr


def test_other_numba_errors_raised() -> None:
    completed = run_with_numba_env(NUMBA_CACHE_LOCATOR_CLASSES="NoSuchLocator")

    assert completed.returncode != 0
    assert "Unknown cache locator class" in completed.stderr
