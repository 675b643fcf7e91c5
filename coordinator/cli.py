"""The ``plantfed`` command: plant and HQ workers, site health, campaigns and the demo."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import kombu.exceptions
import redis

from coordinator.processes import die_with_parent
from plantfed.errors import PlantfedError
from plantfed.logs import configure_logging
from plantfed.settings import Settings, load_settings

logger = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str) -> float:
    """Parse ``90``, ``90s``, ``15m``, ``2h`` or ``1d`` into seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number with an optional unit s, m, h or d (e.g. 2h)"
        )
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def parse_positive_duration_s(text: str) -> float:
    """Parse a duration like ``parse_duration_s`` and reject zero."""
    duration_s = parse_duration_s(text)
    if duration_s <= 0:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: must be longer than 0 (e.g. 30m or 2h)"
        )
    return duration_s


def parse_positive_int(text: str) -> int:
    """Parse a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: use a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: must be at least 1")
    return value


def _add_plugin_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--plugin MODULE`` (repeatable) to a campaign command."""
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        dest="plugins",
        metavar="MODULE",
        help="module to import first, which registers extra trainers",
    )


def _add_connection_options(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """Add ``--broker``, ``--config`` and ``--log-level`` to ``parser``.

    A sub-subcommand copies its values onto the namespace its parent command
    filled, defaults included. So the ``nested`` copies default to SUPPRESS, and a
    value given before the sub-subcommand survives when it is not repeated after it.
    """
    default = argparse.SUPPRESS if nested else None
    parser.add_argument(
        "--broker",
        default=default,
        metavar="URL",
        help="Redis URL of the broker (overrides settings)",
    )
    parser.add_argument(
        "--config",
        default=default,
        type=Path,
        metavar="FILE",
        help="settings file ([plantfed] table)",
    )
    parser.add_argument(
        "--log-level",
        default=argparse.SUPPRESS if nested else "INFO",
        help="log level (default INFO)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every ``plantfed`` subcommand."""
    parser = argparse.ArgumentParser(prog="plantfed", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run a plant worker serving site.<site_id>")
    _add_connection_options(worker)
    worker.add_argument(
        "--site",
        action="append",
        required=True,
        dest="sites",
        metavar="SITE_ID",
        help="datasite id; repeat to serve several sites from one process",
    )
    worker.add_argument("--data", type=Path, metavar="PATH", help="the plant's local data")
    worker.add_argument(
        "--trainer",
        action="append",
        dest="trainers",
        metavar="NAME",
        help="trainer offered by this plant; repeatable (default ai4i-mlp)",
    )
    worker.add_argument(
        "--plugin",
        action="append",
        default=[],
        dest="plugins",
        metavar="MODULE",
        help="module to import at start, which registers extra trainers",
    )
    worker.add_argument(
        "--concurrency", type=parse_positive_int, default=1, help="pool processes (default 1)"
    )
    worker.add_argument("--hostname", help="host part of the worker name (default: this host)")

    hq = commands.add_parser("hq-worker", help="run the HQ worker that closes rounds")
    _add_connection_options(hq)
    hq.add_argument(
        "--concurrency", type=parse_positive_int, default=2, help="pool processes (default 2)"
    )
    hq.add_argument("--hostname", help="host part of the worker name (default: this host)")

    sites = commands.add_parser("sites", help="show site health, drain or undrain a site")
    _add_connection_options(sites)
    sites.add_argument("--json", action="store_true", help="print JSON instead of a table")
    site_commands = sites.add_subparsers(dest="site_command")
    drain = site_commands.add_parser("drain", help="take a site out of rounds for maintenance")
    _add_connection_options(drain, nested=True)
    drain.add_argument("site")
    drain.add_argument(
        "--for",
        dest="for_s",
        type=parse_positive_duration_s,
        metavar="DURATION",
        help="drain for this long (e.g. 30m, 2h); default until undrained",
    )
    drain.add_argument("--reason", default="maintenance", help="shown to operators")
    undrain = site_commands.add_parser("undrain", help="return a drained site to service")
    _add_connection_options(undrain, nested=True)
    undrain.add_argument("site")
    forget = site_commands.add_parser("forget", help="remove a retired site from the list")
    _add_connection_options(forget, nested=True)
    forget.add_argument("site")
    wait = site_commands.add_parser("wait", help="wait until enough sites are ready")
    _add_connection_options(wait, nested=True)
    wait.add_argument(
        "--min",
        dest="min_sites",
        type=parse_positive_int,
        help="ready sites needed (default: the number of --site given, else 2)",
    )
    wait.add_argument(
        "--timeout",
        dest="timeout_s",
        type=parse_duration_s,
        default=60.0,
        help="maximum wait (default 60s)",
    )
    wait.add_argument(
        "--site",
        action="append",
        dest="expected",
        metavar="SITE_ID",
        help="site to wait for; repeatable (default: any)",
    )

    campaign = commands.add_parser("campaign", help="run a campaign or show its status")
    _add_connection_options(campaign)
    campaign_commands = campaign.add_subparsers(dest="campaign_command", required=True)
    run = campaign_commands.add_parser("run", help="run (or resume) the campaign in CONFIG")
    _add_connection_options(run, nested=True)
    run.add_argument("campaign_file", type=Path, metavar="CONFIG")
    run.add_argument("--max-rounds", type=int, help="run at most this many rounds, then exit")
    run.add_argument(
        "--wait-lock",
        type=parse_duration_s,
        metavar="DURATION",
        help="wait this long for another coordinator to release the campaign",
    )
    run.add_argument("--summary", type=Path, metavar="PATH", help="write a JSON summary here")
    run.add_argument(
        "--ready-timeout",
        type=parse_duration_s,
        default=60.0,
        metavar="DURATION",
        help="maximum wait for min_sites ready sites before the first round (60s)",
    )
    _add_plugin_option(run)
    run.add_argument(
        "--health-hook",
        action="append",
        default=[],
        dest="health_hooks",
        metavar="MODULE:FUNCTION",
        help="function(site_health) returning a reason to keep a site out, or None",
    )
    check = campaign_commands.add_parser(
        "check", help="validate CONFIG against its trainer and these settings, without running"
    )
    check.add_argument("campaign_file", type=Path, metavar="CONFIG")
    _add_plugin_option(check)
    _add_connection_options(check, nested=True)
    status = campaign_commands.add_parser("status", help="print progress and statistics")
    _add_connection_options(status, nested=True)
    status.add_argument("campaign_file", type=Path, metavar="CONFIG")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_plugin_option(status)

    report = campaign_commands.add_parser("report", help="write an HTML report with plots")
    _add_connection_options(report, nested=True)
    report.add_argument("campaign_file", type=Path, metavar="CONFIG")
    report.add_argument("--out", type=Path, required=True, metavar="PATH", help="HTML file")
    _add_plugin_option(report)

    demo = commands.add_parser("demo", help="run a whole federation on this machine")
    _add_connection_options(demo)
    demo.add_argument(
        "--workload",
        choices=["ai4i", "cmapss"],
        default="ai4i",
        help="ai4i: failure classification on AI4I 2020 (default); "
        "cmapss: remaining useful life on C-MAPSS FD001",
    )
    demo.add_argument(
        "--data",
        type=Path,
        metavar="PATH",
        help="AI4I 2020 CSV (without it a synthetic file of the same shape is used), "
        "or the C-MAPSS folder with --workload cmapss",
    )
    demo.add_argument("--sites", type=int, default=3, help="plants (default 3; 3 splits by type)")
    demo.add_argument("--rounds", type=int, default=10, help="rounds (default 10)")
    demo.add_argument("--summary", type=Path, metavar="PATH", help="write a JSON summary here")
    demo.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="keep data splits, logs and checkpoints here (default: temporary)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``plantfed`` command and return its exit status.

    SIGTERM and SIGHUP are handled like Ctrl-C, so a service manager stopping
    the coordinator, or a closed terminal, lets it release its campaign lock and
    stop its children.
    Worker subcommands install Celery's own handlers, which replace this one.
    """
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    die_with_parent()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        return _run(args)
    except PlantfedError as exc:
        print(f"plantfed: error: {exc}", file=sys.stderr)
        return 2
    except (redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError) as exc:
        where = _broker_for_message(args)
        print(
            f"plantfed: error: cannot reach Redis at {where}: {str(exc).rstrip('.')}; "
            "check PLANTFED_BROKER_URL",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:
        print(f"plantfed: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("plantfed: interrupted", file=sys.stderr)
        return 130


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def redact_url(url: str) -> str:
    """Return ``url`` without the password of its user part."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}{parts.hostname}{port}"))


def describe_os_error(exc: OSError) -> str:
    """Return a one-line description of a failed file operation, with the file it concerns."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    return f"{reason}: {exc.filename}"


def _broker_for_message(args: argparse.Namespace) -> str:
    try:
        url = _settings(args).broker_url
    except (PlantfedError, OSError):
        url = args.broker
    return redact_url(url) if url else "the embedded redis-server"


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    return settings.with_broker(args.broker) if args.broker else settings


def _run(args: argparse.Namespace) -> int:
    if args.command == "worker":
        from coordinator.commands import run_worker

        return run_worker(_settings(args), args)
    if args.command == "hq-worker":
        from coordinator.commands import run_hq_worker

        return run_hq_worker(_settings(args), args)
    if args.command == "sites":
        from coordinator.commands import run_sites

        return run_sites(_settings(args), args)
    if args.command == "campaign":
        from coordinator.commands import run_campaign_command

        return run_campaign_command(_settings(args), args)
    from coordinator.demo import run_demo

    return run_demo(_settings(args), args)


if __name__ == "__main__":
    sys.exit(main())
