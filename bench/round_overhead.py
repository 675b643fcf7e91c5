"""Round overhead: a plantfed round of no-op training beside a raw Celery chord of no-op tasks.

Both run in the same federation, on the same plant worker processes, in
alternating order: the plantfed round through ``ParallelExecutionManager``
(health read, round record, chord of ``plantfed.train`` with trainer ``noop``,
closing gate and merge on the HQ worker, outcomes read back), and the raw chord
of ``bench.noop`` tasks on the same site queues with a body that wakes the
benchmark through a Redis list. Many sites share one worker process (sites are
dealt to processes in turn), because the machine has only 2 cores.

The plantfed figure is also broken down by phase (see ``PhaseTimer``), which shows
where its time goes beyond the chord's.

Run from the repository root::

    python -m bench.round_overhead            # N = 3, 10, 100
    python -m bench.round_overhead --quick    # N = 3, 10
    python -m bench.round_overhead --with-1000 --json --out results/round_overhead.json
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from celery import chord

import coordinator.collect
import coordinator.manager
import coordinator.rounds
from bench.plugins import CHORD_DONE_TASK, NOOP_TASK
from bench.support import (
    PLUGIN_MODULE,
    add_common_options,
    bench_federation,
    configure_bench_logging,
    emit,
    format_table,
    median_s,
)
from coordinator.context import Hq
from coordinator.localfed import PlantSpec
from coordinator.manager import ParallelExecutionManager
from plantfed.messages import site_queue
from plantfed.modelio import encode_weights
from plantfed.roundstore import RoundStore
from worker.trainers.noop import NoopTrainer

logger = logging.getLogger(__name__)

#: Site that runs the raw chord's body, in its own worker process like the HQ worker.
BODY_SITE = "bench-body"

#: Maximum wait for one round or chord before the benchmark gives up on it.
ROUND_TIMEOUT_S = 300.0

#: Phases of a plantfed round; ``other`` is the time outside every wrapped call.
PHASES = ("select", "dispatch", "wait", "close", "await_closure", "read_outcomes", "other")

#: (module or class, function name, phase) of each wrapped coordinator function.
#: Phases marked nested run inside ``wait`` and are reported beside the breakdown.
PHASE_FUNCTIONS: tuple[tuple[ModuleType | type, str, str], ...] = (
    (coordinator.manager, "read_site_health", "select"),
    (coordinator.manager, "select_sites", "select"),
    (coordinator.rounds, "send_round", "dispatch"),
    (coordinator.rounds, "wait_for_round", "wait"),
    (coordinator.rounds, "close_round", "close"),
    (coordinator.rounds, "await_closure", "await_closure"),
    (coordinator.rounds, "result_from_closure", "read_outcomes"),
    (coordinator.collect, "read_site_health", "wait.health"),
    (RoundStore, "outcomes", "outcome_reads"),
)
NESTED_PHASES = ("wait.health", "outcome_reads")


class PhaseTimer:
    """Accumulates the seconds spent in each round phase while active (a context manager).

    It replaces the functions in ``PHASE_FUNCTIONS`` with timed wrappers and puts
    the originals back on exit. Names that do not exist are skipped.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._saved: list[tuple[ModuleType | type, str, Callable[..., Any]]] = []

    def __enter__(self) -> PhaseTimer:
        for owner, name, phase in PHASE_FUNCTIONS:
            original = getattr(owner, name, None)
            if original is None:
                logger.warning("phase %s: %s.%s not found, not timed", phase, owner, name)
                continue
            self._saved.append((owner, name, original))
            setattr(owner, name, self._timed(original, phase))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    def take(self, total_s: float) -> dict[str, float]:
        """Return the seconds of each phase for a round of ``total_s``, then reset."""
        found = {phase: self.seconds.get(phase, 0.0) for phase in PHASES if phase != "other"}
        found["other"] = max(0.0, total_s - sum(found.values()))
        found.update({phase: self.seconds.get(phase, 0.0) for phase in NESTED_PHASES})
        self.seconds.clear()
        return found

    def _timed(self, function: Callable[..., Any], phase: str) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started

        return timed


