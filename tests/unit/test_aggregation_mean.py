"""Unit tests of FedAvg and FedProx merges, clipping and the streaming guards."""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from coordinator.aggregation import (
    FedAvg,
    GuardConfig,
    RejectionReason,
    StrategyName,
    UpdateSource,
)
from coordinator.aggregation.delta import FOLD_EVERY
from plantfed.errors import BlobNotFoundError, ModelFormatError
from plantfed.modelio import Weights


def f32(*values: float) -> npt.NDArray[np.float32]:
    return np.array(values, dtype=np.float32)


def source(site_id: str, samples: int, weights: Weights) -> UpdateSource:
    return UpdateSource(site_id, samples, lambda: {k: v.copy() for k, v in weights.items()})


def vector_update(site_id: str, samples: int, *values: float) -> UpdateSource:
    return source(site_id, samples, {"w": f32(*values)})


ZERO2 = {"w": f32(0.0, 0.0)}
NO_ROUND_TESTS = GuardConfig(max_norm_z=None, min_cosine=None)


class CountingLoader:
    """A loader that counts calls and tracks whether earlier results are still alive."""

    def __init__(self, weights: Weights, live: list[weakref.ref[npt.NDArray[np.float32]]]) -> None:
        self.weights = weights
        self.live = live
        self.calls = 0
        self.max_live_at_load = 0

    def __call__(self) -> Weights:
        self.calls += 1
        alive = sum(1 for ref in self.live if ref() is not None)
        self.max_live_at_load = max(self.max_live_at_load, alive)
        loaded = {k: v.copy() for k, v in self.weights.items()}
        self.live.extend(weakref.ref(a) for a in loaded.values())
        return loaded


def test_fedavg_weights_by_samples() -> None:
    global_weights = {"w": f32(0.0, 0.0), "b": f32(1.0)}
    updates = [
        source("a", 1, {"w": f32(1.0, 2.0), "b": f32(2.0)}),
        source("b", 3, {"w": f32(5.0, 6.0), "b": f32(0.0)}),
    ]

    result = FedAvg().aggregate(global_weights, updates)

    # w: (1*1 + 3*5) / 4 = 4 and (1*2 + 3*6) / 4 = 5; b: 1 + (1*1 + 3*(-1)) / 4 = 0.5
    np.testing.assert_array_equal(result.weights["w"], f32(4.0, 5.0))
    np.testing.assert_array_equal(result.weights["b"], f32(0.5))
    assert result.weights["w"].dtype == np.float32
    assert result.included == ("a", "b")
    assert result.rejected == ()
    assert result.total_samples == 4
    assert result.delta_norms == pytest.approx({"a": math.sqrt(6.0), "b": math.sqrt(62.0)})
    assert result.state == {}


def test_fedavg_of_identical_updates_returns_them() -> None:
    rng = np.random.default_rng(7)
    global_weights = {"w": rng.standard_normal((3, 4)).astype(np.float32)}
    local = {"w": global_weights["w"] + rng.standard_normal((3, 4)).astype(np.float32) * 0.1}
    updates = [source(f"s{i}", 10 + i, local) for i in range(5)]

    result = FedAvg().aggregate(global_weights, updates)

    np.testing.assert_allclose(result.weights["w"], local["w"], rtol=1e-6, atol=1e-7)
    assert len(result.included) == 5


def test_fedavg_of_identical_exact_updates_is_exact() -> None:
    global_weights = {"w": f32(0.5, -2.0, 8.0)}
    local = {"w": f32(0.75, -1.5, 4.0)}
    updates = [source(f"s{i}", 3, local) for i in range(20)]

    result = FedAvg().aggregate(global_weights, updates)

    np.testing.assert_array_equal(result.weights["w"], local["w"])


def test_fedprox_server_step_is_fedavg() -> None:
    updates = [vector_update("a", 1, 1.0, 2.0), vector_update("b", 3, 5.0, 6.0)]

    fedprox = FedAvg(name=StrategyName.FEDPROX).aggregate(ZERO2, updates)
    fedavg = FedAvg().aggregate(ZERO2, updates)

    np.testing.assert_array_equal(fedprox.weights["w"], fedavg.weights["w"])


def test_fedavg_merges_float64_models_in_float64() -> None:
    global_weights = {"w": np.array([1.0], dtype=np.float64)}
    updates = [
        source("a", 1, {"w": np.array([1.0 + 1e-12])}),
        source("b", 1, {"w": np.array([1.0])}),
    ]

    result = FedAvg().aggregate(global_weights, updates)

    assert result.weights["w"].dtype == np.float64
    assert result.weights["w"][0] == pytest.approx(1.0 + 0.5e-12, abs=1e-15)


