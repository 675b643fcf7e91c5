"""Plant data for the demo: the two workloads, checks of the user's data, and per-plant splits.

Every check here runs before the demo starts Redis or a worker, so bad input
ends the demo with one line naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from plantfed.errors import PlantfedError
from worker.splits import (
    AI4I_HEADER,
    split_ai4i_by_type,
    split_cmapss_by_engine,
    write_synthetic_ai4i,
)
from worker.trainers import DataError, get_trainer

#: Rows of the synthetic file used when no ``--data`` is given (the real file has 10,000).
SYNTHETIC_ROWS = 10_000

#: Training file of the C-MAPSS subset the cmapss workload uses.
CMAPSS_TRAIN_FILE = "train_FD001.txt"

#: Maximum length of a reason quoted from a data error, which a binary file can make long.
MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class Workload:
    """A demo workload: its trainer and the metrics its table shows."""

    name: str
    trainer: str
    metric_columns: tuple[str, ...]
    #: Fix suggested with a data error: the data ``--data`` must name.
    data_fix: str


WORKLOADS = {
    "ai4i": Workload(
        "ai4i",
        "ai4i-mlp",
        ("f1", "precision", "recall", "accuracy"),
        "pass the AI4I 2020 CSV file (ai4i2020.csv), or leave out --data for synthetic data",
    ),
    "cmapss": Workload(
        "cmapss",
        "cmapss-rul",
        ("rmse", "mae"),
        f"pass --data DIR, the NASA C-MAPSS folder that contains {CMAPSS_TRAIN_FILE}",
    ),
}


def check_demo_request(
    workload: Workload,
    data: Path | None,
    sites: int,
    rounds: int,
    summary: Path | None = None,
) -> None:
    """Check the demo's arguments: counts, the ``--summary`` folder, and that ``data`` loads.

    ``data`` is loaded with the workload's trainer, as a plant worker would load it.

    Raises
    ------
    PlantfedError
        With one line that names the invalid value or file and the fix.
    """
    if sites < 2:
        raise PlantfedError(f"--sites must be at least 2 for a federation, found {sites}")
    if rounds < 1:
        raise PlantfedError(f"--rounds must be at least 1, found {rounds}")
    if summary is not None and not summary.parent.is_dir():
        raise PlantfedError(
            f"--summary {summary}: folder {summary.parent} not found; "
            "create it or pass another path"
        )
    if workload.name == "cmapss":
        _check_cmapss_folder(workload, data)
        assert data is not None
        _check_loads(workload, data / CMAPSS_TRAIN_FILE, data)
        return
    if data is None:
        return
    if data.is_dir():
        raise PlantfedError(
            f"--data {data} is a directory, but the {workload.name} workload reads one CSV "
            "file; for the C-MAPSS folder add --workload cmapss, otherwise "
            f"{workload.data_fix}"
        )
    _check_loads(workload, data, data)


def _check_cmapss_folder(workload: Workload, data: Path | None) -> None:
    if data is None:
        raise PlantfedError(f"the {workload.name} workload needs its data: {workload.data_fix}")
    if not data.exists():
        raise PlantfedError(f"--data {data}: not found; {workload.data_fix}")
    if not data.is_dir():
        raise PlantfedError(f"--data {data} is a file, not a folder; {workload.data_fix}")
    if not (data / CMAPSS_TRAIN_FILE).is_file():
        raise PlantfedError(f"--data {data} has no {CMAPSS_TRAIN_FILE}; {workload.data_fix}")


def _check_loads(workload: Workload, path: Path, data: Path) -> None:
    try:
        get_trainer(workload.trainer).load_data(path)
    except DataError as exc:
        reason = _without_path(str(exc), path)
        raise PlantfedError(
            f"--data {data} cannot be used by the {workload.name} workload: "
            f"{one_line(reason)}; {workload.data_fix}"
        ) from exc


def _without_path(reason: str, path: Path) -> str:
    """Drop the leading ``path`` of a data error's message, when the caller names it already."""
    prefix = str(path)
    if not reason.startswith(prefix):
        return reason
    rest = reason[len(prefix) :].lstrip(":, ")
    return rest or reason


def check_plant_files(workload: Workload, files: Mapping[str, Path], data: Path | None) -> None:
    """Check that at least two plants got data and each plant's split loads and has training rows.

    Raises
    ------
    PlantfedError
        When fewer than two plants got a file, or a plant's file does not load or has
        no training rows; the message suggests another ``--sites``.
    """
    source = data if data is not None else "the synthetic data"
    if len(files) < 2:
        raise PlantfedError(
            f"{source} gives data to only {len(files)} plant(s) ({', '.join(files) or 'none'}); "
            "a federation needs 2: with --sites 3 the rows are split by product type, so "
            "pass another --sites to deal them row by row instead"
        )
    trainer = get_trainer(workload.trainer)
    for site_id, path in files.items():
        try:
            site_data = trainer.load_data(path)
        except DataError as exc:
            raise PlantfedError(
                f"plant {site_id} gets no usable data from {source}: {one_line(str(exc))}; "
                "pass fewer --sites"
            ) from exc
        if site_data.train_samples < 1:
            raise PlantfedError(
                f"plant {site_id} gets no training rows from {source}; pass fewer --sites"
            )


def one_line(text: str) -> str:
    """Return ``text`` on one line, with each run of whitespace as one space, cut to 300 chars."""
    flat = re.sub(r"\s+", " ", text).strip()
    if len(flat) <= MAX_REASON_CHARS:
        return flat
    return flat[: MAX_REASON_CHARS - 3] + "..."


def prepare_data(
    workload: Workload, data: Path | None, sites: int, out_dir: Path
) -> tuple[dict[str, Path], str]:
    """Write one data file (or folder) per plant; return them and where the data came from.

    Call ``check_demo_request`` first: this assumes ``data`` loads.

    Raises
    ------
    PlantfedError
        When the data cannot give every plant usable data.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if workload.name == "cmapss":
        files, source = _prepare_cmapss(data, sites, out_dir)
    else:
        files, source = _prepare_ai4i(data, sites, out_dir)
    check_plant_files(workload, files, data)
    return files, source


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
    _check_cmapss_folder(WORKLOADS["cmapss"], data)
    assert data is not None
    try:
        files = split_cmapss_by_engine(data / CMAPSS_TRAIN_FILE, out_dir, sites)
    except ValueError as exc:
        train_file = data / CMAPSS_TRAIN_FILE
        raise PlantfedError(f"--sites {sites} does not fit {train_file}: {exc}") from exc
    return files, f"data: {data}, FD001 engines dealt to {sites} plants"


def split_rows(csv_path: Path, out_dir: Path, sites: int) -> dict[str, Path]:
    """Deal the rows of an AI4I file to ``sites`` plants in turn."""
    out_dir.mkdir(parents=True, exist_ok=True)
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
