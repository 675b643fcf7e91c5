"""Operators watch plants in Flower: it lists each plant worker under its site name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from plantfed.redis_server import free_port

pytestmark = pytest.mark.integration


def test_flower_lists_plant_workers(federation, ai4i_plants, settings, tmp_path):
    federation(ai4i_plants)
    port = free_port()
    command = [
        sys.executable, "-m", "celery", "--broker", settings.broker_url, "flower",
        "--address=127.0.0.1", f"--port={port}",
    ]  # fmt: skip
    env = {**os.environ, "FLOWER_UNAUTHENTICATED_API": "true"}
    log = (tmp_path / "flower.log").open("wb")
    flower = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        workers = poll_workers(port, expected=3, timeout_s=30.0)
    finally:
        flower.terminate()
        flower.wait(10)
        log.close()

    names = sorted(name.split("@")[0] for name in workers)
    assert names == ["plant-h", "plant-l", "plant-m"]


def poll_workers(port: int, expected: int, timeout_s: float) -> dict[str, object]:
    url = f"http://127.0.0.1:{port}/api/workers?refresh=1"
    give_up = time.monotonic() + timeout_s
    workers: dict[str, object] = {}
    while time.monotonic() < give_up:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                workers = json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            time.sleep(0.5)
            continue
        plants = {name: info for name, info in workers.items() if name.startswith("plant-")}
        if len(plants) >= expected:
            return plants
        time.sleep(0.5)
    raise AssertionError(f"Flower listed {sorted(workers)} after {timeout_s} s")
