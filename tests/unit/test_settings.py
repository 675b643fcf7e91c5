"""Settings: sources, coercion and the start-up checks on timeouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from plantfed.errors import ConfigError
from plantfed.settings import Settings, load_settings


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "plantfed.toml"
    path.write_text('[plantfed]\nbroker_url = "redis://file:6379/0"\nmax_round_s = 100\n')

    settings = load_settings(path, env={"PLANTFED_BROKER_URL": "redis://env:6379/0"})

    assert settings.broker_url == "redis://env:6379/0"
    assert settings.backend_url == "redis://env:6379/0"
    assert settings.max_round_s == 100.0


def test_visibility_timeout_below_round_rejected() -> None:
    env = {"PLANTFED_MAX_ROUND_S": "3600", "PLANTFED_VISIBILITY_TIMEOUT_S": "600"}

    with pytest.raises(ConfigError) as error:
        load_settings(env=env)

    assert "visibility_timeout_s" in str(error.value)
    assert "at least 3660" in str(error.value)


def test_result_expiry_below_round_rejected() -> None:
    with pytest.raises(ConfigError) as error:
        Settings(result_expires_s=60.0, max_round_s=600.0).validate()

    assert "result_expires_s" in str(error.value)


def test_liveness_ttl_must_exceed_interval() -> None:
    with pytest.raises(ConfigError, match="liveness_ttl_s"):
        Settings(liveness_interval_s=5.0, liveness_ttl_s=5.0).validate()


def test_unknown_file_key_rejected(tmp_path: Path) -> None:
    path = tmp_path / "plantfed.toml"
    path.write_text("[plantfed]\nbroker = 'redis://x'\n")

    with pytest.raises(ConfigError, match="unknown settings broker"):
        load_settings(path, env={})


def test_non_numeric_duration_rejected() -> None:
    with pytest.raises(ConfigError, match="max_round_s must be a number"):
        load_settings(env={"PLANTFED_MAX_ROUND_S": "one hour"})


def test_settings_round_trip_through_env() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0", key_prefix="x", max_round_s=50.0)

    assert load_settings(env=settings.to_env()) == settings


def test_binary_settings_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "plantfed.toml"
    path.write_bytes(b"\xff\xfe[plantfed]")

    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_settings(path, env={})
