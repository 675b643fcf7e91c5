"""Unit tests of atomic campaign checkpoints, crash safety and corruption fallback."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from coordinator.checkpoint import (
    LATEST_FILE,
    CampaignState,
    RoundSummary,
    checkpoint_name,
    load_latest_checkpoint,
    write_checkpoint,
)
from coordinator.reliability import ExecutionStats, SiteReliability, record_outcome
from plantfed.errors import CheckpointError
from plantfed.messages import OutcomeStatus
from plantfed.modelio import content_hash, decode_weights, encode_weights

CAMPAIGN = "c1"


def model_bytes(value: float) -> bytes:
    return encode_weights({"w": np.full((2, 3), value, dtype=np.float32)})


def make_state(next_round: int, model: bytes, **extra: object) -> CampaignState:
    return CampaignState(
        campaign_id=CAMPAIGN,
        next_round=next_round,
        global_model_hash=content_hash(model),
        **extra,  # type: ignore[arg-type]
    )


def write_round(root: Path, next_round: int, keep: int = 3) -> Path:
    model = model_bytes(float(next_round))
    return write_checkpoint(root, make_state(next_round, model), model, keep=keep)


def test_write_then_load_round_trip(tmp_path: Path) -> None:
    model, best, server = model_bytes(1.0), model_bytes(0.5), b"optimizer-moments"
    rel = record_outcome(SiteReliability(), OutcomeStatus.COMPLETED, 4.0, deadline_s=30.0)
    summary = RoundSummary(
        round_index=0,
        status="completed",
        completed_sites=("plant-a",),
        failed_sites=("plant-b",),
        duration_s=4.5,
        metrics={"f1": 0.7},
        timing_reason="defaults",
    )
    state = make_state(
        1,
        model,
        best_model_hash=content_hash(best),
        best_metric=0.7,
        best_round=0,
        history=(summary,),
        stats=ExecutionStats(rounds_completed=1, total_participations=2, datasite_failures=1),
        reliability={"plant-a": rel},
        quarantine={"plant-b": 4},
        last_selected_round={"plant-a": 0},
        server_state_present=True,
    )

    path = write_checkpoint(tmp_path, state, model, best_bytes=best, server_state_bytes=server)
    loaded = load_latest_checkpoint(tmp_path, CAMPAIGN)

    assert path == tmp_path / CAMPAIGN / "round-000001"
    assert loaded is not None
    assert loaded.path == path
    assert loaded.state == state
    assert loaded.model_bytes == model
    assert loaded.best_bytes == best
    assert loaded.server_state_bytes == server
    assert decode_weights(loaded.model_bytes)["w"][0, 0] == 1.0
    assert (tmp_path / CAMPAIGN / LATEST_FILE).read_text() == "round-000001\n"


def test_state_json_round_trip() -> None:
    state = make_state(3, b"m", stopped_reason="early stopping", rounds_without_improvement=2)

    assert CampaignState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_no_checkpoint_returns_none(tmp_path: Path) -> None:
    assert load_latest_checkpoint(tmp_path, CAMPAIGN) is None


def test_keeps_only_last_k(tmp_path: Path) -> None:
    for next_round in range(6):
        write_round(tmp_path, next_round, keep=3)

    names = sorted(p.name for p in (tmp_path / CAMPAIGN).iterdir())

    assert names == [LATEST_FILE, "round-000003", "round-000004", "round-000005"]


def test_write_rejects_hash_mismatch(tmp_path: Path) -> None:
    model = model_bytes(1.0)
    state = make_state(1, model_bytes(2.0))

    with pytest.raises(ValueError, match="global_model_hash"):
        write_checkpoint(tmp_path, state, model)
    with pytest.raises(ValueError, match="server_state_bytes"):
        write_checkpoint(tmp_path, make_state(1, model), model, server_state_bytes=b"x")


def test_crash_before_rename_keeps_previous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_round(tmp_path, 1)

    def crash(*args: object) -> None:
        raise OSError("power lost")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="power lost"):
        write_round(tmp_path, 2)
    monkeypatch.undo()

    loaded = load_latest_checkpoint(tmp_path, CAMPAIGN)
    leftovers = [p for p in (tmp_path / CAMPAIGN).iterdir() if p.name.startswith(".tmp-")]
    assert loaded is not None
    assert loaded.state.next_round == 1
    assert loaded.model_bytes == model_bytes(1.0)
    assert len(leftovers) == 1

    write_round(tmp_path, 2)
    leftovers = [p for p in (tmp_path / CAMPAIGN).iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_half_written_temp_dir_is_ignored(tmp_path: Path) -> None:
    write_round(tmp_path, 4)
    partial = tmp_path / CAMPAIGN / ".tmp-abc123"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00\x01")

    loaded = load_latest_checkpoint(tmp_path, CAMPAIGN)

    assert loaded is not None
    assert loaded.state.next_round == 4


def test_crash_before_latest_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    write_round(tmp_path, 1)

    def crash(*args: object) -> None:
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        write_round(tmp_path, 2)
    monkeypatch.undo()

    with caplog.at_level(logging.WARNING, logger="coordinator.checkpoint"):
        loaded = load_latest_checkpoint(tmp_path, CAMPAIGN)

    assert (tmp_path / CAMPAIGN / LATEST_FILE).read_text() == "round-000001\n"
    assert loaded is not None
    assert loaded.state.next_round == 2
    assert "LATEST names round-000001" in caplog.text


@pytest.mark.parametrize(
    "damage",
    ["flip_model_byte", "truncate_state", "delete_model", "edit_state_hash"],
)
def test_corrupt_newest_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    write_round(tmp_path, 1)
    newest = write_round(tmp_path, 2)
    model_path, state_path = newest / "model.safetensors", newest / "state.json"
    if damage == "flip_model_byte":
        data = bytearray(model_path.read_bytes())
        data[-1] ^= 0xFF
        model_path.write_bytes(bytes(data))
    elif damage == "truncate_state":
        state_path.write_bytes(state_path.read_bytes()[:40])
    elif damage == "delete_model":
        model_path.unlink()
    else:
        manifest = json.loads(state_path.read_text())
        manifest["state"]["global_model_hash"] = "0" * 64
        state_path.write_text(json.dumps(manifest))

    with caplog.at_level(logging.WARNING, logger="coordinator.checkpoint"):
        loaded = load_latest_checkpoint(tmp_path, CAMPAIGN)

    assert loaded is not None
    assert loaded.state.next_round == 1
    assert loaded.model_bytes == model_bytes(1.0)
    assert "checkpoint" in caplog.text
    assert "round-000002 is invalid" in caplog.text


def test_rewrite_replaces_corrupt_checkpoint(tmp_path: Path) -> None:
    write_round(tmp_path, 1)
    newest = write_round(tmp_path, 2)
    (newest / "model.safetensors").write_bytes(b"garbage")

    resumed = load_latest_checkpoint(tmp_path, CAMPAIGN)
    assert resumed is not None
    path = write_round(tmp_path, resumed.state.next_round + 1)
    loaded = load_latest_checkpoint(tmp_path, CAMPAIGN)

    assert path.name == checkpoint_name(2)
    assert loaded is not None
    assert loaded.state.next_round == 2
    assert loaded.model_bytes == model_bytes(2.0)


def test_newer_checkpoints_removed_on_rewind(tmp_path: Path) -> None:
    for next_round in (1, 2, 3):
        write_round(tmp_path, next_round)

    write_round(tmp_path, 2)

    names = sorted(p.name for p in (tmp_path / CAMPAIGN).iterdir())
    assert names == [LATEST_FILE, "round-000001", "round-000002"]


def test_all_corrupt_raises(tmp_path: Path) -> None:
    only = write_round(tmp_path, 1)
    (only / "state.json").write_text("{")

    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        load_latest_checkpoint(tmp_path, CAMPAIGN)