@dataclass
class SiteCountResult:
    """Measurements at one site count."""

    sites: int
    plantfed_s: list[float] = field(default_factory=list)
    raw_chord_s: list[float] = field(default_factory=list)
    raw_dispatch_s: list[float] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)
    merge_s: list[float] = field(default_factory=list)
    task_s: list[float] = field(default_factory=list)
    incomplete_rounds: int = 0

    def to_json(self) -> dict[str, Any]:
        plantfed = median_s(self.plantfed_s)
        raw = median_s(self.raw_chord_s)
        phase_medians = {
            phase: median_s([p[phase] for p in self.phases]) for phase in self.phases[0]
        }
        return {
            "sites": self.sites,
            "repeats": len(self.plantfed_s),
            "plantfed_median_s": plantfed,
            "raw_chord_median_s": raw,
            "ratio": plantfed / raw,
            "plantfed_s": self.plantfed_s,
            "raw_chord_s": self.raw_chord_s,
            "raw_dispatch_median_s": median_s(self.raw_dispatch_s),
            "plantfed_phase_median_s": phase_medians,
            "merge_median_s": median_s(self.merge_s),
            "task_median_s": median_s(self.task_s) if self.task_s else None,
            "incomplete_rounds": self.incomplete_rounds,
        }


def deal_sites(site_count: int, sites_per_worker: int, max_workers: int) -> list[tuple[str, ...]]:
    """Deal ``site_count`` site ids to worker processes in turn.

    There are ``ceil(site_count / sites_per_worker)`` processes, at least 3 (so the
    smallest rounds run on separate processes) and at most ``max_workers``. Dealing
    in turn puts the first N sites of any round on as many processes as possible.
    """
    workers = math.ceil(site_count / sites_per_worker)
    workers = max(min(site_count, 3), min(workers, max_workers))
    names = [f"s{index:04d}" for index in range(site_count)]
    return [tuple(names[w::workers]) for w in range(workers)]


def run_plantfed_round(
    manager: ParallelExecutionManager, model_hash: str, sites: Sequence[str]
) -> tuple[float, bool, float, list[float]]:
    """Run one no-op round; returns its time, whether all sites completed, merge and task times."""
    started = time.perf_counter()
    result = manager.execute_parallel_round(
        model_hash, "noop", deadline_s=ROUND_TIMEOUT_S, grace_s=10.0, datasites=list(sites)
    )
    elapsed_s = time.perf_counter() - started
    complete = result.success and len(result.completed_datasites) == len(sites)
    if not complete:
        logger.warning(
            "%s: %d of %d sites completed (%s); failed: %s",
            result.ref, len(result.completed_datasites), len(sites), result.status,
            result.failed_datasites,
        )  # fmt: skip
    record = manager.hq.rounds.load(result.ref)
    merge_s = float(record.result.get("aggregate_s", 0.0)) if record and record.result else 0.0
    task_s = [o.train_s for o in result.datasite_results.values()]
    return elapsed_s, complete, merge_s, task_s


def run_raw_chord(hq: Hq, sites: Sequence[str]) -> tuple[float, float]:
    """Run a chord of ``bench.noop`` on the sites' queues; returns its total and dispatch time."""
    key = f"{hq.settings.key_prefix}:bench:chord-done:{uuid.uuid4().hex}"
    started = time.perf_counter()
    header = [hq.app.signature(NOOP_TASK, queue=site_queue(site)) for site in sites]
    body = hq.app.signature(
        CHORD_DONE_TASK, kwargs={"key": key}, queue=site_queue(BODY_SITE), immutable=True
    )
    chord(header)(body)
    dispatched = time.perf_counter()
    if hq.client.blpop([key], timeout=ROUND_TIMEOUT_S) is None:
        raise TimeoutError(f"raw chord of {len(sites)} tasks not done in {ROUND_TIMEOUT_S} s")
    return time.perf_counter() - started, dispatched - started


def measure_site_count(
    hq: Hq, model_hash: str, sites: Sequence[str], repeats: int, timer: PhaseTimer
) -> SiteCountResult:
    """Measure ``repeats`` plantfed rounds and raw chords on ``sites``, alternating their order.

    One unmeasured round and chord come first, so that caches (the model in each
    worker, connections) are warm for both.
    """
    manager = ParallelExecutionManager(hq, min_datasites=2)
    outcome = SiteCountResult(len(sites))
    run_plantfed_round(manager, model_hash, sites)
    run_raw_chord(hq, sites)
    timer.take(0.0)
    for repeat in range(repeats):
        order = ("plantfed", "raw") if repeat % 2 == 0 else ("raw", "plantfed")
        for kind in order:
            if kind == "raw":
                total_s, dispatch_s = run_raw_chord(hq, sites)
                outcome.raw_chord_s.append(total_s)
                outcome.raw_dispatch_s.append(dispatch_s)
                continue
            timer.take(0.0)
            elapsed_s, complete, merge_s, task_s = run_plantfed_round(manager, model_hash, sites)
            outcome.phases.append(timer.take(elapsed_s))
            outcome.plantfed_s.append(elapsed_s)
            outcome.merge_s.append(merge_s)
            outcome.task_s.extend(task_s)
            outcome.incomplete_rounds += 0 if complete else 1
        print(
            f"  N={len(sites)} repeat {repeat + 1}/{repeats}: plantfed "
            f"{outcome.plantfed_s[-1]:.3f} s, raw chord {outcome.raw_chord_s[-1]:.3f} s",
            file=sys.stderr,
            flush=True,
        )
    return outcome


