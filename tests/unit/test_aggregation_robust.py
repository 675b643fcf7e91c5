"""Unit tests of the coordinate-wise median and trimmed mean."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from coordinator.aggregation import (
    CoordinateMedian,
    GuardConfig,
    RejectionReason,
    TrimmedMean,
    UpdateSource,
)
from plantfed.modelio import Weights

NO_ROUND_TESTS = GuardConfig(max_norm_z=None, min_cosine=None)


def f32(*values: float) -> npt.NDArray[np.float32]:
    return np.array(values, dtype=np.float32)


def loader(row: tuple[float, ...]) -> Callable[[], Weights]:
    return lambda: {"w": f32(*row)}


def updates(*rows: tuple[float, ...], samples: int = 1) -> list[UpdateSource]:
    return [UpdateSource(f"s{i}", samples + i, loader(row)) for i, row in enumerate(rows)]


ZERO3 = {"w": f32(0.0, 0.0, 0.0)}


def test_median_of_odd_count() -> None:
    rows = updates((1.0, 5.0, -1.0), (2.0, 0.0, 4.0), (10.0, 1.0, 3.0))

    result = CoordinateMedian(guard=NO_ROUND_TESTS).aggregate(ZERO3, rows)

    np.testing.assert_array_equal(result.weights["w"], f32(2.0, 1.0, 3.0))
    assert result.included == ("s0", "s1", "s2")
    assert result.total_samples == 1 + 2 + 3


def test_median_of_even_count_averages_middle_pair() -> None:
    rows = updates((1.0, 5.0, -1.0), (2.0, 0.0, 4.0), (10.0, 1.0, 3.0), (0.0, 0.0, 0.0))

    result = CoordinateMedian(guard=NO_ROUND_TESTS).aggregate(ZERO3, rows)

    np.testing.assert_array_equal(result.weights["w"], f32(1.5, 0.5, 1.5))


def test_median_is_relative_to_global_model() -> None:
    global_weights = {"w": f32(1.0, 1.0, 1.0)}
    rows = updates((2.0, 6.0, 0.0), (3.0, 1.0, 5.0), (11.0, 2.0, 4.0))

    result = CoordinateMedian(guard=NO_ROUND_TESTS).aggregate(global_weights, rows)

    np.testing.assert_array_equal(result.weights["w"], f32(3.0, 2.0, 4.0))


def test_trimmed_mean_drops_both_tails() -> None:
    rows = updates(
        (1.0, -50.0, 0.0), (2.0, 0.0, 0.0), (3.0, 1.0, 0.0), (4.0, 2.0, 0.0), (100.0, 3.0, 0.0)
    )

    result = TrimmedMean(trim_fraction=0.2, guard=NO_ROUND_TESTS).aggregate(ZERO3, rows)

    # One value trimmed at each end of every coordinate: mean(2, 3, 4), mean(0, 1, 2).
    np.testing.assert_array_equal(result.weights["w"], f32(3.0, 1.0, 0.0))


def test_trimmed_mean_with_nothing_to_trim_is_plain_mean() -> None:
    rows = updates(
        (1.0, -50.0, 0.0), (2.0, 0.0, 0.0), (3.0, 1.0, 0.0), (4.0, 2.0, 0.0), (100.0, 3.0, 0.0)
    )

    # floor(0.1 * 5) = 0 values trimmed; samples are ignored.
    result = TrimmedMean(trim_fraction=0.1, guard=NO_ROUND_TESTS).aggregate(ZERO3, rows)

    np.testing.assert_allclose(result.weights["w"], f32(22.0, -8.8, 0.0), rtol=1e-6)


def test_median_after_clipping() -> None:
    rows = updates((3.0, 4.0, 0.0), (0.0, 1.0, 0.0), (2.0, 0.0, 0.0))
    guard = GuardConfig(max_norm_z=None, clip_norm=2.0)

    result = CoordinateMedian(guard=guard).aggregate(ZERO3, rows)

    # s0 is clipped from norm 5 to 2: (1.2, 1.6, 0).
    np.testing.assert_allclose(result.weights["w"], f32(1.2, 1.0, 0.0), rtol=1e-6)
    assert result.delta_norms == pytest.approx({"s0": 5.0, "s1": 1.0, "s2": 2.0})


def test_order_statistics_apply_validation() -> None:
    rows = updates((1.0, 0.0, 0.0), (0.0, 1.1, 0.0), (0.9, 0.0, 0.0), (1000.0, 0.0, 0.0))
    rows.append(UpdateSource("nan", 1, lambda: {"w": f32(np.nan, 0.0, 0.0)}))

    result = TrimmedMean(trim_fraction=0.0).aggregate(ZERO3, rows)

    assert result.included == ("s0", "s1", "s2")
    reasons = {r.site_id: r.reason for r in result.rejected}
    assert reasons == {"nan": RejectionReason.NON_FINITE, "s3": RejectionReason.NORM_OUTLIER}
    np.testing.assert_allclose(result.weights["w"], f32(1.9 / 3, 1.1 / 3, 0.0), rtol=1e-6)


def test_order_statistics_without_updates_return_global() -> None:
    result = CoordinateMedian().aggregate(ZERO3, [])

    np.testing.assert_array_equal(result.weights["w"], ZERO3["w"])
    assert result.included == ()
