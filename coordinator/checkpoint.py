"""Durable local checkpoints of a campaign, written after each closed round.

Layout, for a campaign with 12 closed rounds::

    <checkpoint_dir>/<campaign_id>/
        LATEST                      name of the newest checkpoint written, for tools
        round-000012/
            model.safetensors       global model after round 12
            best.safetensors        best model so far (when it differs)
            server_state.safetensors  server optimizer state (when the strategy has one)
            state.json              CampaignState and the SHA-256 of every file

A checkpoint directory is named after ``state.next_round``, the number of rounds
closed, so ``round-000000`` contains the initial model. Each checkpoint is written
into a temporary directory, fsynced, then renamed into place, and only then is
LATEST replaced. A crash at any step leaves every earlier checkpoint intact.
Loading verifies each file against the hashes in state.json and falls back to
an older checkpoint when the newest does not verify.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.reliability import ExecutionStats, SiteReliability
from plantfed.crashpoints import crash_point
from plantfed.errors import CheckpointError
from plantfed.modelio import content_hash

logger = logging.getLogger(__name__)

#: Version of the state.json layout; loading rejects other versions.
STATE_FORMAT = 1

MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
SERVER_STATE_FILE = "server_state.safetensors"
STATE_FILE = "state.json"
LATEST_FILE = "LATEST"

_ROUND_DIR = re.compile(r"^round-(\d{6,})$")
_TEMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


@dataclass(frozen=True)
class RoundSummary:
    """What one closed round did, kept in the campaign history.

    ``status`` is ``"completed"`` when the round produced a new global model and
    ``"failed"`` otherwise; ``close_reason`` records how its last attempt closed.
    """

    round_index: int
    status: str
    completed_sites: tuple[str, ...]
    failed_sites: tuple[str, ...]
    duration_s: float
    attempts: int = 1
    close_reason: str = ""
    model_hash: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    deadline_s: float | None = None
    timing_reason: str = ""
    response_times_s: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "round_index": self.round_index,
            "status": self.status,
            "completed_sites": list(self.completed_sites),
            "failed_sites": list(self.failed_sites),
            "duration_s": self.duration_s,
            "attempts": self.attempts,
            "close_reason": self.close_reason,
            "model_hash": self.model_hash,
            "metrics": dict(self.metrics),
            "deadline_s": self.deadline_s,
            "timing_reason": self.timing_reason,
            "response_times_s": list(self.response_times_s),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoundSummary:
        """Rebuild a summary written by ``to_json``."""
        values = dict(data)
        values["completed_sites"] = tuple(values["completed_sites"])
        values["failed_sites"] = tuple(values["failed_sites"])
        values["metrics"] = {str(k): float(v) for k, v in values.get("metrics", {}).items()}
        values["response_times_s"] = tuple(float(v) for v in values.get("response_times_s", ()))
        return cls(**values)


@dataclass(frozen=True)
class CampaignState:
    """Everything a coordinator needs to resume a campaign, apart from the weights.

    Attributes
    ----------
    campaign_id
        The campaign's id.
    next_round
        Index of the next round to run, which is also the number of closed rounds.
    global_model_hash
        SHA-256 of the current global model's safetensors bytes.
    best_model_hash, best_metric, best_round
        The best model so far by the early-stopping metric, when known.
    rounds_without_improvement
        Rounds since the metric last improved by ``min_delta``.
    history
        Summaries of the closed rounds, oldest first.
    stats
        Campaign execution statistics.
    reliability
        Reliability record per datasite.
    quarantine
        Per quarantined datasite, the first round index at which it may rejoin.
    last_selected_round
        Per datasite, the last round index that selected it (used by sampling).
    server_state_present
        Whether the strategy's server optimizer state is stored beside the model.
    stopped_reason
        Why the campaign ended, or ``None`` while it runs.
    """

    campaign_id: str
    next_round: int
    global_model_hash: str
    best_model_hash: str | None = None
    best_metric: float | None = None
    best_round: int | None = None
    rounds_without_improvement: int = 0
    history: tuple[RoundSummary, ...] = ()
    stats: ExecutionStats = field(default_factory=ExecutionStats)
    reliability: Mapping[str, SiteReliability] = field(default_factory=dict)
    quarantine: Mapping[str, int] = field(default_factory=dict)
    last_selected_round: Mapping[str, int] = field(default_factory=dict)
    server_state_present: bool = False
    stopped_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "campaign_id": self.campaign_id,
            "next_round": self.next_round,
            "global_model_hash": self.global_model_hash,
            "best_model_hash": self.best_model_hash,
            "best_metric": self.best_metric,
            "best_round": self.best_round,
            "rounds_without_improvement": self.rounds_without_improvement,
            "history": [summary.to_json() for summary in self.history],
            "stats": self.stats.to_json(),
            "reliability": {site: rel.to_json() for site, rel in self.reliability.items()},
            "quarantine": dict(self.quarantine),
            "last_selected_round": dict(self.last_selected_round),
            "server_state_present": self.server_state_present,
            "stopped_reason": self.stopped_reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CampaignState:
        """Rebuild a state written by ``to_json``."""
        reliability = data.get("reliability", {})
        return cls(
            campaign_id=str(data["campaign_id"]),
            next_round=int(data["next_round"]),
            global_model_hash=str(data["global_model_hash"]),
            best_model_hash=data.get("best_model_hash"),
            best_metric=data.get("best_metric"),
            best_round=data.get("best_round"),
            rounds_without_improvement=int(data.get("rounds_without_improvement", 0)),
            history=tuple(RoundSummary.from_json(item) for item in data.get("history", ())),
            stats=ExecutionStats.from_json(data.get("stats", {})),
            reliability={site: SiteReliability.from_json(r) for site, r in reliability.items()},
            quarantine={str(k): int(v) for k, v in data.get("quarantine", {}).items()},
            last_selected_round={
                str(k): int(v) for k, v in data.get("last_selected_round", {}).items()
            },
            server_state_present=bool(data.get("server_state_present", False)),
            stopped_reason=data.get("stopped_reason"),
        )


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint read back from disk.

    ``best_bytes`` is ``None`` when no best model was stored separately, either
    because none is known or because it is the global model itself.
    """

    path: Path
    state: CampaignState
    model_bytes: bytes
    best_bytes: bytes | None = None
    server_state_bytes: bytes | None = None


