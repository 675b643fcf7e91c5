"""Tests of the numpy MLP: shapes, gradients, Adam, FedProx, deadline and parameter parsing."""

from __future__ import annotations

import time

import numpy as np
import pytest

from plantfed.errors import ConfigError, ModelFormatError
from worker.trainers import mlp

FAR_DEADLINE_S = 1e12


def _float64(weights):
    return {name: value.astype(np.float64) for name, value in weights.items()}


def _numeric_gradient(loss_of, weights, name, index, step=1e-6):
    plus = {k: v.copy() for k, v in weights.items()}
    minus = {k: v.copy() for k, v in weights.items()}
    plus[name][index] += step
    minus[name][index] -= step
    return (loss_of(plus) - loss_of(minus)) / (2 * step)


def test_init_names_shapes_and_dtype():
    weights = mlp.init_mlp((4, 3, 1), np.random.default_rng(0))

    assert sorted(weights) == ["dense0.bias", "dense0.weight", "dense1.bias", "dense1.weight"]
    assert weights["dense0.weight"].shape == (4, 3)
    assert weights["dense1.weight"].shape == (3, 1)
    assert all(value.dtype == np.float32 for value in weights.values())
    assert not weights["dense0.bias"].any()
    assert mlp.layer_count(weights) == 2


def test_init_same_seed_same_weights():
    first = mlp.init_mlp((5, 4, 2), np.random.default_rng(7))
    second = mlp.init_mlp((5, 4, 2), np.random.default_rng(7))
    other = mlp.init_mlp((5, 4, 2), np.random.default_rng(8))

    assert all(np.array_equal(first[name], second[name]) for name in first)
    assert not np.array_equal(first["dense0.weight"], other["dense0.weight"])


def test_init_rejects_single_width():
    with pytest.raises(ValueError, match="layer_sizes"):
        mlp.init_mlp((4,), np.random.default_rng(0))


def test_forward_matches_hand_computation():
    weights = {
        "dense0.weight": np.array([[1.0, -1.0]]),
        "dense0.bias": np.array([0.0, 0.5]),
        "dense1.weight": np.array([[2.0], [3.0]]),
        "dense1.bias": np.array([0.25]),
    }
    outputs = mlp.predict(weights, np.array([[2.0], [-1.0]]))

    # x=2: hidden relu(2, -1.5) = (2, 0) -> 4.25; x=-1: hidden relu(-1, 1.5) = (0, 1.5) -> 4.75.
    np.testing.assert_allclose(outputs, [[4.25], [4.75]])


@pytest.mark.parametrize("loss_name", ["bce", "mse"])
def test_backward_matches_finite_differences(loss_name):
    rng = np.random.default_rng(3)
    weights = _float64(mlp.init_mlp((3, 5, 4, 1), rng))
    features = rng.normal(size=(6, 3))
    if loss_name == "bce":
        targets = np.array([[1.0], [0.0], [0.0], [1.0], [0.0], [0.0]])
        loss_fn = mlp.bce_with_logits(pos_weight=2.5)
    else:
        targets = rng.normal(size=(6, 1))
        loss_fn = mlp.mean_squared_error

    outputs, inputs = mlp.forward(weights, features)
    grads = mlp.backward(weights, inputs, loss_fn(outputs, targets)[1])

    def loss_of(candidate):
        return loss_fn(mlp.predict(candidate, features), targets)[0]

    for name, value in weights.items():
        for index in np.ndindex(value.shape):
            expected = _numeric_gradient(loss_of, weights, name, index)
            assert grads[name][index] == pytest.approx(expected, rel=1e-4, abs=1e-7), name


def test_bce_weights_positive_class():
    logits = np.array([[0.0], [0.0]])
    targets = np.array([[1.0], [0.0]])

    terms = mlp.bce_with_logits_terms(logits, targets, pos_weight=3.0)

    np.testing.assert_allclose(terms[:, 0], [3.0 * np.log(2.0), np.log(2.0)])


def test_bce_stays_finite_for_large_logits():
    logits = np.array([[80.0], [-80.0]], dtype=np.float32)
    targets = np.array([[0.0], [1.0]], dtype=np.float32)

    value, grad = mlp.bce_with_logits(1.0)(logits, targets)

    assert value == pytest.approx(80.0, rel=1e-5)
    assert np.all(np.isfinite(grad))


def test_adam_minimises_quadratic():
    weights = {"w": np.array([3.0, -2.0])}
    optimiser = mlp.Adam(weights, learning_rate=0.1)

    for _ in range(300):
        optimiser.step(weights, {"w": 2.0 * weights["w"]})

    np.testing.assert_allclose(weights["w"], [0.0, 0.0], atol=0.05)


def test_adam_first_step_moves_by_learning_rate():
    weights = {"w": np.array([1.0, 1.0])}
    optimiser = mlp.Adam(weights, learning_rate=0.01)

    optimiser.step(weights, {"w": np.array([5.0, -0.5])})

    np.testing.assert_allclose(weights["w"], [0.99, 1.01], rtol=1e-6)


def _regression_samples(rows=256, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 2)).astype(np.float32)
    targets = (features[:, :1] * 2.0 - features[:, 1:] + 0.5).astype(np.float32)
    return mlp.Samples(features, targets)


