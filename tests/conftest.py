"""Fixtures shared by every test: a private Redis, settings, data files and federations."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from coordinator.localfed import LocalFederation, PlantSpec
from plantfed.redis_server import RedisServer
from plantfed.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

#: Settings of every test federation: short liveness timers so tests notice changes fast.
TEST_SETTINGS = Settings(
    key_prefix="plantfed-test",
    max_round_s=600.0,
    visibility_timeout_s=900.0,
    liveness_interval_s=1.0,
    liveness_ttl_s=4.0,
)


@pytest.fixture
def shared_data_dir() -> Path:
    """The real data sets beside the repository; skips the test when they are absent."""
    if not (SHARED_DATA / "ai4i2020.csv").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (AI4I 2020 and C-MAPSS expected)")
    return SHARED_DATA


@pytest.fixture
def ai4i_csv(shared_data_dir: Path) -> Path:
    return shared_data_dir / "ai4i2020.csv"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, stopped after the test."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def settings(redis_server: RedisServer) -> Settings:
    return TEST_SETTINGS.with_broker(redis_server.url)


FederationFactory = Callable[..., LocalFederation]


@pytest.fixture
def federation(settings: Settings, tmp_path: Path) -> Iterator[FederationFactory]:
    """Start a one-machine federation on the private Redis; stopped after the test."""
    started: list[LocalFederation] = []

    def start(plants: Sequence[PlantSpec], hq_worker: bool = True) -> LocalFederation:
        fed = LocalFederation(
            settings, list(plants), log_dir=tmp_path / "logs", hq_worker=hq_worker
        )
        started.append(fed)
        return fed.start()

    yield start
    for fed in started:
        fed.stop()


@pytest.fixture
def ai4i_plants(ai4i_csv: Path, tmp_path: Path) -> list[PlantSpec]:
    """Three plants holding the AI4I rows of one product type each."""
    from worker.splits import split_ai4i_by_type

    files = split_ai4i_by_type(ai4i_csv, tmp_path / "data")
    return [PlantSpec((site,), path) for site, path in sorted(files.items())]
