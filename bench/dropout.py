"""Dropout: seconds from a plant's SIGKILL to the round closing with the other plants.

Three plants train with the ``sleepy`` test trainer: two finish in ``FAST_S``,
the third is still training when its whole process group is killed, ``KILL_AFTER_S``
into the round. The round's grace and deadline are long, so only noticing the
dead plant can close it early. The reference is a raw Celery chord of sleep
tasks on the same workers with the same kill: Celery never completes a chord
whose header task died with its worker, so it is reported as not completed
within the round's deadline. A control chord without a kill shows that the
chord body itself runs.

Run: ``python -m bench.dropout [--repeats N] [--json]``. Settings are the
defaults (heartbeat every 1 s, a site lost after 3 s without heartbeats).
"""

from __future__ import annotations

import argparse
import logging
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import chord

from bench._faults import (
    RAW_CHORD_BODY_TASK,
    SLEEP_TASK,
    quiet_result_backend,
    sleepy_plant,
    wait_task_done,
)
from bench.support import add_common_options, configure_bench_logging, emit, format_table, median_s
from coordinator.context import Hq
from coordinator.localfed import LocalFederation, PlantSpec
from coordinator.manager import ParallelExecutionManager
from plantfed.messages import site_queue
from plantfed.settings import Settings
from worker.trainers.noop import NoopTrainer

logger = logging.getLogger(__name__)

FAST_S = 1.0
SLOW_S = 8.0
KILL_AFTER_S = 2.0
DEADLINE_S = 20.0
GRACE_S = 20.0
SITES = ("plant-a", "plant-b", "plant-c")
VICTIM = "plant-c"


@dataclass(frozen=True)
class DropoutRun:
    """One round with a plant killed mid-task."""

    close_after_kill_s: float
    returned_after_kill_s: float
    status: str
    completed: list[str]


def run_dropout_round(fed: LocalFederation, manager: ParallelExecutionManager) -> DropoutRun:
    """Run one round, kill the victim plant mid-task, and time the close from the kill."""
    killed_unix_s: list[float] = []

    def kill() -> None:
        killed_unix_s.append(time.time())
        fed.plant_processes[VICTIM].signal_group(signal.SIGKILL)

    timer = threading.Timer(KILL_AFTER_S, kill)
    timer.start()
    model = NoopTrainer().initial_weights(seed=0)
    result = manager.execute_parallel_round(model, "sleepy", deadline_s=DEADLINE_S, grace_s=GRACE_S)
    returned_unix_s = time.time()
    timer.join()
    record = manager.hq.rounds.load(result.ref)
    assert record is not None and record.closing_unix_s is not None
    return DropoutRun(
        close_after_kill_s=record.closing_unix_s - killed_unix_s[0],
        returned_after_kill_s=returned_unix_s - killed_unix_s[0],
        status=result.status,
        completed=result.completed_datasites,
    )


def run_raw_chord(fed: LocalFederation, hq: Hq, kill: bool, limit_s: float) -> float | None:
    """Run a raw chord of sleep tasks, optionally killing the victim; seconds to complete."""
    sleeps_s = {site: (SLOW_S if kill and site == VICTIM else FAST_S) for site in SITES}
    header = [
        hq.app.signature(SLEEP_TASK, args=(sleeps_s[site],), queue=site_queue(site))
        for site in SITES
    ]
    body = hq.app.signature(RAW_CHORD_BODY_TASK, queue=hq.settings.hq_queue, immutable=True)
    started = time.monotonic()
    body_result = chord(header)(body)
    if kill:
        time.sleep(KILL_AFTER_S)
        fed.plant_processes[VICTIM].signal_group(signal.SIGKILL)
    done = wait_task_done(hq, body_result.id, limit_s - (time.monotonic() - started))
    return None if done is None else time.monotonic() - started


def restart_victim(fed: LocalFederation) -> None:
    fed.start_plant(victim_spec())
    fed.wait_ready(list(SITES))


def victim_spec() -> PlantSpec:
    return sleepy_plant(VICTIM, SLOW_S)


def measure(repeats: int, log_dir: Path) -> dict[str, Any]:
    """Start a federation, run the dropout rounds and both raw chords, and return the figures."""
    plants = [sleepy_plant("plant-a", FAST_S), sleepy_plant("plant-b", FAST_S), victim_spec()]
    settings = Settings(key_prefix="plantfed-bench")
    with LocalFederation(settings, plants, log_dir=log_dir) as fed:
        assert fed.hq is not None
        quiet_result_backend(fed.hq)
        manager = ParallelExecutionManager(fed.hq)
        runs = []
        for index in range(repeats):
            runs.append(run_dropout_round(fed, manager))
            logger.info("Dropout run %d: %s", index, runs[-1])
            restart_victim(fed)
        control_s = run_raw_chord(fed, fed.hq, kill=False, limit_s=DEADLINE_S)
        raw_s = run_raw_chord(fed, fed.hq, kill=True, limit_s=DEADLINE_S)
        thresholds = manager.thresholds
    return {
        "close_after_kill_s": median_s([r.close_after_kill_s for r in runs]),
        "close_after_kill_runs_s": [round(r.close_after_kill_s, 3) for r in runs],
        "returned_after_kill_s": median_s([r.returned_after_kill_s for r in runs]),
        "close_reasons": sorted({r.status for r in runs}),
        "completed_sites": sorted({s for r in runs for s in r.completed}),
        "raw_chord_completed": raw_s is not None,
        "raw_chord_waited_s": DEADLINE_S if raw_s is None else raw_s,
        "raw_chord_control_completed_s": control_s,
        "lost_after_s": thresholds.lost_after_s,
        "heartbeat_interval_s": settings.heartbeat_interval_s,
        "kill_after_s": KILL_AFTER_S,
        "deadline_s": DEADLINE_S,
        "repeats": repeats,
    }


def print_table(figures: dict[str, Any]) -> None:
    raw = (
        f"completed in {figures['raw_chord_waited_s']:.2f} s"
        if figures["raw_chord_completed"]
        else f"not completed within {figures['raw_chord_waited_s']:.0f} s"
    )
    control = figures["raw_chord_control_completed_s"]
    runs_s = figures["close_after_kill_runs_s"]
    rows = [
        ["SIGKILL -> round closed (median)", f"{figures['close_after_kill_s']:.2f} s", raw],
        ["SIGKILL -> round returned (median)", f"{figures['returned_after_kill_s']:.2f} s", ""],
        ["runs (close after kill)", ", ".join(f"{v:.2f}" for v in runs_s), ""],
        ["close reason", ", ".join(figures["close_reasons"]), ""],
        ["chord without a kill", "", "not completed" if control is None else f"{control:.2f} s"],
        ["site lost after", f"{figures['lost_after_s']:g} s without heartbeats", ""],
    ]  # fmt: skip
    print(format_table(["figure", "plantfed round", "raw Celery chord"], rows), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser)
    parser.add_argument("--repeats", type=int, default=3, help="rounds with a kill (default 3)")
    args = parser.parse_args()
    configure_bench_logging(args.log_level)
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory(prefix="plantfed-dropout-") as log_dir:
        figures = measure(repeats, Path(log_dir))
    print_table(figures)
    emit(figures, args.json, args.out)


if __name__ == "__main__":
    main()