def test_fedavg_merges_float16_models_in_float32() -> None:
    global_weights = {"w": np.array([1.0, 2.0], dtype=np.float16)}
    updates = [
        source("a", 1, {"w": np.array([2.0, 2.0], dtype=np.float16)}),
        source("b", 3, {"w": np.array([1.0, 6.0], dtype=np.float16)}),
    ]

    result = FedAvg().aggregate(global_weights, updates)

    assert result.weights["w"].dtype == np.float16
    np.testing.assert_array_equal(result.weights["w"], np.array([1.25, 5.0], dtype=np.float16))
    assert result.delta_norms == {"a": 1.0, "b": 4.0}


def test_float64_delta_whose_square_overflows_rejected() -> None:
    global_weights = {"w": np.array([0.0, 0.0])}
    updates = [
        source("a", 1, {"w": np.array([1e200, 0.0])}),
        source("b", 1, {"w": np.array([1.0, 1.0])}),
    ]

    result = FedAvg().aggregate(global_weights, updates)

    assert result.included == ("b",)
    assert result.rejected[0].reason is RejectionReason.NON_FINITE
    assert "squared delta of parameter 'w' overflows float64" in result.rejected[0].message


def test_fedavg_rejects_invalid_update_and_merges_others() -> None:
    updates = [
        vector_update("a", 1, 1.0, 1.0),
        vector_update("bad", 1, float("nan"), 1.0),
        vector_update("b", 1, 3.0, 3.0),
    ]

    result = FedAvg(guard=NO_ROUND_TESTS).aggregate(ZERO2, updates)

    np.testing.assert_array_equal(result.weights["w"], f32(2.0, 2.0))
    assert result.included == ("a", "b")
    assert [r.reason for r in result.rejected] == [RejectionReason.NON_FINITE]
    assert "bad" in result.rejected[0].message
    assert "'w'" in result.rejected[0].message


def test_overflowing_delta_rejected_as_non_finite() -> None:
    global_weights = {"w": f32(-3e38)}
    updates = [vector_update("a", 1, 3e38), vector_update("b", 1, -3e38)]

    result = FedAvg().aggregate(global_weights, updates)

    assert result.included == ("b",)
    assert result.rejected[0].reason is RejectionReason.NON_FINITE
    assert "overflows float32" in result.rejected[0].message


def test_huge_finite_delta_gets_exact_norm() -> None:
    # 1e20 squared overflows float32; squares are summed in float64.
    updates = [vector_update("a", 1, 1e20, 0.0), vector_update("b", 1, 0.0, 0.0)]

    result = FedAvg().aggregate(ZERO2, updates)

    assert result.delta_norms["a"] == pytest.approx(1e20, rel=1e-6)
    assert result.included == ("a", "b")


def test_norm_outlier_excluded_from_mean() -> None:
    updates = [
        vector_update("a", 1, 1.0, 0.0),
        vector_update("b", 1, 0.0, 1.1),
        vector_update("c", 1, 0.9, 0.0),
        vector_update("d", 1, 100.0, 0.0),
    ]

    result = FedAvg().aggregate(ZERO2, updates)

    np.testing.assert_allclose(result.weights["w"], f32(1.9 / 3, 1.1 / 3), rtol=1e-6)
    assert result.included == ("a", "b", "c")
    assert [(r.site_id, r.reason) for r in result.rejected] == [("d", RejectionReason.NORM_OUTLIER)]
    assert result.delta_norms["d"] == pytest.approx(100.0)


def test_fixed_clip_scales_delta_not_weight() -> None:
    updates = [vector_update("a", 3, 3.0, 4.0), vector_update("b", 1, 0.0, 1.0)]

    result = FedAvg(guard=GuardConfig(clip_norm=2.0)).aggregate(ZERO2, updates)

    # a is clipped from norm 5 to 2: (1.2, 1.6). Mean: (3*(1.2, 1.6) + (0, 1)) / 4.
    np.testing.assert_allclose(result.weights["w"], f32(0.9, 1.45), rtol=1e-6)
    assert result.delta_norms == pytest.approx({"a": 5.0, "b": 1.0})


