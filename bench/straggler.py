"""Stragglers: round seconds with one plant ten times slower than the other two.

Three plants train with the ``sleepy`` test trainer: two take ``FAST_S``, one
takes ``SLOW_S``. A round needs two completed plants (quorum), then waits the
grace that ``coordinator.tuning`` learns from recent response times, here
those of warm-up rounds on the fast plants. The product's figure is the round's
time with that learned grace; the references are the fast plants' training
time and a round that waits for every plant (grace longer than the slow plant).

Run: ``python -m bench.straggler [--repeats N] [--json]``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench._faults import quiet_result_backend, sleepy_plant
from bench.support import (
    BENCH_SETTINGS,
    add_common_options,
    configure_bench_logging,
    emit,
    format_table,
    median_s,
)
from coordinator.localfed import LocalFederation
from coordinator.manager import ParallelExecutionManager
from coordinator.rounds import RoundResult
from coordinator.tuning import PRESETS, NetworkPreset, RoundTiming, plan_round_timing
from plantfed.modelio import encode_weights
from worker.trainers.noop import NoopTrainer

FAST_S = 0.5
SLOW_S = 5.0
FAST_SITES = ("plant-a", "plant-b")
SLOW_SITE = "plant-c"
WARM_UP_ROUNDS = 3
DEADLINE_S = 30.0


def warm_up(manager: ParallelExecutionManager, model_hash: str) -> RoundTiming:
    """Run rounds on the fast plants and learn the timing from their response times."""
    durations_s: list[float] = []
    for _ in range(WARM_UP_ROUNDS):
        result = manager.execute_parallel_round(
            model_hash, "sleepy", deadline_s=DEADLINE_S, datasites=list(FAST_SITES)
        )
        durations_s += [o.train_s for o in result.datasite_results.values() if o.completed]
    return plan_round_timing(durations_s, PRESETS[NetworkPreset.PLANT_LAN])


def straggler_round(
    manager: ParallelExecutionManager, model_hash: str, grace_s: float
) -> RoundResult:
    return manager.execute_parallel_round(
        model_hash, "sleepy", deadline_s=DEADLINE_S, grace_s=grace_s
    )


def measure(repeats: int, log_dir: Path) -> dict[str, Any]:
    """Start a federation, learn the grace, and time straggler rounds with and without it."""
    plants = [sleepy_plant(site, FAST_S) for site in FAST_SITES]
    plants.append(sleepy_plant(SLOW_SITE, SLOW_S))
    with LocalFederation(BENCH_SETTINGS, plants, log_dir=log_dir) as fed:
        assert fed.hq is not None
        quiet_result_backend(fed.hq)
        manager = ParallelExecutionManager(fed.hq, min_datasites=2)
        model = encode_weights(NoopTrainer().initial_weights(seed=0))
        model_hash = fed.hq.blobs.put(model, fed.hq.settings.model_ttl_s)
        timing = warm_up(manager, model_hash)
        learned = [straggler_round(manager, model_hash, timing.grace_s) for _ in range(repeats)]
        fed.wait_ready(fed.site_ids)
        wait_all = [straggler_round(manager, model_hash, SLOW_S * 2) for _ in range(repeats)]
    fast_s = [o.train_s for r in learned for s, o in r.datasite_results.items() if s != SLOW_SITE]
    slow_s = [r.datasite_results[SLOW_SITE].train_s for r in wait_all]
    return {
        "round_s": median_s([r.execution_time_s for r in learned]),
        "round_runs_s": [round(r.execution_time_s, 3) for r in learned],
        "fast_train_s": median_s(fast_s),
        "slow_train_s": median_s(slow_s),
        "wait_all_round_s": median_s([r.execution_time_s for r in wait_all]),
        "grace_s": timing.grace_s,
        "grace_reason": timing.reason,
        "close_reasons": sorted({r.status for r in learned}),
        "completed_sites": sorted({s for r in learned for s in r.completed_datasites}),
        "repeats": repeats,
    }


def print_table(figures: dict[str, Any]) -> None:
    rows = [
        ["round, learned grace (median)", f"{figures['round_s']:.2f} s",
         f"fast plants train {figures['fast_train_s']:.2f} s"],
        ["round waiting for every plant", f"{figures['wait_all_round_s']:.2f} s",
         f"slow plant trains {figures['slow_train_s']:.2f} s"],
        ["runs, learned grace", ", ".join(f"{v:.2f}" for v in figures["round_runs_s"]), ""],
        ["grace used", f"{figures['grace_s']:.2f} s", "quorum 2 of 3"],
        ["close reason", ", ".join(figures["close_reasons"]), ""],
    ]  # fmt: skip
    print(format_table(["figure", "plantfed", "reference"], rows), flush=True)
    print(f"grace: {figures['grace_reason']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of each kind (default 3)")
    args = parser.parse_args()
    configure_bench_logging(args.log_level)
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory(prefix="plantfed-straggler-") as log_dir:
        figures = measure(repeats, Path(log_dir))
    print_table(figures)
    emit(figures, args.json, args.out)


if __name__ == "__main__":
    main()
