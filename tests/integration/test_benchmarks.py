"""The aggregation and poisoning benchmarks run end to end and print the JSON they document.

Their speed and quality targets are read from their printed figures, not asserted
here. These tests check that each benchmark runs, covers its cases and reports
results that are correct by construction: an exact mean, and attackers whose NaN
or scaled updates never enter the guarded merge.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(*args: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", *args, "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    document: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return document


def test_aggregate_benchmark_reports_every_case() -> None:
    document = run_benchmark(
        "bench.aggregate", "--updates", "3", "12", "--params", "20000",
        "--max-robust-updates", "3",
    )  # fmt: skip

    cases = {(r["strategy"], r["updates"]): r for r in document["results"]}
    assert set(cases) == {
        ("fedavg", 3), ("fedavg", 12), ("fedavg-unscreened", 3), ("fedavg-unscreened", 12),
        ("median", 3), ("trimmed-mean", 3),
    }  # fmt: skip
    for (strategy, updates), result in cases.items():
        assert result["params"] == 20000
        assert result["included"] == updates
        assert result["merge_s"] > 0
        assert result["numpy_pass_s"] > 0
        assert result["peak_mib"] >= 0
        if strategy.startswith("fedavg"):
            assert result["max_abs_error"] < 1e-5


def test_poison_benchmark_keeps_nan_and_scaled_updates_out(shared_data_dir: Path) -> None:
    document = run_benchmark("bench.poison", "--quick")

    assert 0.5 < document["clean_f1"] <= 1.0
    runs = {(r["attack"], r["strategy"]): r for r in document["runs"]}
    for attack in ("nan", "scaled", "flip"):
        for strategy in ("fedavg-unguarded", "fedavg-guarded"):
            assert runs[(attack, strategy)]["rounds_completed"] > 0
            assert runs[(attack, strategy)]["honest_failures"] == 0
    for attack in ("nan", "scaled"):
        assert runs[(attack, "fedavg-guarded")]["attacker_merged_rounds"] == 0
    # Unguarded FedAvg merges the scaled update, which ruins the model.
    assert runs[("scaled", "fedavg-unguarded")]["attacker_merged_rounds"] > 0
