"""The demo and ``plantfed sites`` as a user runs them, with real processes.

Data is synthetic AI4I rows, so these tests run without the real data sets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from coordinator.demo_data import split_rows
from coordinator.localfed import LocalFederation, PlantSpec
from plantfed.errors import PlantfedError
from plantfed.redis_server import RedisServer
from plantfed.settings import Settings
from tests.conftest import TEST_SETTINGS
from worker.splits import AI4I_HEADER, write_synthetic_ai4i

pytestmark = pytest.mark.integration


def plantfed(
    env: dict[str, str], *args: str, timeout_s: float = 120.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def synthetic_plants(tmp_path: Path, sites: int) -> dict[str, Path]:
    source = tmp_path / "synthetic.csv"
    write_synthetic_ai4i(source, rows=600, seed=3)
    (tmp_path / "plants").mkdir()
    return split_rows(source, tmp_path / "plants", sites)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_redis_server_dies_with_killed_parent(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from plantfed.redis_server import RedisServer\n"
        "server = RedisServer().start()\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    redis_pid = int(parent.stdout.readline())

    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    give_up = time.monotonic() + 5.0
    while process_exists(redis_pid) and time.monotonic() < give_up:
        time.sleep(0.05)

    alive = process_exists(redis_pid)
    if alive:
        os.kill(redis_pid, signal.SIGKILL)
    assert not alive


def test_start_fails_fast_on_unusable_data(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "header-only.csv"
    bad.write_text(",".join(AI4I_HEADER) + "\n")
    fed = LocalFederation(
        settings, [PlantSpec(("plant-a",), bad)], log_dir=tmp_path / "logs", hq_worker=False
    )

    started = time.monotonic()
    with pytest.raises(PlantfedError) as error:
        fed.start()
    elapsed_s = time.monotonic() - started

    assert "plant-a: local data unusable" in str(error.value)
    assert "no data rows" in str(error.value)
    assert elapsed_s < 20.0
    assert fed.stopped_processes == 1


def test_sites_reports_killed_plant_lost(redis_server: RedisServer, tmp_path: Path) -> None:
    # A liveness key outlives the whole check, so only missing heartbeats can show the loss.
    settings = Settings(
        key_prefix="plantfed-test",
        liveness_interval_s=1.0,
        liveness_ttl_s=60.0,
    ).with_broker(redis_server.url)
    files = synthetic_plants(tmp_path, 2)
    plants = [PlantSpec((site,), path) for site, path in sorted(files.items())]
    with LocalFederation(settings, plants, log_dir=tmp_path / "logs") as fed:
        fed.plant_processes["plant-2"].signal_group(signal.SIGKILL)

        shown = plantfed(settings.to_env(), "sites", "--json")

    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    verdicts = {row["site_id"]: row for row in data["sites"]}
    assert verdicts["plant-2"]["verdict"] == "lost"
    assert "no heartbeat" in verdicts["plant-2"]["reason"]
    assert verdicts["plant-1"]["verdict"] == "ready"
    hq_workers = [worker["worker"] for worker in data["hq_workers"]]
    assert len(hq_workers) == 1
    assert hq_workers[0].startswith("hq@")


def test_demo_on_shared_broker_uses_own_names(redis_server: RedisServer, tmp_path: Path) -> None:
    source = tmp_path / "synthetic.csv"
    write_synthetic_ai4i(source, rows=600, seed=5)
    summary = tmp_path / "summary.json"
    env = {**TEST_SETTINGS.to_env(), "PLANTFED_BROKER_URL": redis_server.url}
    env.pop("PLANTFED_RESULT_BACKEND", None)

    ran = plantfed(
        env,
        "demo",
        "--data",
        str(source),
        "--sites",
        "2",
        "--rounds",
        "1",
        "--summary",
        str(summary),
        timeout_s=180.0,
    )

    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "demo sites are named demo-" in ran.stdout
    sites = json.loads(summary.read_text())["sites"]
    assert len(sites) == 2
    assert all(
        site.startswith("demo-") and site.endswith(("-plant-1", "-plant-2")) for site in sites
    )
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.keys("plantfed-test:*") == []
        assert client.keys("plantfed-test-demo-*")
    finally:
        client.close()
    assert "stopped 3 workers" in ran.stderr