def test_fit_learns_linear_function():
    samples = _regression_samples()
    weights = mlp.init_mlp((2, 16, 1), np.random.default_rng(0))
    config = mlp.FitConfig(epochs=60, batch_size=32, learning_rate=0.01)

    outcome = mlp.fit(weights, samples, mlp.mean_squared_error, config, FAR_DEADLINE_S)

    assert outcome.mean_loss < 0.01
    assert outcome.batches == 60 * 8
    assert outcome.epochs_completed == 60
    assert not outcome.stopped_at_deadline
    assert outcome.weights["dense0.weight"].dtype == np.float32


def test_fit_leaves_input_weights_unchanged():
    samples = _regression_samples()
    weights = mlp.init_mlp((2, 4, 1), np.random.default_rng(0))
    before = {name: value.copy() for name, value in weights.items()}

    mlp.fit(weights, samples, mlp.mean_squared_error, mlp.FitConfig(epochs=1), FAR_DEADLINE_S)

    assert all(np.array_equal(before[name], weights[name]) for name in weights)


def test_fit_proximal_term_keeps_weights_near_start():
    samples = _regression_samples()
    weights = mlp.init_mlp((2, 8, 1), np.random.default_rng(1))
    plain = mlp.FitConfig(epochs=20, batch_size=32, learning_rate=0.01)
    proximal = mlp.FitConfig(epochs=20, batch_size=32, learning_rate=0.01, proximal_mu=10.0)

    def distance(config):
        result = mlp.fit(weights, samples, mlp.mean_squared_error, config, FAR_DEADLINE_S)
        return sum(float(np.sum((result.weights[n] - weights[n]) ** 2)) for n in weights)

    assert distance(proximal) < 0.5 * distance(plain)


def test_proximal_gradient_is_mu_times_drift():
    grads = {"w": np.array([1.0, 1.0])}

    mlp.add_proximal_term(grads, {"w": np.array([2.0, -1.0])}, {"w": np.array([0.0, 0.0])}, 0.5)

    np.testing.assert_allclose(grads["w"], [2.0, 0.5])


def test_fit_past_deadline_runs_no_batch():
    samples = _regression_samples()
    weights = mlp.init_mlp((2, 4, 1), np.random.default_rng(0))

    outcome = mlp.fit(
        weights, samples, mlp.mean_squared_error, mlp.FitConfig(), time.monotonic() - 1.0
    )

    assert outcome.stopped_at_deadline
    assert outcome.batches == 0
    assert np.isnan(outcome.mean_loss)
    assert np.array_equal(outcome.weights["dense0.weight"], weights["dense0.weight"])


def test_fit_stops_before_deadline():
    samples = _regression_samples(rows=20_000)
    weights = mlp.init_mlp((2, 64, 64, 1), np.random.default_rng(0))
    config = mlp.FitConfig(epochs=10_000, batch_size=16)
    deadline_s = time.monotonic() + 0.3

    outcome = mlp.fit(weights, samples, mlp.mean_squared_error, config, deadline_s)

    assert outcome.stopped_at_deadline
    assert outcome.batches > 0
    assert time.monotonic() < deadline_s + 0.2


def test_fit_config_from_params_reads_values_and_defaults():
    defaults = mlp.FitConfig(epochs=3, batch_size=64, learning_rate=0.01)

    config = mlp.fit_config_from_params({"epochs": 7, "learning_rate": 1, "seed": 4.0}, defaults)

    assert config == mlp.FitConfig(epochs=7, batch_size=64, learning_rate=1.0, seed=4)


@pytest.mark.parametrize(
    "params",
    [
        {"epochs": 0},
        {"epochs": 2.5},
        {"epochs": True},
        {"batch_size": "64"},
        {"learning_rate": -0.1},
        {"learning_rate": float("nan")},
        {"proximal_mu": -1},
    ],
)
def test_fit_config_rejects_invalid_values(params):
    with pytest.raises(ConfigError, match=next(iter(params))):
        mlp.fit_config_from_params(params, mlp.FitConfig())


def test_check_param_names_lists_accepted_names():
    with pytest.raises(ConfigError, match=r"learning_rte.*accepted"):
        mlp.check_param_names({"learning_rte": 0.1}, mlp.FIT_PARAM_NAMES, "demo")


def test_check_architecture_accepts_matching_weights():
    weights = mlp.init_mlp((4, 3, 1), np.random.default_rng(0))

    mlp.check_architecture(weights, (4, 3, 1))


@pytest.mark.parametrize("sizes", [(5, 3, 1), (4, 3, 2), (4, 3, 3, 1)])
def test_check_architecture_rejects_other_shapes(sizes):
    weights = mlp.init_mlp((4, 3, 1), np.random.default_rng(0))

    with pytest.raises(ModelFormatError, match="expected parameter shapes"):
        mlp.check_architecture(weights, sizes)


def test_outcome_metrics_omit_loss_without_batches():
    weights = mlp.init_mlp((2, 1), np.random.default_rng(0))
    idle = mlp.FitOutcome(weights, 0, 0, float("nan"), True)
    busy = mlp.FitOutcome(weights, 3, 1, 0.25, False)

    assert idle.metrics() == {"epochs": 0.0}
    assert busy.metrics() == {"epochs": 1.0, "train_loss": 0.25}
