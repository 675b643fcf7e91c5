"""``plantfed demo``: a whole federation on one machine, on real or synthetic plant data.

It checks its arguments and data first, then starts an embedded Redis when no
broker is configured, the HQ worker and one plant worker per site as child
processes. It runs a campaign of AI4I 2020 or C-MAPSS rounds, prints a table
row per round, and stops everything it started, also on Ctrl-C, SIGTERM and
errors. On a configured broker, which real plants may share, its site ids, Redis
keys and HQ queue carry a random demo prefix, so no other worker takes its tasks.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.campaign import CampaignRunner, RoundReport
from coordinator.campaign_cli import describe_summary, write_json
from coordinator.cli import redact_url
from coordinator.config import campaign_config_from_dict
from coordinator.context import Hq
from coordinator.demo_data import WORKLOADS, Workload, check_demo_request, prepare_data
from coordinator.localfed import LocalFederation, PlantSpec
from plantfed.modelio import decode_weights
from plantfed.settings import Settings
from worker.trainers.cmapss import official_test_rmse

logger = logging.getLogger(__name__)

#: Rows of the synthetic file used when no ``--data`` is given (the real file has 10,000).
SYNTHETIC_ROWS = 10_000

_ROW = "{:>5}  {:>9}  {:>7}  {:<18}"


@dataclass(frozen=True)
class DemoNamespace:
    """Names that keep a demo apart from a deployment on the same broker."""

    site_prefix: str
    key_prefix: str
    hq_queue: str

    @classmethod
    def create(cls, settings: Settings, token: str | None = None) -> DemoNamespace:
        """Return names derived from ``settings`` and ``token`` (default: 4 random hex digits)."""
        token = token or secrets.token_hex(2)
        return cls(
            site_prefix=f"demo-{token}",
            key_prefix=f"{settings.key_prefix}-demo-{token}",
            hq_queue=f"{settings.hq_queue}-demo-{token}",
        )

    def apply(
        self, settings: Settings, data_files: dict[str, Path]
    ) -> tuple[Settings, dict[str, Path]]:
        """Return ``settings`` with this key prefix and HQ queue, and the files by prefixed site."""
        isolated = dataclasses.replace(settings, key_prefix=self.key_prefix, hq_queue=self.hq_queue)
        renamed = {f"{self.site_prefix}-{site}": path for site, path in data_files.items()}
        return isolated, renamed

    def describe(self) -> str:
        """Return the output line that reports these names to the user."""
        return (
            f"shared broker: demo sites are named {self.site_prefix}-*, with Redis key prefix "
            f"{self.key_prefix} and HQ queue {self.hq_queue}, so workers of a deployment on "
            "this broker do not take the demo's tasks"
        )


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when every round completed.

    Raises
    ------
    PlantfedError
        When an argument or the data is invalid, before any process starts.
    """
    workload = WORKLOADS[args.workload]
    check_demo_request(workload, args.data, args.sites, args.rounds, args.summary)
    with _workdir(args.workdir) as workdir:
        data_files, source = prepare_data(workload, args.data, args.sites, workdir / "data")
        print(source, flush=True)
        if settings.broker_url:
            namespace = DemoNamespace.create(settings)
            settings, data_files = namespace.apply(settings, data_files)
            print(namespace.describe(), flush=True)
        return _run_federation(settings, args, workload, workdir, data_files, source)


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    temp = Path(tempfile.mkdtemp(prefix="plantfed-demo-"))
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _run_federation(
    settings: Settings,
    args: argparse.Namespace,
    workload: Workload,
    workdir: Path,
    data_files: dict[str, Path],
    source: str,
) -> int:
    plants = [
        PlantSpec((site_id,), path, trainers=(workload.trainer,))
        for site_id, path in data_files.items()
    ]
    federation = LocalFederation(settings, plants, log_dir=workdir / "logs")
    started = time.monotonic()
    try:
        federation.start()
        _print_broker(federation)
        print(f"{len(plants)} plants ready in {time.monotonic() - started:.1f} s", flush=True)
        assert federation.hq is not None
        return _run_campaign(federation.hq, args, workload, workdir, data_files, source)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping workers", file=sys.stderr)
        return 130
    finally:
        federation.stop()
        count = federation.stopped_processes
        kept = f"; logs are in {workdir / 'logs'}" if args.workdir else ""
        print(f"stopped {count} workers{kept}", file=sys.stderr)


