"""Shared parts of the fault benchmarks (dropout, stragglers), and their raw-chord task.

Plant workers of these benchmarks load this module with ``--plugin bench._faults``
for the ``bench.sleep`` task, the header of the raw Celery chord that the
product's round is compared with, and ``tests.support.fault_trainers`` for the
``sleepy`` trainer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from celery import shared_task

from bench.support import REPO_ROOT
from coordinator.context import Hq
from coordinator.localfed import PlantSpec

SLEEP_TASK = "bench.sleep"

#: Built-in Celery task that every worker, the HQ worker included, has registered;
#: the raw chord uses it as its body on the HQ queue.
RAW_CHORD_BODY_TASK = "celery.accumulate"

FAULT_PLUGINS = ("tests.support.fault_trainers", "bench._faults")


@shared_task(name=SLEEP_TASK)  # type: ignore[untyped-decorator]
def sleep(seconds: float) -> float:
    """Sleep ``seconds`` and return them: one header task of the raw-chord reference."""
    time.sleep(seconds)
    return seconds


def sleepy_plant(site: str, sleep_s: float, shift: float = 0.0) -> PlantSpec:
    """A plant without data whose ``sleepy`` trainer takes ``sleep_s`` seconds."""
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {
        "PYTHONPATH": python_path,
        "PLANTFED_TEST_SLEEP_S": str(sleep_s),
        "PLANTFED_TEST_SHIFT": str(shift),
    }
    return PlantSpec(
        (site,), None, trainers=("sleepy",), plugins=FAULT_PLUGINS, env=tuple(sorted(env.items()))
    )


def quiet_result_backend(hq: Hq) -> None:
    """Keep this thread's result backend from subscribing to the tasks it sends.

    Celery makes one result backend per thread; the benchmark polls results
    instead, like the coordinator does (see ``coordinator.context``).
    """
    backend = hq.app.backend
    backend.on_task_call = lambda producer, task_id: None
    backend.on_result_fulfilled = lambda result: None


def wait_task_done(hq: Hq, task_id: str, timeout_s: float) -> Mapping[str, Any] | None:
    """Poll the result backend until ``task_id`` succeeded; None when ``timeout_s`` passed."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        meta = hq.app.backend.get_task_meta(task_id)
        if meta["status"] == "SUCCESS":
            return dict(meta)
        time.sleep(0.05)
    return None
