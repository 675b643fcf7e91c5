"""Where campaign progress lives: a local checkpoint first, then Redis.

After each closed round the state is written to disk atomically, then to Redis.
On resume the newer of the two wins (by ``next_round``), so a Redis restart
without persistence, or a crash between the two writes, loses nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace

import redis

from coordinator.checkpoint import CampaignState, load_latest_checkpoint, write_checkpoint
from coordinator.config import CampaignConfig
from coordinator.context import Hq
from plantfed.errors import BlobNotFoundError, RoundStateError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """A campaign's state with the bytes of its current and best models."""

    state: CampaignState
    model_bytes: bytes
    best_bytes: bytes | None = None
    server_state_bytes: bytes | None = None
    source: str = "new"


def save_progress(hq: Hq, config: CampaignConfig, progress: Progress) -> None:
    """Write the checkpoint, then mirror the state and models into Redis."""
    state = replace(progress.state, server_state_present=progress.server_state_bytes is not None)
    write_checkpoint(
        config.checkpoint_dir,
        state,
        progress.model_bytes,
        best_bytes=progress.best_bytes,
        server_state_bytes=progress.server_state_bytes,
        keep=config.keep_checkpoints,
    )
    hq.blobs.put(progress.model_bytes, hq.settings.model_ttl_s)
    if progress.best_bytes is not None:
        hq.blobs.put(progress.best_bytes, hq.settings.model_ttl_s)
    hq.client.set(hq.keys.campaign(config.id), _state_text(state))


def load_progress(hq: Hq, config: CampaignConfig) -> Progress | None:
    """Return the newest known progress of the campaign, or None for a new campaign.

    Reads only: the campaign stores the model in Redis again before each round.
    """
    from_disk = load_latest_checkpoint(config.checkpoint_dir, config.id)
    from_redis = _load_from_redis(hq, config.id)
    candidates = [p for p in (from_disk, from_redis) if p is not None]
    if not candidates:
        return None
    newest = max(candidates, key=lambda p: p.state.next_round)
    if isinstance(newest, Progress):
        return newest
    logger.debug(
        "Campaign %s: newest progress is checkpoint %s (round %d)",
        config.id,
        newest.path,
        newest.state.next_round,
    )
    return Progress(
        newest.state, newest.model_bytes, newest.best_bytes, newest.server_state_bytes, "checkpoint"
    )


def _load_from_redis(hq: Hq, campaign_id: str) -> Progress | None:
    try:
        text = hq.client.get(hq.keys.campaign(campaign_id))
    except redis.RedisError as exc:
        raise RoundStateError(
            f"campaign {campaign_id}: cannot read state from Redis: {exc}"
        ) from exc
    if text is None:
        return None
    state = CampaignState.from_json(_json_loads(text))
    try:
        model_bytes = hq.blobs.get(state.global_model_hash)
    except BlobNotFoundError:
        logger.warning(
            "Campaign %s: Redis state names model %s but its blob is gone; using the checkpoint",
            campaign_id,
            state.global_model_hash[:12],
        )
        return None
    best = _optional_blob(hq, state.best_model_hash)
    return Progress(state, model_bytes, best, None, "redis")


def _optional_blob(hq: Hq, digest: str | None) -> bytes | None:
    if digest is None:
        return None
    try:
        return hq.blobs.get(digest)
    except BlobNotFoundError:
        return None


def _state_text(state: CampaignState) -> str:
    return json.dumps(state.to_json(), sort_keys=True)


def _json_loads(text: bytes | str) -> dict[str, object]:
    data = json.loads(text)
    assert isinstance(data, dict)
    return data
