"""Unit tests of the one-pass streaming merge: the fused delta sum and removal after the pass."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from coordinator.aggregation import FedAvg, GuardConfig, RejectionReason, UpdateSource, kernels
from coordinator.aggregation.delta import DeltaSum
from coordinator.aggregation.screening import screen_round
from coordinator.aggregation.streaming import merge_mean_delta, sum_updates
from plantfed.errors import BlobNotFoundError
from plantfed.modelio import Weights

NO_ROUND_TESTS = GuardConfig(max_norm_z=None, min_cosine=None)


def f32(*values: float) -> npt.NDArray[np.float32]:
    return np.array(values, dtype=np.float32)


class Loader:
    """Return copies of fixed weights and count the calls."""

    def __init__(self, weights: Weights) -> None:
        self.weights = weights
        self.calls = 0

    def __call__(self) -> Weights:
        self.calls += 1
        return {k: v.copy() for k, v in self.weights.items()}


def honest_round(count: int, seed: int) -> tuple[Weights, list[Weights]]:
    """Return a global model and ``count`` updates that share a direction plus noise."""
    rng = np.random.default_rng(seed)
    global_weights = {
        "a": rng.standard_normal((4, 3)).astype(np.float32),
        "b": rng.standard_normal(5).astype(np.float32),
    }
    step = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in global_weights.items()}
    updates = [
        {
            k: (g + step[k] + 0.3 * rng.standard_normal(g.shape)).astype(np.float32)
            for k, g in global_weights.items()
        }
        for _ in range(count)
    ]
    return global_weights, updates


def scaled_update(global_weights: Weights, update: Weights, factor: float) -> Weights:
    return {k: (g + factor * (update[k] - g)).astype(np.float32) for k, g in global_weights.items()}


def sources(updates: list[Weights]) -> tuple[list[UpdateSource], list[Loader]]:
    loaders = [Loader(u) for u in updates]
    return [UpdateSource(f"s{i}", 10 + i, loader) for i, loader in enumerate(loaders)], loaders


def test_sub_block_size_leaves_sum_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    global_weights, updates = honest_round(5, seed=1)
    results = []
    for sub_block in (3, 1024):
        monkeypatch.setattr(kernels, "SUB_BLOCK_ELEMENTS", sub_block)
        total = DeltaSum(global_weights)
        norms = [total.add(f"s{i}", u, 1.0 + i) for i, u in enumerate(updates)]
        results.append((total.mean(), norms))

    for name in global_weights:
        np.testing.assert_array_equal(results[0][0][name], results[1][0][name])
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-6)


def test_one_pass_equals_screening_pass_then_merge() -> None:
    global_weights, updates = honest_round(7, seed=2)
    updates[3] = scaled_update(global_weights, updates[3], 3.0)  # a norm outlier
    updates[5] = scaled_update(global_weights, updates[5], -1.0)  # a flipped update
    round_sources, _ = sources(updates)
    guard = GuardConfig()

    one_pass = merge_mean_delta(global_weights, round_sources, guard)
    screened = screen_round(global_weights, round_sources, guard)
    two_pass = sum_updates(global_weights, screened.accepted, guard, None, None)

    assert one_pass.included == tuple(s.site_id for s in screened.accepted)
    assert [r.reason for r in one_pass.rejected] == [r.reason for r in screened.rejected]
    assert one_pass.delta is not None
    expected = two_pass.total.mean()
    for name in global_weights:
        np.testing.assert_allclose(one_pass.delta[name], expected[name], rtol=1e-6, atol=1e-7)
    assert one_pass.delta_norms == pytest.approx(screened.delta_norms, rel=1e-6)


def test_outlier_subtracted_after_pass_equals_excluded_from_start() -> None:
    global_weights, updates = honest_round(6, seed=3)
    outlier = scaled_update(global_weights, updates[0], 5.0)
    round_sources, loaders = sources([*updates, outlier])
    honest_sources, _ = sources(updates)

    result = FedAvg(guard=GuardConfig(min_cosine=None)).aggregate(global_weights, round_sources)
    expected = FedAvg(guard=NO_ROUND_TESTS).aggregate(global_weights, honest_sources)

    assert [(r.site_id, r.reason) for r in result.rejected] == [
        ("s6", RejectionReason.NORM_OUTLIER)
    ]
    # The outlier's weighted norm is below the kept ones' total: it is loaded again and subtracted.
    assert [loader.calls for loader in loaders] == [1, 1, 1, 1, 1, 1, 2]
    for name in global_weights:
        np.testing.assert_allclose(
            result.weights[name], expected.weights[name], rtol=1e-6, atol=1e-6
        )


def test_heavy_outlier_merged_again_without_it() -> None:
    global_weights, updates = honest_round(4, seed=4)
    outlier = scaled_update(global_weights, updates[0], 1e6)
    round_sources, loaders = sources([*updates, outlier])
    honest_sources, _ = sources(updates)

    result = FedAvg().aggregate(global_weights, round_sources)
    expected = FedAvg(guard=NO_ROUND_TESTS).aggregate(global_weights, honest_sources)

    assert result.included == ("s0", "s1", "s2", "s3")
    # Subtracting a delta 1e6 times larger than the rest would leave its rounding behind,
    # so the four kept updates are loaded and summed again.
    assert [loader.calls for loader in loaders] == [2, 2, 2, 2, 1]
    for name in global_weights:
        np.testing.assert_array_equal(result.weights[name], expected.weights[name])


@pytest.mark.parametrize("reloaded", ["scaled further", "nan"])
def test_changed_reload_falls_back_to_second_pass(reloaded: str) -> None:
    global_weights, updates = honest_round(6, seed=5)
    outlier = scaled_update(global_weights, updates[0], 5.0)
    second = scaled_update(global_weights, updates[0], 9.0)
    if reloaded == "nan":
        second = scaled_update(global_weights, updates[0], 5.0)
        second["a"][0, 0] = math.nan
    calls = 0

    def shifting() -> Weights:
        nonlocal calls
        calls += 1
        return outlier if calls == 1 else second

    round_sources, loaders = sources(updates)
    round_sources.append(UpdateSource("odd", 10, shifting))
    honest_sources, _ = sources(updates)

    result = FedAvg().aggregate(global_weights, round_sources)
    expected = FedAvg(guard=NO_ROUND_TESTS).aggregate(global_weights, honest_sources)

    assert calls == 2
    assert [loader.calls for loader in loaders] == [2] * 6
    for name in global_weights:
        np.testing.assert_array_equal(result.weights[name], expected.weights[name])


def test_unreadable_reload_falls_back_to_second_pass() -> None:
    global_weights, updates = honest_round(6, seed=6)
    outlier = scaled_update(global_weights, updates[0], 5.0)
    calls = 0

    def vanishing() -> Weights:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise BlobNotFoundError("blob expired")
        return outlier

    round_sources, loaders = sources(updates)
    round_sources.append(UpdateSource("gone", 10, vanishing))

    result = FedAvg().aggregate(global_weights, round_sources)

    assert result.included == tuple(f"s{i}" for i in range(6))
    assert [loader.calls for loader in loaders] == [2] * 6


def test_nan_found_partway_merges_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "SUB_BLOCK_ELEMENTS", 2)
    global_weights = {"w": f32(0.0, 0.0, 0.0, 0.0)}
    honest = [Loader({"w": f32(1.0, 2.0, 3.0, 4.0)}), Loader({"w": f32(3.0, 2.0, 1.0, 0.0)})]
    bad = Loader({"w": f32(100.0, 100.0, 100.0, math.nan)})
    round_sources = [
        UpdateSource("a", 1, honest[0]),
        UpdateSource("bad", 1, bad),
        UpdateSource("b", 1, honest[1]),
    ]

    result = FedAvg().aggregate(global_weights, round_sources)

    # The first sub-block of "bad" was added before its NaN was found: the others are summed
    # again.
    np.testing.assert_array_equal(result.weights["w"], f32(2.0, 2.0, 2.0, 2.0))
    assert result.rejected[0].reason is RejectionReason.NON_FINITE
    assert [honest[0].calls, bad.calls, honest[1].calls] == [2, 1, 2]


def test_nan_in_first_sub_block_needs_no_second_pass() -> None:
    honest = [Loader({"w": f32(1.0, 2.0)}), Loader({"w": f32(3.0, 2.0)})]
    round_sources = [
        UpdateSource("a", 1, honest[0]),
        UpdateSource("bad", 1, Loader({"w": f32(math.nan, 1.0)})),
        UpdateSource("b", 1, honest[1]),
    ]

    result = FedAvg().aggregate({"w": f32(0.0, 0.0)}, round_sources)

    np.testing.assert_array_equal(result.weights["w"], f32(2.0, 2.0))
    assert [loader.calls for loader in honest] == [1, 1]


def test_fixed_clip_subtracts_clipped_delta() -> None:
    # Norms 5, 1, 1 and 1 against clip 2: the first delta enters as (1.2, 1.6). With
    # MAD 0 the spread is 25% of the median 1 (z = 16), so the first update is a norm
    # outlier and is subtracted as it was added; the mean of the three others is (0, 1).
    updates = [
        UpdateSource("a", 1, Loader({"w": f32(3.0, 4.0)})),
        *(UpdateSource(s, 1, Loader({"w": f32(0.0, 1.0)})) for s in "bcd"),
    ]
    guard = GuardConfig(clip_norm=2.0, min_cosine=None)

    result = FedAvg(guard=guard).aggregate({"w": f32(0.0, 0.0)}, updates)

    assert result.included == ("b", "c", "d")
    np.testing.assert_allclose(result.weights["w"], f32(0.0, 1.0), atol=1e-7)
