"""Shared parts of the benchmarks: options, settings, federations, tables and JSON output.

Every benchmark prints a plain-text table and, with ``--json``, one JSON object
as the last line of its output; ``--out PATH`` also writes that object to a file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from coordinator.aggregation import StrategyConfig
from coordinator.campaign import CampaignRunner
from coordinator.config import campaign_config_from_dict
from coordinator.context import Hq
from coordinator.localfed import LocalFederation, PlantSpec
from coordinator.summary import CampaignSummary
from plantfed.settings import Settings

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent

#: The real AI4I 2020 file, beside the repository.
AI4I_CSV = REPO_ROOT.parent / "shared" / "data" / "ai4i2020.csv"

#: Plugin module that plant workers import for the benchmark tasks and trainers.
PLUGIN_MODULE = "bench.plugins"

#: Settings of every benchmark federation, under their own key prefix.
BENCH_SETTINGS = Settings(
    key_prefix="plantfed-bench",
    max_round_s=600.0,
    visibility_timeout_s=900.0,
    liveness_interval_s=1.0,
    liveness_ttl_s=4.0,
)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--quick``, ``--json``, ``--out`` and ``--log-level`` to ``parser``."""
    parser.add_argument("--quick", action="store_true", help="run fewer cases, for a fast check")
    parser.add_argument(
        "--json", action="store_true", help="print the results as one JSON object on the last line"
    )
    parser.add_argument("--out", type=Path, metavar="PATH", help="also write the JSON here")
    parser.add_argument(
        "--log-level", default="WARNING", help="log level of this process (default WARNING)"
    )


def configure_bench_logging(level: str) -> None:
    """Send log records of this process to stderr, so that stdout keeps the table and JSON."""
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )


def machine_description() -> dict[str, Any]:
    """Return the CPU count, Python version and platform the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def emit(results: dict[str, Any], as_json: bool, out: Path | None) -> None:
    """Print ``results`` as the last line when ``as_json``, and write them to ``out`` if given."""
    document = {**results, "machine": machine_description()}
    text = json.dumps(document, sort_keys=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
    if as_json:
        print(text, flush=True)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Return a right-aligned plain-text table; floats are shown with 4 significant digits."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [
        max(len(header), *(len(row[i]) for row in cells)) if cells else len(header)
        for i, header in enumerate(headers)
    ]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def median_s(values: Sequence[float]) -> float:
    """Return the median of ``values`` (seconds)."""
    return float(statistics.median(values))


def bench_federation(
    plants: Sequence[PlantSpec], log_dir: Path, startup_timeout_s: float = 180.0
) -> LocalFederation:
    """Return an unstarted federation on a private Redis whose workers can import ``bench``."""
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return LocalFederation(
        BENCH_SETTINGS,
        list(plants),
        log_dir=log_dir,
        startup_timeout_s=startup_timeout_s,
        env={"PYTHONPATH": python_path},
    )


def require_ai4i_csv() -> Path | None:
    """Return the AI4I file, or None after printing why the benchmark cannot run."""
    if AI4I_CSV.is_file():
        return AI4I_CSV
    print(
        f"skipped: the real AI4I 2020 file was not found at {AI4I_CSV}; "
        "place ai4i2020.csv in ../shared/data beside the repository to run this benchmark",
        flush=True,
    )
    return None


def ai4i_plants(csv_path: Path, data_dir: Path, **options: Any) -> list[PlantSpec]:
    """Split the AI4I file by product type and return one plant per type (``plant-h/l/m``)."""
    from worker.splits import split_ai4i_by_type

    files = split_ai4i_by_type(csv_path, data_dir)
    return [PlantSpec((site,), path, **options) for site, path in sorted(files.items())]


def run_campaign(hq: Hq, request: CampaignRequest) -> CampaignSummary:
    """Run one campaign to its end on a started federation and return its summary."""
    document: dict[str, Any] = {
        "id": request.campaign_id,
        "rounds": request.rounds,
        "seed": request.seed,
        "sites": list(request.sites),
        "min_sites": 2,
        "checkpoint_dir": str(request.checkpoint_dir),
        "trainer": {"name": request.trainer, "params": dict(request.trainer_params)},
        "round": {"preset": "plant-lan"},
    }
    config = campaign_config_from_dict(document, source=f"campaign {request.campaign_id}")
    # The strategy is set directly, because a campaign file cannot turn the outlier test off.
    return CampaignRunner(hq, replace(config, strategy=request.strategy)).run()


@dataclass(frozen=True)
class CampaignRequest:
    """What ``run_campaign`` runs: trainer, strategy, sites and length of one campaign."""

    campaign_id: str
    sites: tuple[str, ...]
    trainer: str
    rounds: int
    checkpoint_dir: Path
    seed: int = 0
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    trainer_params: Mapping[str, Any] = field(default_factory=dict)