class _InvalidCheckpointError(Exception):
    """A checkpoint directory that is incomplete or fails verification."""


def checkpoint_name(next_round: int) -> str:
    """Return the directory name of the checkpoint taken after ``next_round`` closed rounds."""
    return f"round-{next_round:06d}"


def write_checkpoint(
    checkpoint_dir: Path,
    state: CampaignState,
    model_bytes: bytes,
    best_bytes: bytes | None = None,
    server_state_bytes: bytes | None = None,
    *,
    keep: int = 3,
) -> Path:
    """Write a checkpoint atomically and keep only the newest ``keep`` checkpoints.

    Parameters
    ----------
    checkpoint_dir
        Root directory; the checkpoint goes under ``<checkpoint_dir>/<campaign_id>/``.
    state
        Campaign state; its hashes must match the bytes given.
    model_bytes, best_bytes, server_state_bytes
        Safetensors bytes of the global model, the best model and the server
        optimizer state.
    keep
        Number of checkpoints kept, the new one included. Checkpoints numbered
        above the new one belong to rounds the resumed campaign discarded and
        are removed too.

    Returns
    -------
    Path
        The new checkpoint directory.

    Raises
    ------
    ValueError
        When a hash in ``state`` does not match its bytes, or ``keep`` < 1.
    OSError
        When the disk write fails; earlier checkpoints are untouched.
    """
    files = _files_to_write(state, model_bytes, best_bytes, server_state_bytes)
    if keep < 1:
        raise ValueError(f"keep must be >= 1, found {keep}")
    campaign_dir = checkpoint_dir / state.campaign_id
    campaign_dir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(campaign_dir)

    manifest = {
        "format": STATE_FORMAT,
        "written_unix_s": time.time(),
        "files": {name: content_hash(data) for name, data in files.items()},
        "state": state.to_json(),
    }
    files[STATE_FILE] = json.dumps(manifest, indent=2, sort_keys=True).encode()

    temp_dir = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=campaign_dir))
    for name, data in files.items():
        _write_synced(temp_dir / name, data)
        crash_point("checkpoint-writing")
    _fsync_dir(temp_dir)

    final_dir = campaign_dir / checkpoint_name(state.next_round)
    _move_into_place(temp_dir, final_dir)
    _fsync_dir(campaign_dir)
    _replace_latest(campaign_dir, final_dir.name)
    logger.info("campaign %s: checkpoint %s written", state.campaign_id, final_dir)

    _prune(campaign_dir, state.next_round, keep)
    return final_dir


def load_latest_checkpoint(checkpoint_dir: Path, campaign_id: str) -> Checkpoint | None:
    """Load the newest checkpoint of a campaign that verifies.

    Checkpoint directories are tried from the highest round down, so a
    checkpoint renamed into place just before a crash (before LATEST was
    replaced) is still found. Each invalid one is logged and skipped.

    Returns
    -------
    Checkpoint or None
        ``None`` when the campaign has no checkpoint directory at all.

    Raises
    ------
    CheckpointError
        When checkpoints exist but none of them verifies; resuming from scratch
        would silently discard them.
    """
    campaign_dir = checkpoint_dir / campaign_id
    candidates = _round_dirs(campaign_dir)
    if not candidates:
        return None

    failures: list[str] = []
    for _, path in reversed(candidates):
        try:
            checkpoint = _read_checkpoint(path, campaign_id)
        except _InvalidCheckpointError as exc:
            logger.warning(
                "campaign %s: checkpoint %s is invalid (%s); trying the previous one",
                campaign_id,
                path,
                exc,
            )
            failures.append(f"{path.name}: {exc}")
            continue
        _warn_if_latest_differs(campaign_dir, path.name, campaign_id)
        return checkpoint
    raise CheckpointError(
        f"campaign {campaign_id}: no valid checkpoint in {campaign_dir}; "
        f"{'; '.join(failures)}. Restore a backup or move the directory away to start over"
    )