def test_auto_clip_uses_round_median_norm() -> None:
    updates = [
        vector_update("a", 1, 3.0, 4.0),
        vector_update("b", 1, 0.0, 1.0),
        vector_update("c", 1, 2.0, 0.0),
    ]
    guard = GuardConfig(max_norm_z=None, clip_norm="auto")

    result = FedAvg(guard=guard).aggregate(ZERO2, updates)

    # Median norm is 2, so a becomes (1.2, 1.6); b and c are below it.
    np.testing.assert_allclose(result.weights["w"], f32(3.2 / 3, 2.6 / 3), rtol=1e-6)


@pytest.mark.parametrize(
    ("count", "guard", "loads_each"),
    [
        (2, GuardConfig(), 1),
        (5, GuardConfig(max_norm_z=None), 1),
        (5, GuardConfig(), 1),
        (2, GuardConfig(clip_norm="auto"), 2),
    ],
)
def test_streaming_loads_one_update_at_a_time(
    count: int, guard: GuardConfig, loads_each: int
) -> None:
    live: list[weakref.ref[npt.NDArray[np.float32]]] = []
    loaders = [CountingLoader({"w": f32(float(i), 1.0)}, live) for i in range(count)]
    updates = (UpdateSource(f"s{i}", 1, loader) for i, loader in enumerate(loaders))

    result = FedAvg(guard=guard).aggregate(ZERO2, updates)

    assert len(result.included) == count
    assert [loader.calls for loader in loaders] == [loads_each] * count
    assert max(loader.max_live_at_load for loader in loaders) == 0


def test_unreadable_update_rejected() -> None:
    def missing() -> Weights:
        raise BlobNotFoundError("no blob under hash abc")

    updates = [UpdateSource("a", 1, missing), vector_update("b", 1, 2.0, 2.0)]

    result = FedAvg().aggregate(ZERO2, updates)

    assert result.included == ("b",)
    assert result.rejected[0].reason is RejectionReason.UNREADABLE
    assert "abc" in result.rejected[0].message


def test_headquarters_failure_propagates() -> None:
    def broken() -> Weights:
        raise ConnectionError("redis down")

    with pytest.raises(ConnectionError):
        FedAvg().aggregate(ZERO2, [UpdateSource("a", 1, broken)])


def test_oversized_blob_rejected_before_loading() -> None:
    loader = CountingLoader({"w": f32(1.0, 1.0)}, [])
    updates = [UpdateSource("a", 1, loader, encoded_bytes=2_000)]

    result = FedAvg(guard=GuardConfig(max_update_bytes=1_000)).aggregate(ZERO2, updates)

    assert result.rejected[0].reason is RejectionReason.TOO_LARGE
    assert loader.calls == 0


def test_samples_above_declared_rejected_in_merge() -> None:
    updates = [
        UpdateSource("a", 5, lambda: {"w": f32(1.0, 1.0)}, declared_samples=4),
        vector_update("b", 1, 2.0, 2.0),
    ]

    result = FedAvg().aggregate(ZERO2, updates)

    assert result.included == ("b",)
    assert result.rejected[0].reason is RejectionReason.SAMPLES_ABOVE_DECLARED


def test_duplicate_site_keeps_first_update() -> None:
    updates = [vector_update("a", 1, 2.0, 2.0), vector_update("a", 1, 8.0, 8.0)]

    result = FedAvg().aggregate(ZERO2, updates)

    np.testing.assert_array_equal(result.weights["w"], f32(2.0, 2.0))
    assert [r.reason for r in result.rejected] == [RejectionReason.DUPLICATE_SITE]


def test_no_included_update_returns_global_model() -> None:
    result = FedAvg().aggregate(ZERO2, [vector_update("a", 0, 1.0, 1.0)])

    np.testing.assert_array_equal(result.weights["w"], ZERO2["w"])
    assert result.included == ()
    assert result.total_samples == 0


def test_non_finite_global_model_raises() -> None:
    with pytest.raises(ModelFormatError):
        FedAvg().aggregate({"w": f32(np.inf, 0.0)}, [vector_update("a", 1, 1.0, 1.0)])


def test_merge_folds_many_updates_into_float64() -> None:
    # More updates than one working-dtype block: half with delta 1 and half with delta 3.
    count = 2 * FOLD_EVERY + 2

    def updates() -> Iterator[UpdateSource]:
        for i in range(count):
            yield vector_update(f"s{i}", 1, 1.0 if i % 2 else 3.0, 0.0)

    result = FedAvg(guard=NO_ROUND_TESTS).aggregate(ZERO2, updates())

    np.testing.assert_array_equal(result.weights["w"], f32(2.0, 0.0))
    assert len(result.included) == count
