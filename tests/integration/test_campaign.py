"""Campaigns on the real AI4I data, run by the real ``plantfed`` command.

Coordinators run as subprocesses so that tests can kill them the way a
scheduler host dies, then run the same command again.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.checkpoint import load_latest_checkpoint
from coordinator.lock import CampaignLock
from plantfed.keys import Keys, RoundRef
from plantfed.redisconn import connect
from plantfed.roundstore import RoundState, RoundStore
from plantfed.settings import Settings

pytestmark = pytest.mark.integration


def write_campaign(tmp_path: Path, rounds: int, campaign_id: str = "ai4i-test") -> Path:
    path = tmp_path / "campaign.toml"
    path.write_text(
        f"""
id = "{campaign_id}"
rounds = {rounds}
sites = ["plant-h", "plant-l", "plant-m"]
min_sites = 2
checkpoint_dir = "checkpoints"

[trainer]
name = "ai4i-mlp"

[round]
preset = "plant-lan"
deadline_s = 60

[failures]
round_retries = 2
retry_backoff_s = 0.5
""",
        encoding="utf-8",
    )
    return path


def run_coordinator(
    settings: Settings, *args: str, crash_at: str | None = None, timeout_s: float = 180.0
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.to_env()}
    if crash_at:
        env["PLANTFED_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def closed_lineage(settings: Settings, campaign_id: str, rounds: int) -> list[tuple[str, str]]:
    """Return (model in, model out) of the one successful attempt of every round."""
    assert settings.broker_url
    store = RoundStore(connect(settings.broker_url), Keys(settings.key_prefix))
    lineage = []
    for index in range(rounds):
        successes = []
        attempt = 1
        while (record := store.load(RoundRef(campaign_id, index, attempt))) is not None:
            assert record.state is RoundState.CLOSED
            assert record.result is not None
            if record.result["success"]:
                successes.append(record)
            attempt += 1
        assert len(successes) == 1, f"round {index}: {len(successes)} successful attempts"
        result = successes[0].result
        assert result is not None
        lineage.append((result["model_hash_in"], result["model_hash_out"]))
    return lineage


def assert_chained(lineage: list[tuple[str, str]]) -> None:
    for (_, out_previous), (in_next, _) in itertools.pairwise(lineage):
        assert in_next == out_previous


def test_demo_command_on_real_data(ai4i_csv, tmp_path):
    from worker.trainers.ai4i import Ai4iTrainer

    summary_path = tmp_path / "out.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.cli",
            "demo",
            "--data",
            str(ai4i_csv),
            "--sites",
            "3",
            "--rounds",
            "10",
            "--summary",
            str(summary_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("PLANTFED_")},
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["all_rounds_completed_by_all_sites"] is True
    assert summary["rounds_completed"] == 10
    assert summary["datasite_failures"] == 0
    trainer = Ai4iTrainer()
    data = trainer.load_data(ai4i_csv)
    weights = trainer.initial_weights(seed=0)
    central = trainer.train(weights, data, {"epochs": 30}, deadline_monotonic_s=float("inf"))
    central_f1 = trainer.summarize(trainer.evaluate(central.weights, data))["f1"]
    assert summary["federated_f1"] >= 0.9 * central_f1


def test_campaign_resumes_across_invocations(federation, ai4i_plants, settings, tmp_path):
    federation(ai4i_plants)
    config = write_campaign(tmp_path, rounds=4)

    first = run_coordinator(settings, "campaign", "run", str(config), "--max-rounds", "2")
    second = run_coordinator(settings, "campaign", "run", str(config), "--max-rounds", "2")
    status = run_coordinator(settings, "campaign", "status", str(config), "--json")
    report = run_coordinator(
        settings, "campaign", "report", str(config), "--out", str(tmp_path / "report.html")
    )

    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    shown = json.loads(status.stdout)
    assert shown["summary"]["rounds_run"] == 4
    assert shown["summary"]["rounds_completed"] == 4
    assert shown["report"]["stats"]["total_participations"] == 12
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report.html").read_text().count("<svg") == 3
    assert_chained(closed_lineage(settings, "ai4i-test", 4))
    checkpoint = load_latest_checkpoint(tmp_path / "checkpoints", "ai4i-test")
    assert checkpoint is not None
    assert checkpoint.state.next_round == 4
    assert [h.round_index for h in checkpoint.state.history] == [0, 1, 2, 3]


def test_second_coordinator_refused(federation, ai4i_plants, settings, tmp_path):
    fed = federation(ai4i_plants)
    config = write_campaign(tmp_path, rounds=2)
    lock = CampaignLock(fed.hq.client, fed.hq.keys, "ai4i-test")
    lock.acquire()
    try:
        refused = run_coordinator(settings, "campaign", "run", str(config))
    finally:
        lock.release()

    assert refused.returncode != 0
    assert lock.holder in refused.stderr
    assert "--wait-lock" in refused.stderr


def test_redis_restart_between_rounds(federation, ai4i_plants, settings, redis_server, tmp_path):
    fed = federation(ai4i_plants)
    config = write_campaign(tmp_path, rounds=4)
    first = run_coordinator(settings, "campaign", "run", str(config), "--max-rounds", "2")
    assert first.returncode == 0, first.stderr[-3000:]

    redis_server.restart()
    fed.wait_ready(fed.site_ids, timeout_s=60)
    second = run_coordinator(settings, "campaign", "run", str(config))

    assert second.returncode == 0, second.stderr[-3000:]
    assert "from checkpoint" in second.stderr
    checkpoint = load_latest_checkpoint(tmp_path / "checkpoints", "ai4i-test")
    assert checkpoint is not None
    assert checkpoint.state.next_round == 4
    assert [h.round_index for h in checkpoint.state.history] == [0, 1, 2, 3]
    assert checkpoint.state.history[2].model_hash != checkpoint.state.history[1].model_hash


@pytest.mark.parametrize(
    "crash_at", ["round-opened", "round-dispatched", "round-closing", "checkpoint-writing"]
)
def test_coordinator_killed_mid_round(federation, ai4i_plants, settings, tmp_path, crash_at):
    # Without the HQ worker the coordinator is the only closer, so it is the one
    # that passes the gate and dies holding the round in state closing.
    federation(ai4i_plants, hq_worker=crash_at != "round-closing")
    config = write_campaign(tmp_path, rounds=3)
    first = run_coordinator(settings, "campaign", "run", str(config), "--max-rounds", "1")
    assert first.returncode == 0, first.stderr[-3000:]

    killed = run_coordinator(settings, "campaign", "run", str(config), crash_at=crash_at)
    after_kill = load_latest_checkpoint(tmp_path / "checkpoints", "ai4i-test")
    rerun = run_coordinator(settings, "campaign", "run", str(config), "--wait-lock", "30s")

    assert killed.returncode == -9
    assert after_kill is not None
    assert after_kill.state.next_round == 1
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    lineage = closed_lineage(settings, "ai4i-test", 3)
    assert_chained(lineage)
    checkpoint = load_latest_checkpoint(tmp_path / "checkpoints", "ai4i-test")
    assert checkpoint is not None
    assert [h.round_index for h in checkpoint.state.history] == [0, 1, 2]
    assert [h.model_hash for h in checkpoint.state.history] == [out for _, out in lineage]
