"""Site health as a table for terminals, or as JSON for scripts."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from coordinator.health import SiteHealth
from coordinator.heartbeats import WorkerBeat

_COLUMNS = ("SITE", "VERDICT", "WORKER", "SAMPLES", "TRAINERS", "HEARTBEAT", "REASON")


def site_health_json(health: Mapping[str, SiteHealth]) -> list[dict[str, Any]]:
    """Return one JSON object per site, with the verdict and its evidence."""
    rows = []
    for site in health.values():
        live = site.liveness
        rows.append(
            {
                "site_id": site.site_id,
                "verdict": site.verdict.value,
                "reason": site.reason,
                "worker": live.worker if live else None,
                "samples": live.samples if live else None,
                "trainers": list(live.trainers) if live else [],
                "busy": live.busy if live else None,
                "version": live.version if live else None,
                "heartbeat_age_s": site.heartbeat_age_s,
                "drained_until_unix_s": site.drained_until_unix_s,
            }
        )
    return rows


def format_site_table(health: Mapping[str, SiteHealth]) -> str:
    """Return a plain-text table with one line per site."""
    if not health:
        return "no sites known: no plant worker has written a liveness key"
    rows = [_COLUMNS]
    for site in health.values():
        live = site.liveness
        beat = f"{site.heartbeat_age_s:.1f}s ago" if site.heartbeat_age_s is not None else "-"
        rows.append(
            (
                site.site_id,
                site.verdict.value,
                live.worker if live else "-",
                str(live.samples) if live else "-",
                ",".join(live.trainers) if live else "-",
                beat,
                site.reason,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def format_hq_workers(
    beats: Sequence[WorkerBeat], window_s: float, now_monotonic_s: float | None = None
) -> str:
    """Return one line naming the HQ workers seen on the event stream, or saying none was."""
    if not beats:
        return (
            f"HQ workers: none seen on the event stream in {window_s:.1f} s; "
            "start one with plantfed hq-worker"
        )
    now_s = time.monotonic() if now_monotonic_s is None else now_monotonic_s
    described = []
    for beat in beats:
        state = "offline" if beat.offline else "online"
        described.append(
            f"{beat.worker} ({state}, heartbeat {now_s - beat.last_seen_monotonic_s:.1f}s ago)"
        )
    return "HQ workers: " + ", ".join(described)
