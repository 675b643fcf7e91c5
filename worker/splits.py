"""Plant data files for a one-machine demo: real datasets split per plant, and synthetic AI4I data.

Splits write one file per datasite. AI4I 2020 is split by product type, so that
each plant makes one quality variant and the plants differ as real plants do;
C-MAPSS is split by engine. When the real AI4I file is not at hand,
``write_synthetic_ai4i`` writes a file in its format from the generation rules
its documentation describes.
"""

from __future__ import annotations

import csv
import logging
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from worker.trainers.base import DataError

logger = logging.getLogger(__name__)

#: Datasite id of each AI4I product type.
AI4I_SITES = {"L": "plant-l", "M": "plant-m", "H": "plant-h"}

AI4I_HEADER = (
    "UDI",
    "Product ID",
    "Type",
    "Air temperature [K]",
    "Process temperature [K]",
    "Rotational speed [rpm]",
    "Torque [Nm]",
    "Tool wear [min]",
    "Machine failure",
    "TWF",
    "HDF",
    "PWF",
    "OSF",
    "RNF",
)


def split_ai4i_by_type(csv_path: Path, out_dir: Path) -> dict[str, Path]:
    """Write the rows of each product type to ``<out_dir>/<site_id>.csv``.

    Returns
    -------
    dict
        Path of each written file by site id (``plant-l``, ``plant-m``,
        ``plant-h``). A type without rows gets no file.

    Raises
    ------
    DataError
        When the file is missing, unreadable or has no ``Type`` column.
    """
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            if "Type" not in header:
                raise DataError(f"{csv_path}: missing column 'Type'; found {header}")
            type_index = header.index("Type")
            rows_by_type: dict[str, list[list[str]]] = defaultdict(list)
            for row in reader:
                # Blank lines, which the trainers' readers skip too, and rows cut short.
                if len(row) > type_index:
                    rows_by_type[row[type_index].strip()].append(row)
    except FileNotFoundError as exc:
        raise DataError(f"{csv_path}: file not found") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot read the file: {exc}") from exc

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for product_type, site_id in AI4I_SITES.items():
        rows = rows_by_type.get(product_type, [])
        if not rows:
            logger.warning(
                "%s: no rows of type %s, so %s gets no file", csv_path, product_type, site_id
            )
            continue
        path = out_dir / f"{site_id}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        paths[site_id] = path
    return paths


def split_cmapss_by_engine(train_path: Path, out_dir: Path, n_sites: int) -> dict[str, Path]:
    """Deal the engines of a C-MAPSS training file to ``n_sites`` datasites, round robin.

    Site ``plant-<k>`` (k from 1) gets every ``n_sites``-th engine in unit order,
    written unchanged to ``<out_dir>/plant-<k>/<name of train_path>``.

    Returns
    -------
    dict
        Directory of each site by site id; each is a valid ``cmapss-rul`` data path.

    Raises
    ------
    DataError
        When the file is missing, unreadable, empty or has a unit number that is
        not a whole number.
    ValueError
        When ``n_sites`` is below 1 or leaves a site with fewer than 2 engines.
    """
    try:
        text = train_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"{train_path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{train_path}: cannot read the file: {exc}") from exc
    lines_by_unit: dict[int, list[str]] = defaultdict(list)
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            lines_by_unit[_unit_number(train_path, number, line)].append(line)
    units = sorted(lines_by_unit)
    if not units:
        raise DataError(f"{train_path}: no data rows")
    if n_sites < 1 or len(units) < 2 * n_sites:
        raise ValueError(
            f"n_sites must be between 1 and {len(units) // 2} for {len(units)} engines "
            f"(each site needs 2), got {n_sites}"
        )

    sites: dict[str, Path] = {}
    for index in range(n_sites):
        site_dir = out_dir / f"plant-{index + 1}"
        site_dir.mkdir(parents=True, exist_ok=True)
        site_lines = [line for unit in units[index::n_sites] for line in lines_by_unit[unit]]
        (site_dir / train_path.name).write_text("\n".join(site_lines) + "\n")
        sites[f"plant-{index + 1}"] = site_dir
    return sites


