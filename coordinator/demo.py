"""``plantfed demo``: a whole federation on one machine, on real or synthetic plant data.

It starts an embedded Redis when no broker is configured, the HQ worker and one
plant worker per site as child processes, runs a campaign of AI4I 2020 rounds,
prints a table row per round, and stops everything it started, also on Ctrl-C,
SIGTERM and errors.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coordinator.campaign import CampaignRunner, RoundReport
from coordinator.campaign_cli import describe_summary, write_json
from coordinator.config import campaign_config_from_dict
from coordinator.context import Hq
from coordinator.demo_data import WORKLOADS, Workload, prepare_data
from coordinator.localfed import LocalFederation, PlantSpec
from plantfed.errors import PlantfedError
from plantfed.modelio import decode_weights
from plantfed.settings import Settings
from worker.trainers.cmapss import official_test_rmse

logger = logging.getLogger(__name__)

#: Rows of the synthetic file used when no ``--data`` is given (the real file has 10,000).
SYNTHETIC_ROWS = 10_000

_ROW = "{:>5}  {:>9}  {:>7}  {:<18}"


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when every round completed."""
    if args.sites < 2:
        raise PlantfedError(f"--sites must be at least 2 for a federation, found {args.sites}")
    workload = WORKLOADS[args.workload]
    with _workdir(args.workdir) as workdir:
        data_files, source = prepare_data(workload, args.data, args.sites, workdir / "data")
        print(source, flush=True)
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
        count = len(federation.children)
        federation.stop()
        kept = f"; logs are in {workdir / 'logs'}" if args.workdir else ""
        print(f"stopped {count} workers{kept}", file=sys.stderr)


def _print_broker(federation: LocalFederation) -> None:
    if federation.redis is not None:
        print(
            f"broker: embedded redis-server on {federation.redis.url} (pid {federation.redis.pid})",
            flush=True,
        )
    else:
        print(f"broker: {federation.broker_url} (configured)", flush=True)


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
