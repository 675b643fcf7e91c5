"""One health verdict per datasite, from liveness keys, heartbeats and drain flags."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

import redis

from coordinator.heartbeats import HeartbeatMonitor
from plantfed.keys import Keys
from plantfed.messages import SiteLiveness

logger = logging.getLogger(__name__)


class Verdict(StrEnum):
    """Health of a datasite as the coordinator judges it."""

    READY = "ready"
    BUSY = "busy"
    STALE = "stale"
    LOST = "lost"
    DRAINING = "draining"
    FAULTY = "faulty"
    VETOED = "vetoed"

    @property
    def can_train(self) -> bool:
        """Whether a round may select a site with this verdict (a busy one queues the task)."""
        return self in (Verdict.READY, Verdict.BUSY)


@dataclass(frozen=True)
class SiteHealth:
    """Verdict on one site, with the evidence behind it."""

    site_id: str
    verdict: Verdict
    reason: str
    liveness: SiteLiveness | None
    heartbeat_age_s: float | None
    drained_until_unix_s: float | None = None

    @property
    def worker(self) -> str | None:
        return self.liveness.worker if self.liveness else None


#: A deployment's veto: returns a reason to keep the site out of the round, or None.
HealthHook = Callable[[SiteHealth], str | None]


@dataclass(frozen=True)
class HealthThresholds:
    """Age limits of the evidence before a site counts as stale or lost."""

    liveness_interval_s: float
    lost_after_s: float


def known_sites(client: redis.Redis, keys: Keys) -> list[str]:
    """Return every site that ever wrote a liveness key and was not forgotten, sorted."""
    members = cast(set[bytes], client.smembers(keys.site_index()))
    return sorted(member.decode() for member in members)


def forget_site(client: redis.Redis, keys: Keys, site_id: str) -> bool:
    """Remove a retired site from the known sites and drop its drain flag."""
    pipe = client.pipeline(transaction=True)
    pipe.srem(keys.site_index(), site_id)
    pipe.delete(keys.site_drain(site_id))
    removed, _ = pipe.execute()
    return bool(removed)


def _parse_liveness(names: list[bytes], values: list[bytes | None]) -> dict[str, SiteLiveness]:
    records: dict[str, SiteLiveness] = {}
    for name, value in zip(names, values, strict=True):
        if value is None:
            continue
        try:
            record = SiteLiveness.loads(value)
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning("Ignoring malformed liveness key %s: %s", name.decode(), exc)
            continue
        records[record.site_id] = record
    return records


def judge_site(
    site_id: str,
    liveness: SiteLiveness | None,
    drain: dict[str, str] | None,
    monitor: HeartbeatMonitor | None,
    thresholds: HealthThresholds,
    now_unix_s: float,
) -> SiteHealth:
    """Combine the evidence on one site into a verdict with its reason."""
    beat = monitor.beat(liveness.worker) if monitor and liveness else None
    beat_age_s = time.monotonic() - beat.last_seen_monotonic_s if beat else None

    def health(verdict: Verdict, reason: str) -> SiteHealth:
        until = float(drain["until_unix_s"]) if drain and drain.get("until_unix_s") else None
        return SiteHealth(site_id, verdict, reason, liveness, beat_age_s, until)

    if drain is not None:
        return health(
            Verdict.DRAINING, f"drained by operator: {drain.get('reason') or 'no reason'}"
        )
    if liveness is None:
        return health(Verdict.LOST, "no liveness key: worker stopped, or unreachable for its TTL")
    if beat is not None and beat.offline:
        # A warm shutdown announces offline at once, then finishes its running tasks and
        # deletes the liveness key; until then the site is leaving, not lost.
        return health(
            Verdict.DRAINING,
            f"worker {beat.worker} announced it is shutting down; finishing running tasks",
        )
    listening_s = monitor.listening_s() if monitor else 0.0
    if monitor is not None and listening_s >= thresholds.lost_after_s:
        silent_s = beat_age_s if beat_age_s is not None else listening_s
        if silent_s >= thresholds.lost_after_s:
            return health(Verdict.LOST, f"no heartbeat from {liveness.worker} for {silent_s:.1f} s")
    if liveness.data_error:
        return health(Verdict.FAULTY, f"local data unusable: {liveness.data_error}")
    age_s = now_unix_s - liveness.written_unix_s
    if age_s > 2 * thresholds.liveness_interval_s + 1.0:
        return health(Verdict.STALE, f"liveness key last written {age_s:.1f} s ago")
    if liveness.busy or (beat is not None and beat.active_tasks > 0):
        return health(Verdict.BUSY, "running a task")
    return health(Verdict.READY, f"liveness {age_s:.1f} s old, {liveness.samples} samples")


def apply_hooks(health: SiteHealth, hooks: Iterable[HealthHook]) -> SiteHealth:
    """Return ``health`` vetoed by the first hook that objects; a failing hook vetoes too."""
    if not health.verdict.can_train:
        return health
    for hook in hooks:
        try:
            reason = hook(health)
        except Exception as exc:  # a broken hook must not stop the round
            reason = f"health hook {getattr(hook, '__name__', hook)!r} failed: {exc!r}"
            logger.warning("Site %s: %s", health.site_id, reason)
        if reason:
            return SiteHealth(
                health.site_id, Verdict.VETOED, reason, health.liveness, health.heartbeat_age_s
            )
    return health


def _read_evidence(
    client: redis.Redis, keys: Keys, ids: list[str]
) -> tuple[dict[str, SiteLiveness], dict[str, dict[str, str]]]:
    """Read the liveness keys and drain flags of ``ids`` in one round trip."""
    if not ids:
        return {}, {}
    names = [keys.site_alive(s).encode() for s in ids]
    pipe = client.pipeline(transaction=False)
    pipe.mget(names)
    pipe.mget([keys.site_drain(s) for s in ids])
    alive, drained = cast(list[list[bytes | None]], pipe.execute())
    drains = {s: json.loads(v) for s, v in zip(ids, drained, strict=True) if v is not None}
    return _parse_liveness(names, alive), drains


def read_site_health(
    client: redis.Redis,
    keys: Keys,
    monitor: HeartbeatMonitor | None,
    thresholds: HealthThresholds,
    site_ids: Iterable[str] | None = None,
    hooks: Iterable[HealthHook] = (),
) -> dict[str, SiteHealth]:
    """Judge ``site_ids``, or every known site when None, in site id order.

    A known site whose worker is gone stays in the result, judged lost, until an
    operator forgets it, so a plant that vanished is never silently dropped.
    """
    ids = known_sites(client, keys) if site_ids is None else sorted(set(site_ids))
    liveness, drains = _read_evidence(client, keys, ids)
    now = time.time()
    hook_list = list(hooks)
    verdicts = {}
    for site_id in ids:
        health = judge_site(
            site_id, liveness.get(site_id), drains.get(site_id), monitor, thresholds, now
        )
        verdicts[site_id] = apply_hooks(health, hook_list)
    return verdicts


def drain_site(
    client: redis.Redis, keys: Keys, site_id: str, reason: str, for_s: float | None
) -> None:
    """Take a site out of future rounds, for ``for_s`` seconds or until undrained."""
    until = time.time() + for_s if for_s else None
    value = json.dumps({"reason": reason, "until_unix_s": until or ""})
    client.set(keys.site_drain(site_id), value, px=int(for_s * 1000) if for_s else None)


def undrain_site(client: redis.Redis, keys: Keys, site_id: str) -> bool:
    """Return the site to service; False when it was not drained."""
    return bool(client.delete(keys.site_drain(site_id)))