def _print_broker(federation: LocalFederation) -> None:
    if federation.redis is not None:
        print(
            f"broker: embedded redis-server on {federation.redis.url} (pid {federation.redis.pid})",
            flush=True,
        )
    else:
        print(f"broker: {redact_url(federation.broker_url)} (configured)", flush=True)


def _run_campaign(
    hq: Hq,
    args: argparse.Namespace,
    workload: Workload,
    workdir: Path,
    data_files: dict[str, Path],
    source: str,
) -> int:
    config = campaign_config_from_dict(
        {
            "id": f"demo-{int(time.time())}",
            "rounds": args.rounds,
            "sites": sorted(data_files),
            "min_sites": 2,
            "checkpoint_dir": str(workdir / "checkpoints"),
            "trainer": {"name": workload.trainer},
            "round": {"preset": "plant-lan"},
        }
    )
    progress = RoundProgress(args.rounds, workload.metric_columns, sys.stdout.isatty())
    print(progress.header(), flush=True)
    runner = CampaignRunner(hq, config, on_round=progress.finished)
    summary = runner.run()
    print(describe_summary(summary), flush=True)
    extra = _official_test_score(hq, workload, args.data, summary.global_model_hash)
    all_completed = (
        all(len(r["completed_sites"]) == len(data_files) for r in summary.rounds)
        and summary.rounds_completed == args.rounds
    )
    if args.summary:
        data: dict[str, Any] = summary.to_json()
        data.update(
            workload=workload.name,
            data_source=source,
            sites=sorted(data_files),
            all_rounds_completed_by_all_sites=all_completed,
        )
        for metric in workload.metric_columns[:1]:
            data[f"federated_{metric}"] = summary.final_metrics.get(metric)
        data.update(extra)
        write_json(args.summary, data)
    return 0 if summary.rounds_completed == args.rounds else 1


def _official_test_score(
    hq: Hq, workload: Workload, data: Path | None, model_hash: str
) -> dict[str, float]:
    """Score the final C-MAPSS model on the official test set, when the folder has it."""
    if workload.name != "cmapss" or data is None or not (data / "RUL_FD001.txt").is_file():
        return {}
    weights = decode_weights(hq.blobs.get(model_hash))
    rmse = official_test_rmse(weights, data)
    print(f"official FD001 test set: RMSE {rmse:.2f} cycles over its 100 engines", flush=True)
    return {"official_test_rmse": rmse}


class RoundProgress:
    """Prints one table row per round, and a progress bar between rows on a terminal."""

    def __init__(self, rounds: int, metrics: tuple[str, ...], terminal: bool) -> None:
        self.rounds = rounds
        self.metrics = metrics
        self.terminal = terminal
        self.started = time.monotonic()

    def header(self) -> str:
        """Return the table header, and start the progress bar."""
        line = _ROW.format("round", "completed", "time_s", "closed") + "".join(
            f"  {name:>9}" for name in self.metrics
        )
        return line

    def finished(self, report: RoundReport) -> None:
        if self.terminal:
            print("\r\033[K", end="")
        print(self.format_row(report), flush=True)
        self._show_bar(report.index + 1)

    def format_row(self, report: RoundReport) -> str:
        """Return the table row of one finished round."""
        result = report.result
        completed = f"{len(result.completed_datasites)}/{result.participants}"
        row = _ROW.format(report.index, completed, f"{result.execution_time_s:.2f}", result.status)
        nan = float("nan")
        return row + "".join(f"  {report.metrics.get(name, nan):>9.4f}" for name in self.metrics)

    def _show_bar(self, done: int) -> None:
        if not self.terminal or done >= self.rounds:
            return
        width = 30
        filled = width * done // self.rounds
        elapsed_s = time.monotonic() - self.started
        bar = "#" * filled + "." * (width - filled)
        print(
            f"[{bar}] round {done + 1}/{self.rounds} running, {elapsed_s:.1f} s", end="", flush=True
        )
