"""Implementations of the ``plantfed`` subcommands other than the demo."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from coordinator.context import Hq
from coordinator.health import (
    HealthThresholds,
    drain_site,
    forget_site,
    read_site_health,
    undrain_site,
)
from coordinator.manager import ParallelExecutionManager
from coordinator.sitetable import format_site_table, site_health_json
from plantfed.errors import ConfigError
from plantfed.settings import Settings

#: Seconds ``plantfed sites`` listens to heartbeats before judging.
SITES_LISTEN_S = 1.5


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


def run_sites(settings: Settings, args: argparse.Namespace) -> int:
    """``plantfed sites``: the health table, drain, undrain, or wait for readiness."""
    _require_broker(settings)
    hq = Hq.connect(settings, listen=args.site_command in (None, "wait"))
    try:
        if args.site_command == "drain":
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
        if args.site_command == "wait":
            return _wait_for_sites(hq, args)
        time.sleep(SITES_LISTEN_S)
        thresholds = HealthThresholds(settings.liveness_interval_s, lost_after_s=3.0)
        health = read_site_health(hq.client, hq.keys, hq.monitor, thresholds)
        if args.json:
            print(json.dumps(site_health_json(health), indent=2))
        else:
            print(format_site_table(health))
        return 0
    finally:
        hq.close()


def _wait_for_sites(hq: Hq, args: argparse.Namespace) -> int:
    manager = ParallelExecutionManager(hq)
    readiness = manager.wait_for_datasites_ready(
        min_datasites=args.min_sites, timeout_s=args.timeout_s, expected=args.expected
    )
    print(readiness.describe())
    return 0 if readiness.ready else 1


def run_campaign_command(settings: Settings, args: argparse.Namespace) -> int:
    """``plantfed campaign run|status``."""
    from coordinator.campaign_cli import campaign_report, campaign_run, campaign_status

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


def print_err(message: str) -> None:
    print(message, file=sys.stderr)
