"""A small multilayer perceptron in numpy: initialisation, backpropagation, losses, Adam, fitting.

The network is a stack of dense layers with ReLU between them and a linear
output. Its weights are a flat ``Weights`` mapping, ``dense0.weight`` (shape
``(inputs, outputs)``), ``dense0.bias``, ``dense1.weight`` and so on, so that a
model travels and averages like any other set of named arrays. Trainers build
their workloads from these pieces, and no function here depends on a dataset.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from plantfed.errors import ConfigError, ModelFormatError
from plantfed.modelio import Weights
from worker.trainers.base import TrainParams

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.floating]

#: Loss function: (outputs, targets) -> (mean loss over the batch, gradient w.r.t. outputs).
LossFn = Callable[[FloatArray, FloatArray], tuple[float, FloatArray]]

#: Training stops before a batch when less time is left than this many times the slowest batch.
DEADLINE_MARGIN_BATCHES = 2.0


@dataclass(frozen=True)
class Samples:
    """Model inputs of shape ``(n, features)`` and targets of shape ``(n, outputs)``."""

    features: FloatArray
    targets: FloatArray

    def __len__(self) -> int:
        return int(self.features.shape[0])


# --- network -----------------------------------------------------------------------------------


def layer_count(weights: Mapping[str, FloatArray]) -> int:
    """Return the number of dense layers in ``weights``."""
    count = 0
    while f"dense{count}.weight" in weights:
        count += 1
    return count


def init_mlp(layer_sizes: Sequence[int], rng: np.random.Generator) -> Weights:
    """Create float32 weights with He-normal initialisation and zero biases.

    Parameters
    ----------
    layer_sizes
        Widths from input to output, for example ``(12, 32, 16, 1)``.
    rng
        Seeded generator; the same seed gives the same weights.
    """
    if len(layer_sizes) < 2 or min(layer_sizes) < 1:
        raise ValueError(f"layer_sizes needs at least two positive widths, got {layer_sizes}")
    weights: Weights = {}
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(layer_sizes)):
        std = np.sqrt(2.0 / fan_in)
        weights[f"dense{index}.weight"] = rng.normal(0.0, std, (fan_in, fan_out)).astype(np.float32)
        weights[f"dense{index}.bias"] = np.zeros(fan_out, dtype=np.float32)
    return weights


def check_architecture(weights: Mapping[str, FloatArray], layer_sizes: Sequence[int]) -> None:
    """Raise ``ModelFormatError`` unless ``weights`` has exactly the layers of ``layer_sizes``."""
    expected: dict[str, tuple[int, ...]] = {}
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(layer_sizes)):
        expected[f"dense{index}.weight"] = (fan_in, fan_out)
        expected[f"dense{index}.bias"] = (fan_out,)
    found = {name: np.shape(array) for name, array in weights.items()}
    if found != expected:
        raise ModelFormatError(
            f"weights do not fit an MLP of layer sizes {tuple(layer_sizes)}: "
            f"expected parameter shapes {sorted(expected.items())}, got {sorted(found.items())}"
        )


def forward(
    weights: Mapping[str, FloatArray], features: FloatArray
) -> tuple[FloatArray, list[FloatArray]]:
    """Run the network and return its outputs and the input of every layer.

    The list of layer inputs is what ``backward`` needs; its first entry is
    ``features`` itself.
    """
    layers = layer_count(weights)
    inputs: list[FloatArray] = []
    current = features
    for index in range(layers):
        inputs.append(current)
        current = current @ weights[f"dense{index}.weight"] + weights[f"dense{index}.bias"]
        if index < layers - 1:
            current = np.maximum(current, 0)
    return current, inputs


def predict(weights: Mapping[str, FloatArray], features: FloatArray) -> FloatArray:
    """Return the network outputs for ``features``, shape ``(n, outputs)``."""
    return forward(weights, features)[0]


def backward(
    weights: Mapping[str, FloatArray], inputs: Sequence[FloatArray], grad_outputs: FloatArray
) -> Weights:
    """Backpropagate ``grad_outputs`` (dLoss/dOutputs) and return the gradient of every parameter.

    ``inputs`` is the list ``forward`` returned for the same batch. A layer input
    of zero after ReLU marks a unit that was off, so its gradient stops there.
    """
    grads: Weights = {}
    grad = grad_outputs
    for index in reversed(range(len(inputs))):
        layer_input = inputs[index]
        grads[f"dense{index}.weight"] = layer_input.T @ grad
        grads[f"dense{index}.bias"] = grad.sum(axis=0)
        if index > 0:
            grad = (grad @ weights[f"dense{index}.weight"].T) * (layer_input > 0)
    return grads


# --- losses ------------------------------------------------------------------------------------


def sigmoid(logits: FloatArray) -> FloatArray:
    """Return the logistic function of ``logits`` without overflow for large magnitudes."""
    result: FloatArray = np.exp(-np.logaddexp(0, -logits))
    return result


def bce_with_logits_terms(logits: FloatArray, targets: FloatArray, pos_weight: float) -> FloatArray:
    """Return the per-sample weighted binary cross-entropy, positives weighted by ``pos_weight``."""
    # softplus(-z) = -log(sigmoid(z)) and softplus(z) = -log(1 - sigmoid(z)).
    terms: FloatArray = pos_weight * targets * np.logaddexp(0, -logits) + (
        1 - targets
    ) * np.logaddexp(0, logits)
    return terms


def bce_with_logits(pos_weight: float) -> LossFn:
    """Return the weighted binary cross-entropy loss on logits, averaged over the batch."""

    def loss(logits: FloatArray, targets: FloatArray) -> tuple[float, FloatArray]:
        count = logits.shape[0]
        value = float(bce_with_logits_terms(logits, targets, pos_weight).mean())
        probability = sigmoid(logits)
        grad = (pos_weight * targets * (probability - 1) + (1 - targets) * probability) / count
        return value, grad.astype(logits.dtype)

    return loss


def mean_squared_error(outputs: FloatArray, targets: FloatArray) -> tuple[float, FloatArray]:
    """Return the mean squared error over the batch and its gradient."""
    diff = outputs - targets
    return float(np.mean(diff**2)), (2.0 / diff.size) * diff


# --- optimisation ------------------------------------------------------------------------------


class Adam:
    """The Adam optimiser over a fixed set of named parameters.

    Its moment estimates start at zero for every local training run, as is usual in
    federated learning, where the optimiser state does not leave the plant.
    """

    def __init__(
        self,
        weights: Mapping[str, FloatArray],
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
    ) -> None:
        self.learning_rate = learning_rate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.steps = 0
        self._first = {name: np.zeros_like(value) for name, value in weights.items()}
        self._second = {name: np.zeros_like(value) for name, value in weights.items()}

    def step(self, weights: Weights, grads: Mapping[str, FloatArray]) -> None:
        """Update ``weights`` in place with one Adam step along ``grads``."""
        self.steps += 1
        correction1 = 1 - self.beta1**self.steps
        correction2 = 1 - self.beta2**self.steps
        step_size = self.learning_rate * np.sqrt(correction2) / correction1
        for name, grad in grads.items():
            first = self._first[name]
            second = self._second[name]
            first *= self.beta1
            first += (1 - self.beta1) * grad
            second *= self.beta2
            second += (1 - self.beta2) * grad * grad
            weights[name] -= (step_size * first / (np.sqrt(second) + self.epsilon)).astype(
                weights[name].dtype
            )


def add_proximal_term(
    grads: Weights, weights: Mapping[str, FloatArray], anchor: Mapping[str, FloatArray], mu: float
) -> None:
    """Add the FedProx gradient ``mu * (w - w_global)`` to ``grads`` in place."""
    for name, grad in grads.items():
        grad += (mu * (weights[name] - anchor[name])).astype(grad.dtype)


# --- training loop -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FitConfig:
    """Settings of one local training run.

    Attributes
    ----------
    epochs
        Passes over the local training data.
    batch_size
        Samples per gradient step.
    learning_rate
        Adam step size.
    proximal_mu
        FedProx coefficient; 0 gives plain FedAvg local training.
    seed
        Seed of the batch shuffling.
    """

    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 1e-3
    proximal_mu: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class FitOutcome:
    """Weights after a local training run and how far the run got."""

    weights: Weights
    batches: int
    epochs_completed: int
    mean_loss: float
    stopped_at_deadline: bool

    def metrics(self) -> dict[str, float]:
        """Return ``epochs`` completed and, when a batch ran, ``train_loss``.

        A run without a batch has no training loss, and NaN is not valid JSON.
        """
        metrics = {"epochs": float(self.epochs_completed)}
        if self.batches > 0:
            metrics["train_loss"] = self.mean_loss
        return metrics


def fit(
    weights: Mapping[str, FloatArray],
    samples: Samples,
    loss_fn: LossFn,
    config: FitConfig,
    deadline_monotonic_s: float,
) -> FitOutcome:
    """Train a copy of ``weights`` on ``samples`` with Adam in shuffled mini-batches.

    Before each batch the loop compares ``time.monotonic()`` with
    ``deadline_monotonic_s``. It stops early when less time remains than
    ``DEADLINE_MARGIN_BATCHES`` times the slowest batch seen so far, and returns
    the weights reached. ``mean_loss`` is the mean batch loss of the last epoch
    that ran, including a partial one; it is NaN when no batch ran.
    """
    anchor = {name: np.array(value, copy=True) for name, value in weights.items()}
    current = {name: np.array(value, copy=True) for name, value in weights.items()}
    optimiser = Adam(current, config.learning_rate)
    rng = np.random.default_rng(config.seed)
    slowest_batch_s = 0.0
    batches = 0
    epoch_losses: list[float] = []

    for epoch in range(config.epochs):
        order = rng.permutation(len(samples))
        epoch_losses = []
        for start in range(0, len(samples), config.batch_size):
            started = time.monotonic()
            if deadline_monotonic_s - started <= DEADLINE_MARGIN_BATCHES * slowest_batch_s:
                logger.debug("local training stopped at the deadline after %d batches", batches)
                return FitOutcome(current, batches, epoch, _mean(epoch_losses), True)

            index = order[start : start + config.batch_size]
            outputs, inputs = forward(current, samples.features[index])
            loss, grad_outputs = loss_fn(outputs, samples.targets[index])
            grads = backward(current, inputs, grad_outputs)
            if config.proximal_mu > 0:
                add_proximal_term(grads, current, anchor, config.proximal_mu)
            optimiser.step(current, grads)

            epoch_losses.append(loss)
            batches += 1
            slowest_batch_s = max(slowest_batch_s, time.monotonic() - started)

    return FitOutcome(current, batches, config.epochs, _mean(epoch_losses), False)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


# --- parameters --------------------------------------------------------------------------------

#: Names of the ``FitConfig`` settings a campaign may pass as trainer parameters.
FIT_PARAM_NAMES = frozenset({"epochs", "batch_size", "learning_rate", "proximal_mu", "seed"})


def check_param_names(params: TrainParams, known: frozenset[str], trainer: str) -> None:
    """Raise ``ConfigError`` when ``params`` has a name outside ``known``."""
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"trainer {trainer!r} does not accept parameters {unknown}; accepted: {sorted(known)}"
        )


def read_int(params: TrainParams, name: str, default: int, minimum: int) -> int:
    """Return integer parameter ``name`` or ``default``; raise ``ConfigError`` if invalid."""
    value = params.get(name, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"parameter {name!r} must be an integer >= {minimum}, got {value!r}")
    return value


def read_float(params: TrainParams, name: str, default: float, minimum: float) -> float:
    """Return number parameter ``name`` or ``default``; raise ``ConfigError`` if invalid."""
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"parameter {name!r} must be a number, got {value!r}")
    number = float(value)
    if not np.isfinite(number) or number < minimum:
        raise ConfigError(f"parameter {name!r} must be a finite number >= {minimum}, got {value!r}")
    return number


def fit_config_from_params(params: TrainParams, defaults: FitConfig) -> FitConfig:
    """Build a ``FitConfig`` from campaign parameters, using ``defaults`` for absent names."""
    return FitConfig(
        epochs=read_int(params, "epochs", defaults.epochs, 1),
        batch_size=read_int(params, "batch_size", defaults.batch_size, 1),
        learning_rate=read_float(params, "learning_rate", defaults.learning_rate, 1e-12),
        proximal_mu=read_float(params, "proximal_mu", defaults.proximal_mu, 0.0),
        seed=read_int(params, "seed", defaults.seed, 0),
    )
