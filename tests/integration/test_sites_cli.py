"""The operators' site commands, run as the real ``plantfed`` CLI against live workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from plantfed.settings import Settings

pytestmark = pytest.mark.integration


def plantfed(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args],
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )


def verdicts(settings: Settings) -> dict[str, str]:
    shown = plantfed(settings, "sites", "--json")
    assert shown.returncode == 0, shown.stderr
    return {row["site_id"]: row["verdict"] for row in json.loads(shown.stdout)["sites"]}


def test_sites_table_drain_and_undrain(federation, ai4i_plants, settings):
    federation(ai4i_plants)

    before = verdicts(settings)
    table = plantfed(settings, "sites")
    drained = plantfed(settings, "sites", "drain", "plant-h", "--for", "1h", "--reason", "pump")
    during = verdicts(settings)
    undrained = plantfed(settings, "sites", "undrain", "plant-h")
    after = verdicts(settings)

    assert before == {"plant-h": "ready", "plant-l": "ready", "plant-m": "ready"}
    assert "plant-l@" in table.stdout
    assert "VERDICT" in table.stdout
    assert drained.returncode == 0
    assert during["plant-h"] == "draining"
    assert during["plant-l"] == "ready"
    assert "undrained" in undrained.stdout
    assert after["plant-h"] == "ready"


def test_sites_wait_names_missing(federation, ai4i_plants, settings):
    federation(ai4i_plants[:2])

    enough = plantfed(settings, "sites", "wait", "--min", "2", "--timeout", "5s")
    short = plantfed(
        settings,
        "sites",
        "wait",
        "--min",
        "3",
        "--timeout",
        "2s",
        "--site",
        "plant-h",
        "--site",
        "plant-l",
        "--site",
        "plant-m",
    )

    assert enough.returncode == 0
    assert short.returncode == 1
    missing = [line for line in short.stdout.splitlines() if line.startswith("missing:")]
    assert len(missing) == 1
    assert "no liveness key" in missing[0]
    assert "plant-m" in missing[0] or "plant-h" in missing[0]


def test_drain_duration_rejected_when_invalid(settings):
    bad = plantfed(settings, "sites", "drain", "plant-h", "--for", "soon")

    assert bad.returncode == 2
    assert "invalid duration 'soon'" in bad.stderr


def test_stopped_site_listed_lost_until_forgotten(federation, ai4i_plants, settings):
    fed = federation(ai4i_plants)

    fed.plant_processes["plant-h"].stop()
    while_known = verdicts(settings)
    forgotten = plantfed(settings, "sites", "forget", "plant-h")
    after = verdicts(settings)

    assert while_known["plant-h"] == "lost"
    assert "forgotten" in forgotten.stdout
    assert "plant-h" not in after
    assert after["plant-l"] == "ready"
