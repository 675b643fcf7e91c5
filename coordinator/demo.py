"""``plantfed demo``: a whole federation on one machine, on real or synthetic plant data.

It starts an embedded Redis when no broker is configured, the HQ worker and one
plant worker per site as child processes, runs a campaign of AI4I 2020 rounds,
prints a table row per round, and stops everything it started, also on Ctrl-C,
SIGTERM and errors.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
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
from coordinator.localfed import LocalFederation, PlantSpec
from plantfed.errors import PlantfedError
from plantfed.settings import Settings
from worker.splits import AI4I_HEADER, split_ai4i_by_type, write_synthetic_ai4i

logger = logging.getLogger(__name__)

#: Rows of the synthetic file used when no ``--data`` is given (the real file has 10,000).
SYNTHETIC_ROWS = 10_000

_TABLE = "{:>5}  {:>9}  {:>7}  {:<16}  {:>6}  {:>9}  {:>6}  {:>8}"


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when every round completed."""
    if args.sites < 2:
        raise PlantfedError(f"--sites must be at least 2 for a federation, found {args.sites}")
    with _workdir(args.workdir) as workdir:
        data_files, source = prepare_data(args.data, args.sites, workdir / "data")
        print(source, flush=True)
        return _run_federation(settings, args, workdir, data_files, source)


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


def prepare_data(data: Path | None, sites: int, out_dir: Path) -> tuple[dict[str, Path], str]:
    """Write one CSV per plant and return them with a sentence on where the data came from."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if data is None:
        source_file = out_dir / "synthetic-ai4i.csv"
        write_synthetic_ai4i(source_file, SYNTHETIC_ROWS, seed=7)
        source = (
            f"data: no --data given, so {SYNTHETIC_ROWS} synthetic rows in the AI4I 2020 format "
            "generated from the dataset's documented failure rules (not real measurements); "
            "pass --data ai4i2020.csv for the real data"
        )
    else:
        source_file = data
        source = f"data: {data}"
    if not source_file.is_file():
        raise PlantfedError(f"data file not found: {source_file}")
    if sites == 3:
        files = split_ai4i_by_type(source_file, out_dir)
        return files, f"{source}, split by product type L/M/H into 3 plants"
    return split_rows(
        source_file, out_dir, sites
    ), f"{source}, split row by row into {sites} plants"


def split_rows(csv_path: Path, out_dir: Path, sites: int) -> dict[str, Path]:
    """Deal the rows of an AI4I file to ``sites`` plants in turn."""
    files = {f"plant-{i + 1}": out_dir / f"plant-{i + 1}.csv" for i in range(sites)}
    with contextlib.ExitStack() as stack:
        writers = []
        for path in files.values():
            writer = csv.writer(stack.enter_context(path.open("w", newline="", encoding="utf-8")))
            writer.writerow(AI4I_HEADER)
            writers.append(writer)
        reader = csv.reader(stack.enter_context(csv_path.open(newline="", encoding="utf-8-sig")))
        next(reader, None)
        for index, row in enumerate(reader):
            writers[index % sites].writerow(row)
    return files


def _run_federation(
    settings: Settings,
    args: argparse.Namespace,
    workdir: Path,
    data_files: dict[str, Path],
    source: str,
) -> int:
    plants = [PlantSpec((site_id,), path) for site_id, path in data_files.items()]
    federation = LocalFederation(settings, plants, log_dir=workdir / "logs")
    started = time.monotonic()
    try:
        federation.start()
        _print_broker(federation)
        print(f"{len(plants)} plants ready in {time.monotonic() - started:.1f} s", flush=True)
        assert federation.hq is not None
        return _run_campaign(federation.hq, args, workdir, data_files, source)
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
    hq: Hq, args: argparse.Namespace, workdir: Path, data_files: dict[str, Path], source: str
) -> int:
    config = campaign_config_from_dict(
        {
            "id": f"demo-{int(time.time())}",
            "rounds": args.rounds,
            "sites": sorted(data_files),
            "min_sites": 2,
            "checkpoint_dir": str(workdir / "checkpoints"),
            "trainer": {"name": "ai4i-mlp"},
            "round": {"preset": "plant-lan"},
        }
    )
    print(_TABLE.format("round", "completed", "time_s", "closed", "f1", "precision", "recall",
                        "accuracy"), flush=True)  # fmt: skip
    progress = RoundProgress(args.rounds, sys.stdout.isatty())
    runner = CampaignRunner(hq, config, on_round=progress.finished)
    summary = runner.run()
    print(describe_summary(summary), flush=True)
    all_completed = (
        all(len(r["completed_sites"]) == len(data_files) for r in summary.rounds)
        and summary.rounds_completed == args.rounds
    )
    if args.summary:
        data: dict[str, Any] = summary.to_json()
        data.update(
            data_source=source,
            sites=sorted(data_files),
            federated_f1=summary.final_metrics.get("f1"),
            all_rounds_completed_by_all_sites=all_completed,
        )
        write_json(args.summary, data)
    return 0 if summary.rounds_completed == args.rounds else 1


class RoundProgress:
    """Prints one table row per round, and a progress bar between rows on a terminal."""

    def __init__(self, rounds: int, terminal: bool) -> None:
        self.rounds = rounds
        self.terminal = terminal
        self.started = time.monotonic()
        self._show_bar(0)

    def finished(self, report: RoundReport) -> None:
        if self.terminal:
            print("\r\033[K", end="")
        print(format_row(report), flush=True)
        self._show_bar(report.index + 1)

    def _show_bar(self, done: int) -> None:
        if not self.terminal or done >= self.rounds:
            return
        width = 30
        filled = width * done // self.rounds
        elapsed_s = time.monotonic() - self.started
        bar = "#" * filled + "." * (width - filled)
        print(f"[{bar}] round {done + 1}/{self.rounds} running, {elapsed_s:.1f} s", end="",
              flush=True)  # fmt: skip


def format_row(report: RoundReport) -> str:
    """Return the table row of one finished round."""
    result = report.result
    m = report.metrics
    return _TABLE.format(
        report.index,
        f"{len(result.completed_datasites)}/{result.participants}",
        f"{result.execution_time_s:.2f}",
        result.status,
        f"{m.get('f1', float('nan')):.4f}",
        f"{m.get('precision', float('nan')):.4f}",
        f"{m.get('recall', float('nan')):.4f}",
        f"{m.get('accuracy', float('nan')):.4f}",
    )
