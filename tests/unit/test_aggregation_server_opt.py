"""Unit tests of FedAdam, FedYogi and FedAdagrad and their checkpointable state."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from coordinator.aggregation import (
    ServerOptimizer,
    StrategyName,
    UpdateSource,
    export_state,
    restore_state,
)
from plantfed.errors import ModelFormatError
from plantfed.modelio import Weights, decode_weights, encode_weights

# Global model (1, 2) and a single update whose delta is (0.5, -1).
X = {"w": np.array([1.0, 2.0], dtype=np.float32)}
LOCAL = {"w": np.array([1.5, 1.0], dtype=np.float32)}


def f64(*values: float) -> npt.NDArray[np.float64]:
    return np.array(values, dtype=np.float64)


def optimizer(name: StrategyName) -> ServerOptimizer:
    return ServerOptimizer(name=name, server_learning_rate=0.1, beta1=0.9, beta2=0.99, tau=1e-3)


def step(name: StrategyName, state: Weights | None = None) -> tuple[Weights, Weights]:
    updates = [UpdateSource("a", 10, lambda: {k: v.copy() for k, v in LOCAL.items()})]
    result = optimizer(name).aggregate(X, updates, state)
    return result.weights, result.state


# First step from zero state: m = 0.1 * delta = (0.05, -0.1).
# Adam and Yogi: v = 0.01 * delta**2 = (0.0025, 0.01), so sqrt(v) = (0.05, 0.1) and
#   x = (1 + 0.1 * 0.05 / 0.051, 2 - 0.1 * 0.1 / 0.101).
# Adagrad: v = delta**2 = (0.25, 1), so x = (1 + 0.1 * 0.05 / 0.501, 2 - 0.1 * 0.1 / 1.001).
FIRST_STEP = {
    StrategyName.FEDADAM: (f64(1.0980392, 1.9009901), f64(0.0025, 0.01)),
    StrategyName.FEDYOGI: (f64(1.0980392, 1.9009901), f64(0.0025, 0.01)),
    StrategyName.FEDADAGRAD: (f64(1.00998004, 1.99000999), f64(0.25, 1.0)),
}

# Second step with the same delta: m = 0.9 * m + 0.1 * delta = (0.095, -0.19).
# Adam: v = 0.99 * v + 0.01 * delta**2. Yogi: v - delta**2 < 0, so v = v + 0.01 * delta**2.
# Adagrad: v = v + delta**2.
SECOND_V = {
    StrategyName.FEDADAM: f64(0.004975, 0.0199),
    StrategyName.FEDYOGI: f64(0.005, 0.02),
    StrategyName.FEDADAGRAD: f64(0.5, 2.0),
}


@pytest.mark.parametrize("name", list(FIRST_STEP))
def test_first_step_from_zero_state(name: StrategyName) -> None:
    weights, state = step(name)

    expected_x, expected_v = FIRST_STEP[name]
    np.testing.assert_allclose(weights["w"], expected_x, rtol=1e-6)
    np.testing.assert_allclose(state["m/w"], f64(0.05, -0.1), rtol=1e-6)
    np.testing.assert_allclose(state["v/w"], expected_v, rtol=1e-6)
    assert weights["w"].dtype == np.float32


@pytest.mark.parametrize("name", list(SECOND_V))
def test_second_step_uses_previous_state(name: StrategyName) -> None:
    _, state = step(name)

    weights, next_state = step(name, state)

    m = f64(0.095, -0.19)
    v = SECOND_V[name]
    np.testing.assert_allclose(next_state["m/w"], m, rtol=1e-6)
    np.testing.assert_allclose(next_state["v/w"], v, rtol=1e-6)
    np.testing.assert_allclose(weights["w"], X["w"] + 0.1 * m / (np.sqrt(v) + 1e-3), rtol=1e-6)


@pytest.mark.parametrize("name", list(SECOND_V))
def test_state_survives_safetensors_round_trip(name: StrategyName) -> None:
    _, state = step(name)
    restored = decode_weights(encode_weights(state))

    from_memory, _ = step(name, state)
    from_disk, _ = step(name, restored)

    np.testing.assert_array_equal(from_disk["w"], from_memory["w"])


def test_aggregate_does_not_modify_state_passed_in() -> None:
    _, state = step(StrategyName.FEDADAM)
    before = {k: v.copy() for k, v in state.items()}

    step(StrategyName.FEDADAM, state)

    for key, value in before.items():
        np.testing.assert_array_equal(state[key], value)


def test_no_updates_keep_model_and_state() -> None:
    _, state = step(StrategyName.FEDYOGI)

    result = optimizer(StrategyName.FEDYOGI).aggregate(X, [], state)

    np.testing.assert_array_equal(result.weights["w"], X["w"])
    assert result.state.keys() == state.keys()
    assert result.included == ()


def test_export_and_restore_are_inverse() -> None:
    m = {"w": np.array([1.0], dtype=np.float32), "layer.0/b": np.array([2.0], dtype=np.float32)}
    v = {"w": np.array([3.0], dtype=np.float32), "layer.0/b": np.array([4.0], dtype=np.float32)}

    state = export_state(m, v)
    restored_m, restored_v = restore_state(m, state)

    assert sorted(state) == ["m/layer.0/b", "m/w", "v/layer.0/b", "v/w"]
    assert restored_m == m
    assert restored_v == v


def test_restore_rejects_state_of_another_model() -> None:
    state = export_state({"other": np.zeros(2, np.float32)}, {"other": np.zeros(2, np.float32)})

    with pytest.raises(ModelFormatError, match="missing"):
        restore_state(X, state)


def test_restore_rejects_wrong_shape() -> None:
    state = export_state({"w": np.zeros(3, np.float32)}, {"w": np.zeros(3, np.float32)})

    with pytest.raises(ModelFormatError, match="shape"):
        restore_state(X, state)


def test_restore_empty_state_is_zero() -> None:
    m, v = restore_state(X, {})

    np.testing.assert_array_equal(m["w"], np.zeros(2))
    np.testing.assert_array_equal(v["w"], np.zeros(2))


def test_server_optimizer_rejects_other_names() -> None:
    with pytest.raises(ValueError, match="not a server optimizer"):
        ServerOptimizer(name=StrategyName.MEDIAN)
