"""Unit tests of the direction screen, its sketches and its place in the streaming merge."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from coordinator.aggregation import (
    CoordinateMedian,
    FedAvg,
    GuardConfig,
    RejectionReason,
    StrategyConfig,
    UpdateSource,
    direction_outliers,
)
from coordinator.aggregation.direction import (
    EXACT_SKETCH_VALUES,
    JACKKNIFE_GROUPS,
    SKETCH_MAX_COORDINATES,
    SKETCH_MIN_COORDINATES,
    SketchPlan,
    column_median,
    plan_sketch,
)
from plantfed.errors import ConfigError


def f32(*values: float) -> npt.NDArray[np.float32]:
    return np.array(values, dtype=np.float32)


def vector_update(site_id: str, samples: int, *values: float) -> UpdateSource:
    weights = {"w": f32(*values)}
    return UpdateSource(site_id, samples, lambda: {k: v.copy() for k, v in weights.items()})


def exact_plan(size: int) -> SketchPlan:
    indices = np.arange(size, dtype=np.intp)
    return SketchPlan(size, True, {"w": indices}, {"w": 0}, indices % JACKKNIFE_GROUPS)


def sampled_plan(size: int) -> SketchPlan:
    plan = exact_plan(size)
    return SketchPlan(size, False, plan.indices, plan.offsets, plan.groups)


ZERO2 = {"w": f32(0.0, 0.0)}
DIRECTION_ONLY = GuardConfig(max_norm_z=None)


def test_flipped_delta_rejected_with_its_cosine() -> None:
    # Median of (1, .5, -.75) and (.5, 1, -.75) is (.5, .5); c . median = -.75,
    # |c| = .75 * sqrt(2), |median| = .5 * sqrt(2): cosine -1.
    sketches = np.array([[1.0, 0.5], [0.5, 1.0], [-0.75, -0.75]], dtype=np.float32)

    rejections, cosines = direction_outliers(["a", "b", "c"], sketches, 0.0, exact_plan(2))

    assert [r.site_id for r in rejections] == ["c"]
    assert rejections[0].reason is RejectionReason.DIRECTION_OUTLIER
    assert "cosine -1 " in rejections[0].message
    assert "3 updates" in rejections[0].message
    # a . median = .75, |a| = sqrt(1.25): cosine .75 / (sqrt(1.25) * sqrt(.5)) = 0.9487.
    assert cosines["a"] == pytest.approx(0.75 / math.sqrt(1.25 * 0.5))
    assert cosines["c"] == pytest.approx(-1.0)


def test_dissimilar_honest_deltas_accepted() -> None:
    # Each pair shares one coordinate; the median is (1, 1, 1) and every cosine is
    # 2 / (sqrt(2) * sqrt(3)) = 0.816.
    sketches = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]], dtype=np.float32)

    rejections, cosines = direction_outliers(["a", "b", "c"], sketches, 0.0, exact_plan(3))

    assert rejections == []
    assert cosines == pytest.approx({s: 2.0 / math.sqrt(6.0) for s in "abc"})


def test_direction_screen_skipped_below_three_updates() -> None:
    sketches = np.array([[1.0, 1.0], [-1.0, -1.0]], dtype=np.float32)

    assert direction_outliers(["a", "b"], sketches, 0.0, exact_plan(2)) == ([], {})


def test_zero_delta_not_scored() -> None:
    sketches = np.array([[1.0, 0.0], [1.0, 0.2], [0.0, 0.0]], dtype=np.float32)

    rejections, cosines = direction_outliers(["a", "b", "c"], sketches, 0.0, exact_plan(2))

    assert rejections == []
    assert "c" not in cosines


def test_threshold_configurable() -> None:
    sketches = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]], dtype=np.float32)

    rejections, _ = direction_outliers(["a", "b", "c"], sketches, 0.9, exact_plan(3))

    assert [r.site_id for r in rejections] == ["a", "b", "c"]


def uncertain_sketches() -> npt.NDArray[np.float32]:
    # The median is all ones. c sums to -3 + 31 * 0.05 = -1.45 with norm sqrt(9.0775):
    # cosine -1.45 / (3.0129 * sqrt(32)) = -0.085, all from one coordinate.
    c = np.full(32, 0.05, dtype=np.float32)
    c[0] = -3.0
    return np.stack([np.ones(32, dtype=np.float32), np.ones(32, dtype=np.float32), c])


def test_exact_sketch_rejects_slightly_negative_cosine() -> None:
    rejections, cosines = direction_outliers(
        ["a", "b", "c"], uncertain_sketches(), 0.0, exact_plan(32)
    )

    assert cosines["c"] == pytest.approx(-1.45 / (math.sqrt(9.0775) * math.sqrt(32.0)), rel=1e-5)
    assert [r.site_id for r in rejections] == ["c"]


def test_sampled_sketch_keeps_uncertain_cosine() -> None:
    # Leaving out the group of coordinate 0 turns the cosine to +1, so the jackknife
    # standard error is large and the estimate is not confidently below 0.
    sketches = uncertain_sketches()

    rejections, cosines = direction_outliers(["a", "b", "c"], sketches, 0.0, sampled_plan(32))

    assert cosines["c"] < 0.0
    assert rejections == []


def test_sampled_sketch_rejects_clear_flip() -> None:
    rng = np.random.default_rng(3)
    common = rng.standard_normal(4096).astype(np.float32)
    noise = rng.standard_normal((3, 4096)).astype(np.float32)
    sketches = np.stack([common + noise[0], common + noise[1], -common + noise[2]])

    rejections, _ = direction_outliers(["a", "b", "c"], sketches, 0.0, sampled_plan(4096))

    assert [r.site_id for r in rejections] == ["c"]
    assert "estimated cosine" in rejections[0].message


def test_sketch_plan_exact_for_small_rounds() -> None:
    weights = {"a": np.zeros((3, 4), dtype=np.float32), "b": np.zeros(5, dtype=np.float32)}

    plan = plan_sketch(weights, 3)

    assert plan.exact
    assert plan.size == 17
    assert plan.offsets == {"a": 0, "b": 12}
    np.testing.assert_array_equal(plan.indices["b"], np.arange(5))


@pytest.mark.parametrize(
    ("update_count", "expected_size"),
    [
        (3, SKETCH_MAX_COORDINATES),
        (300, 2_000_000 // (4 * 300)),
        (3000, SKETCH_MIN_COORDINATES),
    ],
)
def test_sketch_plan_samples_large_rounds(update_count: int, expected_size: int) -> None:
    weights = {"a": np.zeros(1_500_000, dtype=np.float32), "b": np.zeros(500_000, dtype=np.float32)}
    assert update_count * 2_000_000 > EXACT_SKETCH_VALUES

    plan = plan_sketch(weights, update_count)

    assert not plan.exact
    assert plan.size == expected_size
    assert plan.indices["a"].size + plan.indices["b"].size == expected_size
    assert np.all(np.diff(plan.indices["a"]) > 0)
    assert plan.indices["b"].max() < 500_000
    assert np.bincount(plan.groups).min() >= expected_size // JACKKNIFE_GROUPS


def test_sketch_plan_chunk_slices_cover_the_plan() -> None:
    plan = plan_sketch({"w": np.zeros(2_000_000, dtype=np.float32)}, 3)
    seen = []

    for start in range(0, 2_000_000, 300_000):
        indices, target = plan.chunk_slices("w", start, min(start + 300_000, 2_000_000))
        assert np.all((indices >= 0) & (indices < 300_000))
        seen.append(np.arange(plan.size)[target])

    np.testing.assert_array_equal(np.concatenate(seen), np.arange(plan.size))


def test_fedavg_drops_flipped_update() -> None:
    updates = [
        vector_update("a", 1, 1.0, 0.5),
        vector_update("b", 1, 0.5, 1.0),
        vector_update("c", 1, -0.75, -0.75),
    ]

    result = FedAvg().aggregate(ZERO2, updates)

    np.testing.assert_array_equal(result.weights["w"], f32(0.75, 0.75))
    assert result.included == ("a", "b")
    assert [(r.site_id, r.reason) for r in result.rejected] == [
        ("c", RejectionReason.DIRECTION_OUTLIER)
    ]
    assert result.delta_cosines["c"] == pytest.approx(-1.0)
    assert result.delta_norms["c"] == pytest.approx(0.75 * math.sqrt(2.0))


def test_fedavg_keeps_dissimilar_honest_updates() -> None:
    global_weights = {"w": f32(0.0, 0.0, 0.0)}
    updates = [
        UpdateSource("a", 2, lambda: {"w": f32(1.0, 0.0, 1.0)}),
        UpdateSource("b", 1, lambda: {"w": f32(1.0, 1.0, 0.0)}),
        UpdateSource("c", 1, lambda: {"w": f32(0.0, 1.0, 1.0)}),
    ]

    result = FedAvg().aggregate(global_weights, updates)

    assert result.rejected == ()
    # (2 * a + b + c) / 4 = (3, 2, 3) / 4.
    np.testing.assert_array_equal(result.weights["w"], f32(0.75, 0.5, 0.75))


def test_direction_screen_off_keeps_flipped_update() -> None:
    updates = [
        vector_update("a", 1, 1.0, 0.5),
        vector_update("b", 1, 0.5, 1.0),
        vector_update("c", 1, -0.75, -0.75),
    ]

    result = FedAvg(guard=GuardConfig(min_cosine=None)).aggregate(ZERO2, updates)

    assert result.included == ("a", "b", "c")
    assert result.delta_cosines == {}


def test_median_strategy_runs_direction_screen() -> None:
    updates = [
        vector_update("a", 1, 1.0, 0.5),
        vector_update("b", 1, 0.5, 1.0),
        vector_update("c", 1, -0.75, -0.75),
    ]

    result = CoordinateMedian(guard=DIRECTION_ONLY).aggregate(ZERO2, updates)

    assert result.included == ("a", "b")
    assert result.rejected[0].reason is RejectionReason.DIRECTION_OUTLIER
    np.testing.assert_array_equal(result.weights["w"], f32(0.75, 0.75))


@pytest.mark.parametrize("value", [-1.5, 1.0, 2.0])
def test_config_rejects_min_cosine_out_of_range(value: float) -> None:
    with pytest.raises(ConfigError, match="min_cosine"):
        StrategyConfig(min_cosine=value)


def test_config_carries_min_cosine_to_guard() -> None:
    config = StrategyConfig(min_cosine=-0.2)

    assert config.guard.min_cosine == -0.2
    assert StrategyConfig.from_json(config.to_json()) == config
    assert StrategyConfig(min_cosine=None).guard.min_cosine is None


def test_config_without_min_cosine_gets_default() -> None:
    data = StrategyConfig().to_json()
    del data["min_cosine"]

    assert StrategyConfig.from_json(data).min_cosine == 0.0


@pytest.mark.parametrize("count", [1, 2, 3, 4, 9, 10, 16, 17, 40])
def test_column_median_matches_numpy(count: int) -> None:
    rows = np.random.default_rng(count).standard_normal((count, 37)).astype(np.float32)

    median = column_median(rows)

    assert median.dtype == np.float64
    np.testing.assert_allclose(median, np.median(rows.astype(np.float64), axis=0), rtol=1e-12)


def test_column_median_with_ties() -> None:
    rows = np.array([[1.0, 2.0], [1.0, -3.0], [0.0, 2.0], [1.0, 2.0]], dtype=np.float32)

    np.testing.assert_array_equal(column_median(rows), [1.0, 2.0])
