"""Unit tests of campaign configuration loading and validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coordinator.aggregation import PARAMETER_DEFAULTS
from coordinator.config import (
    CampaignConfig,
    StrategyName,
    campaign_config_from_dict,
    load_campaign_config,
)
from coordinator.tuning import PRESETS, NetworkPreset
from plantfed.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def minimal(**extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"id": "c1", "rounds": 5, "trainer": {"name": "ai4i-mlp"}}
    document.update(extra)
    return document


def config_error(document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        campaign_config_from_dict(document)
    return str(info.value)


def test_minimal_config_defaults() -> None:
    config = campaign_config_from_dict(minimal())

    assert config == CampaignConfig(id="c1", trainer="ai4i-mlp", rounds=5)
    assert config.round.preset is NetworkPreset.WAN
    assert config.round.timing == PRESETS[NetworkPreset.WAN]
    assert config.strategy.name is StrategyName.FEDAVG
    assert config.min_sites == 2
    assert config.sites == ()
    assert not config.early_stopping.enabled


def test_full_config_values() -> None:
    document = minimal(
        seed=7,
        sites=["plant-a", "plant-b", "plant-c"],
        min_sites=3,
        checkpoint_dir="/var/lib/plantfed",
        trainer={"name": "cmapss-rul", "params": {"epochs": 2, "lr": 0.01, "norm": True}},
        round={
            "preset": "plant-lan",
            "deadline_s": 90,
            "sample_fraction": 0.5,
            "max_concurrency": 4,
        },
        strategy={"name": "trimmed-mean", "params": {"trim_fraction": 0.2, "clip_norm": 5.0}},
        early_stopping={"metric": "rmse", "patience": 3, "min_delta": 0.01},
        failures={"max_failure_rate": 0.25, "round_retries": 1},
    )

    config = campaign_config_from_dict(document)

    assert config.seed == 7
    assert config.sites == ("plant-a", "plant-b", "plant-c")
    assert config.checkpoint_dir == Path("/var/lib/plantfed")
    assert config.trainer == "cmapss-rul"
    assert config.trainer_params == {"epochs": 2, "lr": 0.01, "norm": True}
    assert config.round.preset is NetworkPreset.PLANT_LAN
    assert config.round.timing.max_deadline_s == 90.0
    assert config.round.sample_fraction == 0.5
    assert config.round.max_concurrency == 4
    assert config.strategy.trim_fraction == 0.2
    assert config.strategy.clip_norm == 5.0
    assert config.strategy.server_learning_rate is None
    assert config.early_stopping.patience == 3
    assert config.failures.max_failure_rate == 0.25
    assert config.failures.round_retries == 1


def test_explicit_keys_override_preset() -> None:
    config = campaign_config_from_dict(
        minimal(round={"preset": "cellular-edge", "heartbeat_interval_s": 4, "grace_s": 30})
    )
    cellular = PRESETS[NetworkPreset.CELLULAR_EDGE]

    assert config.round.timing.heartbeat_interval_s == 4.0
    assert config.round.timing.default_grace_s == 30.0
    assert config.round.timing.lost_after_s == cellular.lost_after_s


def test_small_max_deadline_pulls_preset_values_down() -> None:
    config = campaign_config_from_dict(minimal(round={"preset": "cellular-edge", "deadline_s": 60}))

    assert config.round.timing.max_deadline_s == 60.0
    assert config.round.timing.default_deadline_s == 60.0
    assert config.round.timing.min_deadline_s == 60.0


def test_strategy_defaults_filled() -> None:
    config = campaign_config_from_dict(minimal(strategy={"name": "fedadam"}))

    assert config.strategy.server_learning_rate == PARAMETER_DEFAULTS["server_learning_rate"]
    assert config.strategy.beta1 == 0.9
    assert config.strategy.trim_fraction is None


def test_fedadagrad_has_its_own_learning_rate_default() -> None:
    adagrad = campaign_config_from_dict(minimal(strategy={"name": "fedadagrad"}))
    adam = campaign_config_from_dict(minimal(strategy={"name": "fedadam"}))

    assert adagrad.strategy.server_learning_rate == 1.0
    assert adam.strategy.server_learning_rate == 0.1


def test_unknown_key_suggests_fix() -> None:
    message = config_error(minimal(round={"dedline_s": 30}))

    assert "round.dedline_s is not a known key" in message
    assert "did you mean round.deadline_s?" in message


def test_unknown_top_level_key() -> None:
    message = config_error(minimal(rounds_total=4))

    assert "rounds_total is not a known key" in message
    assert "did you mean rounds?" in message


def test_param_of_other_strategy_rejected() -> None:
    message = config_error(minimal(strategy={"name": "fedavg", "params": {"trim_fraction": 0.1}}))

    assert "strategy.params.trim_fraction is not a known key for strategy 'fedavg'" in message


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (minimal(round={"deadline_s": -5}), "round.deadline_s = -5: a duration must be above 0"),
        (minimal(round={"deadline_s": 0}), "round.deadline_s = 0: a duration must be above 0"),
        (minimal(round={"grace_s": -1}), "round.grace_s = -1: a duration must be 0 or more"),
        (minimal(round={"deadline_s": "soon"}), 'round.deadline_s = "soon": must be a number'),
        (minimal(round={"sample_fraction": 0}), "round.sample_fraction = 0: must be in (0, 1]"),
        (minimal(round={"sample_fraction": 1.5}), "round.sample_fraction = 1.5: must be in (0, 1]"),
        (minimal(round={"preset": "plant_lan"}), "did you mean 'plant-lan'?"),
        (minimal(strategy={"name": "fedavgg"}), "did you mean 'fedavg'?"),
        (minimal(strategy={"name": "krum"}), "use one of fedavg, fedprox"),
        (minimal(failures={"max_failure_rate": 1.2}), "failures.max_failure_rate = 1.2"),
        (minimal(rounds=0), "rounds = 0: must be at least 1"),
        (minimal(rounds=2.5), "rounds = 2.5: must be a whole number"),
        (minimal(min_sites=True), "min_sites = true: must be a whole number"),
        (minimal(id="bad id!"), 'id = "bad id!": use letters, digits'),
        (minimal(round={"adaptive": "yes"}), 'round.adaptive = "yes": must be true or false'),
        (minimal(round={"max_sites_per_round": 1}), "round.max_sites_per_round = 1 is below"),
        (
            minimal(strategy={"name": "trimmed-mean", "params": {"trim_fraction": 0.5}}),
            "strategy.params.trim_fraction = 0.5: must be in (0, 0.5)",
        ),
        (
            minimal(trainer={"name": "x", "params": {"layers": [1, 2]}}),
            "trainer.params.layers = [1, 2]: trainer params must be scalars",
        ),
        (minimal(round="fast"), 'round = "fast": must be a table'),
    ],
)
def test_invalid_value_message(document: dict[str, Any], expected: str) -> None:
    assert expected in config_error(document)


def test_soft_limit_must_be_below_hard_limit() -> None:
    message = config_error(minimal(round={"soft_limit_margin_s": 90, "hard_limit_margin_s": 60}))

    assert (
        "round.soft_limit_margin_s = 90.0: must be below round.hard_limit_margin_s = 60" in message
    )


def test_soft_limit_against_preset_hard_limit() -> None:
    message = config_error(minimal(round={"preset": "plant-lan", "soft_limit_margin_s": 45}))

    assert "must be below round.hard_limit_margin_s = 30" in message


def test_conflicting_explicit_bounds() -> None:
    message = config_error(minimal(round={"min_grace_s": 20, "max_grace_s": 10}))

    assert "round.min_grace_s = 20.0: must not exceed round.max_grace_s = 10" in message


def test_duplicate_site_ids() -> None:
    message = config_error(minimal(sites=["plant-a", "plant-b", "plant-a"]))

    assert 'sites[2] = "plant-a": is listed twice' in message


def test_min_sites_above_site_count() -> None:
    message = config_error(minimal(sites=["plant-a", "plant-b"], min_sites=3))

    assert "min_sites = 3 is above the 2 sites listed" in message
    assert "lower min_sites to at most 2" in message


def test_missing_required_keys() -> None:
    message = config_error({})

    assert "id is missing" in message
    assert "rounds is missing" in message
    assert "[trainer] table is missing" in message


def test_all_problems_reported_together() -> None:
    message = config_error(
        minimal(rounds=0, round={"deadline_s": -1, "sample_fraction": 3}, strategy={"name": "x"})
    )

    assert message.startswith("campaign config is invalid (4 problems):")
    assert len(message.splitlines()) == 5


def test_load_resolves_checkpoint_dir(tmp_path: Path) -> None:
    path = tmp_path / "campaign.toml"
    path.write_text('id = "c1"\nrounds = 3\ncheckpoint_dir = "ckpt"\n[trainer]\nname = "t"\n')

    config = load_campaign_config(path)

    assert config.checkpoint_dir == tmp_path / "ckpt"


def test_load_names_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "campaign.toml"
    path.write_text('id = "c1"\nrounds = -3\n[trainer]\nname = "t"\n')

    with pytest.raises(ConfigError, match=r"campaign\.toml is invalid \(1 problem\)"):
        load_campaign_config(path)


def test_load_rejects_missing_and_malformed_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("id = \n")

    with pytest.raises(ConfigError, match="not found"):
        load_campaign_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_campaign_config(broken)


def test_load_rejects_binary_file_and_directory(tmp_path: Path) -> None:
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00id")

    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_campaign_config(binary)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_campaign_config(tmp_path)


@pytest.mark.parametrize("name", ["ai4i-campaign.toml", "cmapss-campaign.toml"])
def test_example_configs_load(name: str) -> None:
    config = load_campaign_config(EXAMPLES / name)

    assert config.rounds > 0
    assert config.checkpoint_dir.is_absolute()


def test_screens_turned_off_with_false() -> None:
    config = campaign_config_from_dict(
        minimal(strategy={"name": "fedavg", "params": {"max_norm_z": False, "min_cosine": False}})
    )

    assert config.strategy.max_norm_z is None
    assert config.strategy.min_cosine is None


def test_min_cosine_out_of_range_rejected() -> None:
    with pytest.raises(ConfigError, match=r"strategy\.params\.min_cosine"):
        campaign_config_from_dict(minimal(strategy={"name": "fedavg", "params": {"min_cosine": 2}}))
