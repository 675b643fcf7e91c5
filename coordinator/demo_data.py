"""Plant data for the demo: the two workloads and how their files are split per plant."""

from __future__ import annotations

import contextlib
import csv
from dataclasses import dataclass
from pathlib import Path

from plantfed.errors import PlantfedError
from worker.splits import (
    AI4I_HEADER,
    split_ai4i_by_type,
    split_cmapss_by_engine,
    write_synthetic_ai4i,
)

#: Rows of the synthetic file used when no ``--data`` is given (the real file has 10,000).
SYNTHETIC_ROWS = 10_000


@dataclass(frozen=True)
class Workload:
    """A demo workload: its trainer and the metrics its table shows."""

    name: str
    trainer: str
    metric_columns: tuple[str, ...]


WORKLOADS = {
    "ai4i": Workload("ai4i", "ai4i-mlp", ("f1", "precision", "recall", "accuracy")),
    "cmapss": Workload("cmapss", "cmapss-rul", ("rmse", "mae")),
}


def prepare_data(
    workload: Workload, data: Path | None, sites: int, out_dir: Path
) -> tuple[dict[str, Path], str]:
    """Write one data file (or folder) per plant; return them and where the data came from."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if workload.name == "cmapss":
        return _prepare_cmapss(data, sites, out_dir)
    return _prepare_ai4i(data, sites, out_dir)


def _prepare_ai4i(data: Path | None, sites: int, out_dir: Path) -> tuple[dict[str, Path], str]:
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


def _prepare_cmapss(data: Path | None, sites: int, out_dir: Path) -> tuple[dict[str, Path], str]:
    if data is None or not (data / "train_FD001.txt").is_file():
        raise PlantfedError(
            "the cmapss workload needs --data DIR, the C-MAPSS folder with train_FD001.txt "
            f"(found {data})"
        )
    files = split_cmapss_by_engine(data / "train_FD001.txt", out_dir, sites)
    return files, f"data: {data}, FD001 engines dealt to {sites} plants"


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
