"""Unit tests of StrategyConfig and make_strategy."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.aggregation import (
    CoordinateMedian,
    FedAvg,
    ServerOptimizer,
    StrategyConfig,
    StrategyName,
    TrimmedMean,
    make_strategy,
)
from plantfed.errors import ConfigError


@pytest.mark.parametrize(
    ("name", "kind", "streaming"),
    [
        (StrategyName.FEDAVG, FedAvg, True),
        (StrategyName.FEDPROX, FedAvg, True),
        (StrategyName.FEDADAM, ServerOptimizer, True),
        (StrategyName.FEDYOGI, ServerOptimizer, True),
        (StrategyName.FEDADAGRAD, ServerOptimizer, True),
        (StrategyName.MEDIAN, CoordinateMedian, False),
        (StrategyName.TRIMMED_MEAN, TrimmedMean, False),
    ],
)
def test_factory_builds_named_strategy(name: StrategyName, kind: type, streaming: bool) -> None:
    strategy = make_strategy(StrategyConfig(name=name))

    assert isinstance(strategy, kind)
    assert strategy.name is name
    assert strategy.streaming is streaming


def test_factory_passes_parameters_and_guards() -> None:
    config = StrategyConfig(
        name=StrategyName.FEDYOGI,
        server_learning_rate=0.5,
        beta1=0.0,
        tau=1e-6,
        clip_norm="auto",
        max_norm_z=None,
    )

    strategy = make_strategy(config)

    assert isinstance(strategy, ServerOptimizer)
    assert strategy.server_learning_rate == 0.5
    assert strategy.beta1 == 0.0
    assert strategy.beta2 == 0.99
    assert strategy.tau == 1e-6
    assert strategy.guard.clip_norm == "auto"
    assert strategy.guard.max_norm_z is None


def test_trim_fraction_default() -> None:
    strategy = make_strategy(StrategyConfig(name=StrategyName.TRIMMED_MEAN))

    assert isinstance(strategy, TrimmedMean)
    assert strategy.trim_fraction == 0.1


def test_json_round_trip() -> None:
    config = StrategyConfig(name=StrategyName.TRIMMED_MEAN, trim_fraction=0.2, clip_norm=3.0)

    assert StrategyConfig.from_json(config.to_json()) == config
    assert config.to_json()["name"] == "trimmed-mean"


def test_name_given_as_text_becomes_enum() -> None:
    config = StrategyConfig.from_json({"name": "fedadam"})

    assert config.name is StrategyName.FEDADAM


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"name": "fedsgd"}, "strategy.name"),
        ({"beta1": 1.0}, "strategy.beta1"),
        ({"beta2": -0.1}, "strategy.beta2"),
        ({"tau": 0.0}, "strategy.tau"),
        ({"server_learning_rate": 0.0}, "strategy.server_learning_rate"),
        ({"trim_fraction": 0.5}, "strategy.trim_fraction"),
        ({"proximal_mu": -1.0}, "strategy.proximal_mu"),
        ({"clip_norm": -2.0}, "strategy.clip_norm"),
        ({"clip_norm": "median"}, "strategy.clip_norm"),
        ({"max_norm_z": 0.0}, "strategy.max_norm_z"),
        ({"max_update_bytes": 0}, "strategy.max_update_bytes"),
        ({"momentum": 0.9}, "unknown keys"),
    ],
)
def test_invalid_values_rejected(values: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        StrategyConfig.from_json(values)
