"""Sample-weighted federated averaging (FedAvg, and FedProx on the server side).

FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", 2017) moves the global model by the mean of the sites'
deltas, each weighted by its sample count. FedProx (Li et al., "Federated
Optimization in Heterogeneous Networks", 2020) changes only local training,
which adds a proximal term; its server step is this same mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from coordinator.aggregation.interface import AggregateResult, UpdateSource
from coordinator.aggregation.names import StrategyName
from coordinator.aggregation.screening import GuardConfig
from coordinator.aggregation.streaming import merge_mean_delta
from plantfed.modelio import Array, Weights


@dataclass(frozen=True)
class FedAvg:
    """Sample-weighted mean of the deltas, streamed one update at a time.

    Peak memory is a few model sizes whatever the number of updates, and each
    update is loaded once unless a round-level test rejects it (see
    ``coordinator.aggregation.streaming``). ``name`` is ``fedprox`` when the
    campaign trains with a proximal term, so results and logs name what ran.
    """

    name: StrategyName = StrategyName.FEDAVG
    guard: GuardConfig = field(default_factory=GuardConfig)
    streaming: bool = field(default=True, init=False)

    def aggregate(
        self,
        global_weights: Mapping[str, Array],
        updates: Iterable[UpdateSource],
        state: Mapping[str, Array] | None = None,
    ) -> AggregateResult:
        """Merge the updates into the next global model.

        Parameters
        ----------
        global_weights
            The round's global model.
        updates
            The round's updates, iterated once (see ``merge_mean_delta``).
        state
            Ignored: FedAvg keeps no state between rounds.

        Returns
        -------
        AggregateResult
            The new model ``global + sum(n_k * delta_k) / sum(n_k)`` over included sites.
        """
        merged = merge_mean_delta(global_weights, updates, self.guard)
        weights = dict(global_weights)
        if merged.delta is not None:
            weights = apply_delta(global_weights, merged.delta)
        return AggregateResult(
            weights=weights,
            included=merged.included,
            rejected=merged.rejected,
            delta_norms=merged.delta_norms,
            total_samples=merged.total_samples,
            delta_cosines=merged.cosines,
        )


def apply_delta(
    global_weights: Mapping[str, Array], delta: dict[str, npt.NDArray[np.floating]]
) -> Weights:
    """Return ``global + delta`` in each parameter's dtype, rounded once.

    Where a delta has its parameter's dtype, the sum is written into the delta's
    array, which becomes the result. Otherwise a new array receives the sum,
    computed in the wider dtype.
    """
    weights: Weights = {}
    for name, g in global_weights.items():
        d = delta[name]
        if d.dtype == g.dtype:
            weights[name] = np.add(d, g, out=d)
        else:
            weights[name] = np.add(d, g, out=np.empty_like(g), casting="unsafe")
    return weights