def _unit_number(path: Path, line_number: int, line: str) -> int:
    text = line.split()[0]
    try:
        unit = float(text)
    except ValueError:
        raise DataError(f"{path}, line {line_number}: unit is not a number: {text!r}") from None
    if not unit.is_integer():
        raise DataError(f"{path}, line {line_number}: unit is not a whole number: {text!r}")
    return int(unit)


def write_synthetic_ai4i(path: Path, rows: int, seed: int) -> None:
    """Write a synthetic file in the AI4I 2020 format, from the dataset's documented rules.

    The data is synthetic, not measured. Types are L, M and H in proportions
    60/30/10. Air temperature is a random walk with a 2 K spread around 300 K, and
    process temperature is air plus 10 K with a 1 K spread. Torque is normal around
    40 Nm with a 10 Nm spread, and speed falls as torque rises. Tool wear grows by
    2, 3 or 5 minutes per row for L, M and H, and the tool is replaced at a random
    wear between 200 and 240 minutes, failing there half of the time (TWF).
    The other failure modes follow the documentation. Heat dissipation (HDF) fails
    below 8.6 K of temperature difference and 1380 rpm. Power (PWF) fails outside
    3500 W to 9000 W. Overstrain (OSF) fails when wear times torque exceeds 11,000,
    12,000 or 13,000 min Nm for L, M and H. Random failures (RNF) have probability 0.001.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    rng = np.random.default_rng(seed)
    types = rng.choice(np.array(["L", "M", "H"]), size=rows, p=[0.6, 0.3, 0.1])
    air = np.round(300.0 + _random_walk(rng, rows, 2.0), 1)
    process = np.round(air + 10.0 + _random_walk(rng, rows, 1.0), 1)
    torque = np.round(np.clip(rng.normal(40.0, 10.0, rows), 3.0, None), 1)
    # Speed and torque are strongly anti-correlated in the dataset (about -0.88).
    speed = np.round(
        np.clip(1540.0 - 15.8 * (torque - 40.0) + rng.normal(0, 85.0, rows), 1150, 2900)
    )
    wear, tool_failure = _tool_wear(rng, types)

    power = torque * speed * 2.0 * math.pi / 60.0
    limits = np.select([types == "L", types == "M"], [11_000.0, 12_000.0], 13_000.0)
    modes = {
        "TWF": tool_failure,
        "HDF": (process - air < 8.6) & (speed < 1380),
        "PWF": (power < 3500) | (power > 9000),
        "OSF": wear * torque > limits,
        "RNF": rng.random(rows) < 0.001,
    }
    failure = np.logical_or.reduce(list(modes.values()))

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(AI4I_HEADER)
        serials = rng.integers(10_000, 100_000, rows)
        for i in range(rows):
            writer.writerow(
                [
                    i + 1,
                    f"{types[i]}{serials[i]}",
                    types[i],
                    f"{air[i]:.1f}",
                    f"{process[i]:.1f}",
                    int(speed[i]),
                    f"{torque[i]:.1f}",
                    int(wear[i]),
                    int(failure[i]),
                    *(int(flags[i]) for flags in modes.values()),
                ]
            )


def _random_walk(rng: np.random.Generator, rows: int, spread: float) -> np.ndarray:
    # A slowly mean-reverting walk (AR(1), coefficient 0.99) whose stationary spread is `spread`.
    coefficient = 0.99
    steps = rng.normal(0.0, spread * math.sqrt(1 - coefficient**2), rows)
    walk = np.empty(rows)
    level = rng.normal(0.0, spread)
    for i in range(rows):
        level = coefficient * level + steps[i]
        walk[i] = level
    return walk


def _tool_wear(rng: np.random.Generator, types: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    wear_per_row = {"L": 2, "M": 3, "H": 5}
    wear = np.zeros(types.size, dtype=np.int64)
    failed = np.zeros(types.size, dtype=bool)
    current = 0
    replace_at = rng.integers(200, 241)
    for i, product_type in enumerate(types):
        wear[i] = current
        if current >= replace_at:
            failed[i] = rng.random() < 0.5
            current = 0
            replace_at = rng.integers(200, 241)
        else:
            current += wear_per_row[str(product_type)]
    return wear, failed