def _files_to_write(
    state: CampaignState,
    model_bytes: bytes,
    best_bytes: bytes | None,
    server_state_bytes: bytes | None,
) -> dict[str, bytes]:
    if content_hash(model_bytes) != state.global_model_hash:
        raise ValueError("model_bytes do not match state.global_model_hash")
    files = {MODEL_FILE: model_bytes}
    if best_bytes is not None:
        if content_hash(best_bytes) != state.best_model_hash:
            raise ValueError("best_bytes do not match state.best_model_hash")
        files[BEST_FILE] = best_bytes
    if (server_state_bytes is not None) != state.server_state_present:
        raise ValueError("server_state_bytes must be given exactly when state.server_state_present")
    if server_state_bytes is not None:
        files[SERVER_STATE_FILE] = server_state_bytes
    return files


def _read_checkpoint(path: Path, campaign_id: str) -> Checkpoint:
    try:
        manifest = json.loads((path / STATE_FILE).read_bytes())
        if manifest.get("format") != STATE_FORMAT:
            raise _InvalidCheckpointError(f"state format {manifest.get('format')!r} unsupported")
        hashes: dict[str, str] = manifest["files"]
        state = CampaignState.from_json(manifest["state"])
        contents = {name: (path / name).read_bytes() for name in hashes}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _InvalidCheckpointError(f"unreadable: {exc}") from exc

    for name, data in contents.items():
        if content_hash(data) != hashes[name]:
            raise _InvalidCheckpointError(f"{name} does not match its SHA-256 in {STATE_FILE}")
    if state.campaign_id != campaign_id:
        raise _InvalidCheckpointError(f"belongs to campaign {state.campaign_id!r}")
    if hashes.get(MODEL_FILE) != state.global_model_hash:
        raise _InvalidCheckpointError("model hash differs from state.global_model_hash")
    if BEST_FILE in contents and hashes[BEST_FILE] != state.best_model_hash:
        raise _InvalidCheckpointError("best model hash differs from state.best_model_hash")
    if state.server_state_present and SERVER_STATE_FILE not in contents:
        raise _InvalidCheckpointError(f"{SERVER_STATE_FILE} is missing")
    return Checkpoint(
        path=path,
        state=state,
        model_bytes=contents[MODEL_FILE],
        best_bytes=contents.get(BEST_FILE),
        server_state_bytes=contents.get(SERVER_STATE_FILE),
    )


def _round_dirs(campaign_dir: Path) -> list[tuple[int, Path]]:
    if not campaign_dir.is_dir():
        return []
    found = []
    for entry in campaign_dir.iterdir():
        match = _ROUND_DIR.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def _move_into_place(temp_dir: Path, final_dir: Path) -> None:
    if not final_dir.exists():
        os.rename(temp_dir, final_dir)
        return
    # Rewriting a round (a resumed campaign replaces a checkpoint that failed to
    # verify): move the old directory aside first, because rename cannot replace
    # a non-empty directory.
    aside = Path(tempfile.mkdtemp(prefix=_OLD_PREFIX, dir=final_dir.parent))
    os.rename(final_dir, aside / final_dir.name)
    os.rename(temp_dir, final_dir)
    shutil.rmtree(aside, ignore_errors=True)


def _replace_latest(campaign_dir: Path, name: str) -> None:
    fd, temp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX + "latest-", dir=campaign_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(f"{name}\n".encode())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, campaign_dir / LATEST_FILE)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(campaign_dir)


def _warn_if_latest_differs(campaign_dir: Path, loaded: str, campaign_id: str) -> None:
    try:
        latest = (campaign_dir / LATEST_FILE).read_text().strip()
    except OSError:
        latest = None
    if latest != loaded:
        logger.warning(
            "campaign %s: loaded checkpoint %s, but LATEST names %s",
            campaign_id,
            loaded,
            latest,
        )


def _prune(campaign_dir: Path, written_round: int, keep: int) -> None:
    older = [path for number, path in _round_dirs(campaign_dir) if number < written_round]
    newer = [path for number, path in _round_dirs(campaign_dir) if number > written_round]
    for path in newer:
        logger.warning("removing checkpoint %s, newer than the state just written", path)
        shutil.rmtree(path, ignore_errors=True)
    for path in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(path, ignore_errors=True)


def _remove_leftovers(campaign_dir: Path) -> None:
    # Only one coordinator writes a campaign (it holds the campaign lock), so any
    # temporary entry found here was left by a crashed write.
    for entry in campaign_dir.iterdir():
        if entry.name.startswith((_TEMP_PREFIX, _OLD_PREFIX)):
            logger.info("removing %s, left over by an interrupted checkpoint write", entry)
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