def build_plants(dealt: Sequence[tuple[str, ...]]) -> list[PlantSpec]:
    """Return one plant worker per group of sites, plus the worker of the raw chord's body."""
    plants = [
        PlantSpec(group, None, trainers=("noop",), plugins=(PLUGIN_MODULE,)) for group in dealt
    ]
    plants.append(PlantSpec((BODY_SITE,), None, trainers=("noop",), plugins=(PLUGIN_MODULE,)))
    return plants


def print_report(results: Sequence[SiteCountResult], workers: int) -> None:
    """Print the ratio table and the phase breakdown of the plantfed rounds."""
    rows = []
    for result in results:
        data = result.to_json()
        rows.append([
            result.sites, data["repeats"], data["plantfed_median_s"],
            data["raw_chord_median_s"], data["ratio"], result.incomplete_rounds,
        ])  # fmt: skip
    print(f"Round overhead, no-op training, {workers} plant worker processes (median of repeats)")
    print(format_table(
        ["sites", "repeats", "plantfed_s", "raw_chord_s", "ratio", "incomplete"], rows
    ))  # fmt: skip
    print("\nWhere a plantfed round's time goes (median seconds per phase)")
    phase_rows = []
    for result in results:
        medians = result.to_json()["plantfed_phase_median_s"]
        phase_rows.append(
            [result.sites, *(medians[p] for p in PHASES), *(medians[p] for p in NESTED_PHASES),
             median_s(result.merge_s), median_s(result.raw_dispatch_s)]
        )  # fmt: skip
    headers = [
        "sites", *PHASES, "wait.health", "outcome_reads", "merge(hq)", "raw_dispatch",
    ]  # fmt: skip
    print(format_table(headers, phase_rows))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_options(parser)
    parser.add_argument(
        "--sites", type=int, nargs="+", help="site counts to measure (default 3 10 100)"
    )
    parser.add_argument("--with-1000", action="store_true", help="also measure 1000 sites")
    parser.add_argument("--repeats", type=int, help="measured repeats per site count")
    parser.add_argument(
        "--sites-per-worker", type=int, default=20, help="sites served by one worker process"
    )
    parser.add_argument(
        "--max-workers", type=int, default=10, help="maximum plant worker processes (default 10)"
    )
    return parser.parse_args(argv)


def repeats_for(site_count: int, args: argparse.Namespace) -> int:
    """Return the measured repeats at ``site_count``: fewer for larger rounds."""
    if args.repeats:
        return int(args.repeats)
    if args.quick:
        return 3
    if site_count <= 10:
        return 7
    if site_count <= 100:
        return 5
    return 3


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_bench_logging(args.log_level)
    counts = sorted(set(args.sites or ([3, 10] if args.quick else [3, 10, 100])))
    if args.with_1000:
        counts = sorted({*counts, 1000})
    dealt = deal_sites(max(counts), args.sites_per_worker, args.max_workers)
    site_ids = sorted(site for group in dealt for site in group)

    print(f"starting {len(dealt)} plant workers serving {len(site_ids)} sites", file=sys.stderr)
    log_dir = Path(tempfile.mkdtemp(prefix="plantfed-bench-round-"))
    federation = bench_federation(build_plants(dealt), log_dir)
    results: list[SiteCountResult] = []
    try:
        federation.start()
        assert federation.hq is not None
        hq = federation.hq
        model_hash = hq.blobs.put(encode_weights(NoopTrainer().initial_weights(0)), 3600.0)
        order = [f"s{index:04d}" for index in range(len(site_ids))]
        with PhaseTimer() as timer:
            for count in counts:
                sites = order[:count]
                results.append(
                    measure_site_count(hq, model_hash, sites, repeats_for(count, args), timer)
                )
    finally:
        federation.stop()

    print_report(results, len(dealt))
    print(f"(worker logs in {log_dir})")
    emit(
        {
            "benchmark": "round_overhead",
            "target": "ratio <= 1.5 at every site count",
            "plant_worker_processes": len(dealt),
            "results": [result.to_json() for result in results],
        },
        args.json,
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
