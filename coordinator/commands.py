"""Implementations of the ``plantfed`` subcommands other than the demo."""

from __future__ import annotations

import argparse
import json
import math
import socket
import sys
import time
from typing import Any

from coordinator.context import Hq
from coordinator.health import (
    HealthThresholds,
    drain_site,
    forget_site,
    known_sites,
    read_site_health,
    undrain_site,
)
from coordinator.heartbeats import HeartbeatMonitor, WorkerBeat
from coordinator.manager import ParallelExecutionManager
from coordinator.sitetable import format_hq_workers, format_site_table, site_health_json
from plantfed.errors import ConfigError
from plantfed.settings import Settings

#: Shortest time ``plantfed sites`` listens to heartbeats before judging, in seconds.
MIN_SITES_LISTEN_S = 2.5

#: Extra seconds ``plantfed sites`` allows the event stream to connect before it listens.
EVENT_CONNECT_GRACE_S = 5.0

#: Name prefix of HQ workers (``plantfed hq-worker`` names itself ``hq@<host>``).
HQ_WORKER_PREFIX = "hq@"


def run_worker(settings: Settings, args: argparse.Namespace) -> int:
    """``plantfed worker``: serve one plant's queue until stopped."""
    from worker.daemon import PlantWorkerOptions, run_plant_worker

    _require_broker(settings)
    options = PlantWorkerOptions(
        site_ids=tuple(args.sites),
        data_path=args.data,
        trainers=tuple(args.trainers or ["ai4i-mlp"]),
        plugins=tuple(args.plugins),
        concurrency=args.concurrency,
        hostname=args.hostname,
        loglevel=args.log_level,
    )
    run_plant_worker(settings, options)
    return 0


def run_hq_worker(settings: Settings, args: argparse.Namespace) -> int:
    """``plantfed hq-worker``: run the worker that executes the round-closing chord body."""
    from plantfed.celery_app import configure_app

    _require_broker(settings)
    app = configure_app(settings)
    import coordinator.tasks  # noqa: F401  (registers the chord body on the app)

    host = args.hostname or socket.gethostname()
    app.worker_main(
        [
            "worker",
            "--hostname",
            f"hq@{host}",
            "--queues",
            settings.hq_queue,
            "--pool",
            "prefork",
            "--concurrency",
            str(args.concurrency),
            "--loglevel",
            args.log_level,
            "--task-events",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


def sites_listen_s(settings: Settings) -> float:
    """Return how long ``plantfed sites`` listens to heartbeats, in seconds.

    The window spans at least two heartbeats of a live worker, so a worker
    silent for all of it is lost. Plant workers round their heartbeat interval
    up to whole seconds, at least 1 s (see ``worker.daemon``), and so does this.
    """
    worker_interval_s = max(1.0, float(math.ceil(settings.heartbeat_interval_s)))
    return max(MIN_SITES_LISTEN_S, 2.5 * worker_interval_s)


def run_sites(settings: Settings, args: argparse.Namespace) -> int:
    """``plantfed sites``: the health table, drain, undrain, or wait for readiness."""
    _require_broker(settings)
    if args.site_command is None:
        return _show_sites(settings, args)
    hq = Hq.connect(settings, listen=args.site_command == "wait")
    try:
        if args.site_command == "drain":
            _warn_unknown_site(hq, args.site)
            drain_site(hq.client, hq.keys, args.site, args.reason, args.for_s)
            until = f" for {args.for_s:g} s" if args.for_s else " until undrained"
            print(f"site {args.site} drained{until}: {args.reason}")
            return 0
        if args.site_command == "undrain":
            was = undrain_site(hq.client, hq.keys, args.site)
            print(f"site {args.site} {'undrained' if was else 'was not drained'}")
            return 0
        if args.site_command == "forget":
            was = forget_site(hq.client, hq.keys, args.site)
            print(f"site {args.site} {'forgotten' if was else 'was not known'}")
            return 0
        return _wait_for_sites(hq, args)
    finally:
        hq.close()


def _show_sites(settings: Settings, args: argparse.Namespace) -> int:
    hq = Hq.connect(settings)
    try:
        hq.client.ping()  # fails fast on an unreachable broker, before the monitor warns
        monitor = HeartbeatMonitor(hq.app)
        hq.monitor = monitor.start()
        window_s = sites_listen_s(settings)
        _listen(monitor, window_s)
        thresholds = HealthThresholds(settings.liveness_interval_s, lost_after_s=window_s)
        health = read_site_health(hq.client, hq.keys, monitor, thresholds)
        hq_workers = monitor.beats(HQ_WORKER_PREFIX)
        if args.json:
            data = {
                "sites": site_health_json(health),
                "hq_workers": [_beat_json(beat) for beat in hq_workers],
            }
            print(json.dumps(data, indent=2))
        else:
            print(format_site_table(health))
            print(format_hq_workers(hq_workers, window_s))
        return 0
    finally:
        hq.close()


def _listen(monitor: HeartbeatMonitor, window_s: float) -> None:
    """Wait until ``monitor`` has consumed the event stream for ``window_s`` without a break.

    Gives up ``EVENT_CONNECT_GRACE_S`` later when the stream cannot be consumed;
    the verdicts then rest on liveness keys alone.
    """
    give_up = time.monotonic() + window_s + EVENT_CONNECT_GRACE_S
    while monitor.listening_s() < window_s and time.monotonic() < give_up:
        time.sleep(0.05)


def _beat_json(beat: WorkerBeat) -> dict[str, Any]:
    return {
        "worker": beat.worker,
        "heartbeat_age_s": round(time.monotonic() - beat.last_seen_monotonic_s, 3),
        "offline": beat.offline,
    }


def _warn_unknown_site(hq: Hq, site_id: str) -> None:
    known = known_sites(hq.client, hq.keys)
    if site_id in known:
        return
    print(
        f"warning: no worker has registered site {site_id} (known sites: "
        f"{', '.join(known) or 'none'}); draining it anyway, so a worker that starts "
        "serving it stays out of rounds until it is undrained",
        file=sys.stderr,
    )


def wait_min_sites(args: argparse.Namespace) -> int:
    """Return the ready sites ``sites wait`` needs: ``--min``, else one per ``--site``, else 2."""
    if args.min_sites is not None:
        return int(args.min_sites)
    return len(set(args.expected)) if args.expected else 2


def _wait_for_sites(hq: Hq, args: argparse.Namespace) -> int:
    manager = ParallelExecutionManager(hq)
    readiness = manager.wait_for_datasites_ready(
        min_datasites=wait_min_sites(args), timeout_s=args.timeout_s, expected=args.expected
    )
    print(readiness.describe())
    return 0 if readiness.ready else 1


def run_campaign_command(settings: Settings, args: argparse.Namespace) -> int:
    """``plantfed campaign run|status``."""
    from coordinator.campaign_cli import (
        campaign_check,
        campaign_report,
        campaign_run,
        campaign_status,
    )

    if args.campaign_command == "check":
        return campaign_check(settings, args)
    _require_broker(settings)
    if args.campaign_command == "run":
        return campaign_run(settings, args)
    if args.campaign_command == "report":
        return campaign_report(settings, args)
    return campaign_status(settings, args)


def _require_broker(settings: Settings) -> None:
    if not settings.broker_url:
        raise ConfigError(
            "no broker configured: pass --broker redis://HOST:6379/0, set PLANTFED_BROKER_URL, "
            "or set broker_url in the [plantfed] table of the settings file"
        )
