"""Adaptive server optimizers: FedAdam, FedYogi and FedAdagrad.

From Reddi et al., "Adaptive Federated Optimization", ICLR 2021: the server
treats the round's sample-weighted mean delta as a pseudo-gradient and takes one
optimizer step on it. With ``delta`` that mean, per coordinate::

    m = beta1 * m + (1 - beta1) * delta
    v = v + delta**2                                          (Adagrad)
    v = beta2 * v + (1 - beta2) * delta**2                    (Adam)
    v = v - (1 - beta2) * delta**2 * sign(v - delta**2)       (Yogi)
    x = x + server_learning_rate * m / (sqrt(v) + tau)

``m`` and ``v`` start at zero and have no bias correction, as in the paper's
algorithm. They are the state carried from round to round: ``aggregate`` takes
the previous state and returns the next one, both as weights-like dicts
(``m/<parameter>`` and ``v/<parameter>``) that can be checkpointed with
``plantfed.modelio.encode_weights``. Passing the state in and out, instead of
keeping it in the strategy object, makes a rerun of the same round reach the
same model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from coordinator.aggregation.delta import Float64Array, working_dtype
from coordinator.aggregation.interface import AggregateResult, UpdateSource
from coordinator.aggregation.names import StrategyName
from coordinator.aggregation.screening import GuardConfig
from coordinator.aggregation.streaming import merge_mean_delta
from plantfed.errors import ModelFormatError
from plantfed.modelio import Array, Weights

M_PREFIX = "m/"
V_PREFIX = "v/"


class SecondMoment(StrEnum):
    """Rule that updates the second-moment estimate ``v``."""

    ADAGRAD = "adagrad"
    ADAM = "adam"
    YOGI = "yogi"


_RULES = {
    StrategyName.FEDADAGRAD: SecondMoment.ADAGRAD,
    StrategyName.FEDADAM: SecondMoment.ADAM,
    StrategyName.FEDYOGI: SecondMoment.YOGI,
}


@dataclass(frozen=True)
class ServerOptimizer:
    """FedAdam, FedYogi or FedAdagrad over the streamed mean delta.

    ``name`` picks the second-moment rule. Defaults are those of Flower's FedAdam
    and FedYogi strategies (server learning rate 1e-2, tau 1e-3).
    """

    name: StrategyName = StrategyName.FEDADAM
    server_learning_rate: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    guard: GuardConfig = field(default_factory=GuardConfig)
    streaming: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if self.name not in _RULES:
            raise ValueError(f"{self.name!r} is not a server optimizer; use one of {list(_RULES)}")

    def aggregate(
        self,
        global_weights: Mapping[str, Array],
        updates: Iterable[UpdateSource],
        state: Mapping[str, Array] | None = None,
    ) -> AggregateResult:
        """Merge the updates and take one server optimizer step.

        Parameters
        ----------
        global_weights
            The round's global model.
        updates
            The round's updates, iterated once (see ``merge_mean_delta``).
        state
            State returned by the previous round, or None (or empty) to start at zero.

        Returns
        -------
        AggregateResult
            New weights and ``state`` for the next round. When no update is
            included, both are returned unchanged.

        Raises
        ------
        ModelFormatError
            When ``state`` does not match the model's parameters and shapes.
        """
        moments = restore_state(global_weights, state)
        merged = merge_mean_delta(global_weights, updates, self.guard)
        weights = dict(global_weights)
        next_state = dict(state or {})
        if merged.delta is not None:
            weights, m, v = self._step(global_weights, merged.delta, *moments)
            next_state = export_state(m, v)
        return AggregateResult(
            weights=weights,
            included=merged.included,
            rejected=merged.rejected,
            delta_norms=merged.delta_norms,
            total_samples=merged.total_samples,
            state=next_state,
            delta_cosines=merged.cosines,
        )

    def _step(
        self,
        global_weights: Mapping[str, Array],
        delta: Mapping[str, Array],
        m: Mapping[str, Array],
        v: Mapping[str, Array],
    ) -> tuple[Weights, Weights, Weights]:
        rule = _RULES[self.name]
        new_weights: Weights = {}
        new_m: Weights = {}
        new_v: Weights = {}
        for name, g in global_weights.items():
            d = delta[name].astype(np.float64, copy=False)
            m_t = self.beta1 * m[name] + (1.0 - self.beta1) * d
            v_t = _second_moment(rule, v[name].astype(np.float64), d * d, self.beta2)
            step = self.server_learning_rate * m_t / (np.sqrt(v_t) + self.tau)
            new_weights[name] = (g + step).astype(g.dtype)
            new_m[name] = m_t.astype(m[name].dtype)
            new_v[name] = v_t.astype(v[name].dtype)
        return new_weights, new_m, new_v


def _second_moment(
    rule: SecondMoment, v: Float64Array, delta_sq: Float64Array, beta2: float
) -> Float64Array:
    if rule is SecondMoment.ADAGRAD:
        return v + delta_sq
    if rule is SecondMoment.ADAM:
        return beta2 * v + (1.0 - beta2) * delta_sq
    return v - (1.0 - beta2) * delta_sq * np.sign(v - delta_sq)


def export_state(m: Mapping[str, Array], v: Mapping[str, Array]) -> Weights:
    """Pack the moments into one weights-like dict keyed ``m/<name>`` and ``v/<name>``."""
    state = {M_PREFIX + name: a for name, a in m.items()}
    state.update({V_PREFIX + name: a for name, a in v.items()})
    return state


def restore_state(
    global_weights: Mapping[str, Array], state: Mapping[str, Array] | None
) -> tuple[Weights, Weights]:
    """Unpack the moments for ``global_weights``; zeros when ``state`` is None or empty.

    Raises
    ------
    ModelFormatError
        When a key is missing or unexpected, or a shape differs from the model's.
    """
    if not state:
        zeros = {
            name: np.zeros(g.shape, dtype=working_dtype(g.dtype))
            for name, g in global_weights.items()
        }
        return zeros, {name: z.copy() for name, z in zeros.items()}
    expected = set(export_state(global_weights, global_weights))
    if set(state) != expected:
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        raise ModelFormatError(
            f"server optimizer state does not match the model: missing {missing}, "
            f"unexpected {unexpected}; start from an empty state or restore a matching checkpoint"
        )
    for key, a in state.items():
        shape = global_weights[key.split("/", 1)[1]].shape
        if a.shape != shape:
            raise ModelFormatError(
                f"server optimizer state {key!r} has shape {a.shape}, expected {shape}"
            )
    m = {name: state[M_PREFIX + name] for name in global_weights}
    v = {name: state[V_PREFIX + name] for name in global_weights}
    return m, v
