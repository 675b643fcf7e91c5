"""Rounds on real worker processes while plants die, freeze, fail or misbehave.

Every plant runs the test trainers of ``tests.support.fault_trainers``; each
plant shifts the model by its own amount, so the merged model shows exactly
which updates a round counted.
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordinator.campaign import CampaignRunner, RoundOutput
from coordinator.config import CampaignConfig, campaign_config_from_dict
from coordinator.dispatch import task_id_for, train_request
from coordinator.health import HealthThresholds, Verdict
from coordinator.localfed import LocalFederation, PlantSpec
from coordinator.manager import ParallelExecutionManager
from coordinator.rounds import (
    NOT_STARTED,
    RECORD_LOST,
    RoundPlan,
    RoundResult,
    run_round,
    select_round_sites,
)
from coordinator.waiting import CloseReason
from plantfed.keys import RoundRef
from plantfed.messages import TRAIN_TASK, OutcomeStatus, site_queue
from plantfed.modelio import Weights, decode_weights, encode_weights
from tests.conftest import REPO_ROOT
from worker.trainers import registry
from worker.trainers.noop import NoopTrainer
from worker.training import DISCARDED_UPDATE_TTL_S

pytestmark = pytest.mark.integration

FAULT_PLUGIN = "tests.support.fault_trainers"
THRESHOLDS = HealthThresholds(liveness_interval_s=1.0, lost_after_s=3.0)


def fault_plant(
    site: str, shift: float, sleep_s: float = 0.5, fault: str | None = None
) -> PlantSpec:
    """A plant without data that offers the test trainers."""
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": python_path, "PLANTFED_TEST_SLEEP_S": str(sleep_s)}
    env["PLANTFED_TEST_SHIFT"] = str(shift)
    if fault is not None:
        env["PLANTFED_TEST_FAULT"] = fault
    return PlantSpec(
        (site,),
        None,
        trainers=("sleepy", "faulty"),
        plugins=(FAULT_PLUGIN,),
        env=tuple(sorted(env.items())),
    )


def initial_model() -> Weights:
    return NoopTrainer().initial_weights(seed=3)


def manager_for(fed: LocalFederation, min_datasites: int = 2) -> ParallelExecutionManager:
    assert fed.hq is not None
    return ParallelExecutionManager(fed.hq, min_datasites=min_datasites, thresholds=THRESHOLDS)


def after(delay_s: float, action: Callable[[], object]) -> threading.Timer:
    """Run ``action`` in a timer thread ``delay_s`` from now, while the test runs a round.

    The round itself runs in the test's thread, because Celery keeps one result
    backend per thread and the coordinator configures only its own thread's.
    """
    timer = threading.Timer(delay_s, action)
    timer.daemon = True
    timer.start()
    return timer


def merged_model(fed: LocalFederation, model_hash: str) -> Weights:
    assert fed.hq is not None
    return decode_weights(fed.hq.blobs.get(model_hash))


def assert_merged_shifts(fed: LocalFederation, model_hash: str, shifts: list[float]) -> None:
    """Check that ``model_hash`` is the initial model moved by the mean of ``shifts``."""
    merged = merged_model(fed, model_hash)
    for name, start in initial_model().items():
        expected = start.astype(np.float64) + float(np.mean(shifts))
        np.testing.assert_allclose(merged[name], expected, rtol=0, atol=1e-5)


def wait_task_result(fed: LocalFederation, task_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """Return the result a training task stored once it returned.

    A task revoked while it runs is first stored as revoked; the task still
    returns its outcome, which then replaces that state.
    """
    assert fed.hq is not None
    give_up = time.monotonic() + timeout_s
    meta: dict[str, Any] = {}
    while time.monotonic() < give_up:
        meta = fed.hq.app.backend.get_task_meta(task_id)
        if meta["status"] == "SUCCESS":
            return dict(meta["result"])
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} returned nothing within {timeout_s} s: {meta}")


def wait_task_done(fed: LocalFederation, task_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """Return the stored state of a task once it returned or failed."""
    assert fed.hq is not None
    give_up = time.monotonic() + timeout_s
    meta: dict[str, Any] = {}
    while time.monotonic() < give_up:
        meta = fed.hq.app.backend.get_task_meta(task_id)
        if meta["status"] in ("SUCCESS", "FAILURE"):
            return dict(meta)
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish within {timeout_s} s: {meta}")


def wait_for_verdict(
    manager: ParallelExecutionManager, site: str, verdict: Verdict, timeout_s: float = 15.0
) -> None:
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if manager.get_datasite_health([site])[site].verdict is verdict:
            return
        time.sleep(0.2)
    health = manager.get_datasite_health([site])[site]
    raise AssertionError(f"{site} is {health.verdict.value} ({health.reason}), not {verdict.value}")


def test_sigkill_mid_round(federation):
    fed = federation(
        [
            fault_plant("plant-a", shift=1.0, sleep_s=6.0),
            fault_plant("plant-b", shift=2.0, sleep_s=6.0),
            fault_plant("plant-c", shift=4.0, sleep_s=6.0),
        ]
    )
    manager = manager_for(fed)
    model = initial_model()

    started = time.monotonic()
    after(2.0, lambda: fed.plant_processes["plant-c"].signal_group(signal.SIGKILL))
    result = manager.execute_parallel_round(model, "sleepy", deadline_s=15.0, grace_s=10.0)
    took_s = time.monotonic() - started

    assert result.success
    assert result.status == CloseReason.QUORUM_REST_LOST.value
    assert result.closed_by == "coordinator"
    assert result.completed_datasites == ["plant-a", "plant-b"]
    assert list(result.failed_datasites) == ["plant-c"]
    assert result.failed_datasites["plant-c"].startswith("lost")
    assert sorted(result.datasite_results) == ["plant-a", "plant-b"]
    assert result.samples == 2
    assert took_s < 15.0, f"the round waited {took_s:.1f} s, past its deadline"
    assert_merged_shifts(fed, result.model_hash_out, [1.0, 2.0])
    record = fed.hq.rounds.load(result.ref)
    assert record is not None
    assert record.result is not None
    assert record.result["model_hash_out"] == result.model_hash_out
    assert record.result["completed"] == ["plant-a", "plant-b"]
    assert set(record.result["failed"]) == {"plant-c"}

    fed.plant_processes["plant-b"].signal_group(signal.SIGKILL)
    wait_for_verdict(manager, "plant-b", Verdict.LOST)
    next_round = manager.execute_parallel_round(
        result.model_hash_out, "sleepy", datasites=["plant-a", "plant-b", "plant-c"]
    )

    assert next_round.status == NOT_STARTED
    assert not next_round.success
    assert next_round.completed_datasites == []
    assert sorted(next_round.excluded_datasites) == ["plant-b", "plant-c"]
    assert next_round.excluded_datasites["plant-b"].startswith("lost")
    assert next_round.excluded_datasites["plant-c"].startswith("lost")
    assert next_round.model_hash_out == result.model_hash_out


def test_sigstop_plant_left_behind(federation):
    fed = federation(
        [
            fault_plant("plant-a", shift=1.0, sleep_s=3.0),
            fault_plant("plant-b", shift=2.0, sleep_s=3.0),
            fault_plant("plant-c", shift=4.0, sleep_s=3.0),
        ]
    )
    manager = manager_for(fed)
    model = initial_model()
    frozen = fed.plant_processes["plant-c"]

    after(1.5, lambda: frozen.signal_group(signal.SIGSTOP))
    try:
        result = manager.execute_parallel_round(model, "sleepy", deadline_s=15.0, grace_s=10.0)
    finally:
        frozen.signal_group(signal.SIGCONT)
    assert fed.hq is not None
    record = fed.hq.rounds.load(result.ref)
    assert record is not None
    meta = wait_task_done(fed, task_id_for(record.spec, "plant-c"))
    late = meta["result"] if meta["status"] == "SUCCESS" else {}

    assert result.success
    assert result.status == CloseReason.QUORUM_REST_LOST.value
    assert result.completed_datasites == ["plant-a", "plant-b"]
    assert result.failed_datasites["plant-c"].startswith("lost")
    assert_merged_shifts(fed, result.model_hash_out, [1.0, 2.0])
    if meta["status"] == "SUCCESS":
        assert late["status"] == OutcomeStatus.DISCARDED.value, late
        assert "discarded" in late["error"]
    else:
        # The revocation's signal can land after the task returned its discarded
        # outcome, while Celery stores it; Celery then records the signal instead.
        assert meta["status"] in ("FAILURE", "REVOKED"), meta
    assert "plant-c" not in fed.hq.rounds.outcomes(result.ref)
    record = fed.hq.rounds.load(result.ref)
    assert record is not None
    assert record.result is not None
    assert record.result["completed"] == ["plant-a", "plant-b"]
    assert record.result["model_hash_out"] == result.model_hash_out
    if late.get("update_hash"):
        ttl_ms = fed.hq.client.pttl(fed.hq.keys.blob(late["update_hash"]))
        assert 0 < ttl_ms <= DISCARDED_UPDATE_TTL_S * 1000


@pytest.mark.parametrize("target", ["main-process", "process-group"])
def test_sigterm_mid_task(federation, target):
    fed = federation(
        [
            fault_plant("plant-a", shift=1.0, sleep_s=3.0),
            fault_plant("plant-b", shift=2.0, sleep_s=3.0),
            fault_plant("plant-c", shift=4.0, sleep_s=3.0),
        ]
    )
    manager = manager_for(fed)
    model = initial_model()
    stopping = fed.plant_processes["plant-c"]
    if target == "main-process":
        after(1.0, lambda: os.kill(stopping.pid, signal.SIGTERM))
    else:
        after(1.0, lambda: stopping.signal_group(signal.SIGTERM))

    result = manager.execute_parallel_round(model, "sleepy", deadline_s=15.0, grace_s=10.0)

    assert result.success
    assert result.status == CloseReason.ALL_ANSWERED.value
    assert sorted(result.datasite_results) == ["plant-a", "plant-b", "plant-c"]
    if target == "main-process":
        # Warm shutdown: the running task finishes and counts, then the worker exits.
        assert result.completed_datasites == ["plant-a", "plant-b", "plant-c"]
        assert result.failed_datasites == {}
        assert_merged_shifts(fed, result.model_hash_out, [1.0, 2.0, 4.0])
    else:
        # The pool process dies with the group; its worker reports the task lost.
        assert result.completed_datasites == ["plant-a", "plant-b"]
        assert result.datasite_results["plant-c"].status is OutcomeStatus.FAILED
        assert "WorkerLostError" in result.failed_datasites["plant-c"]
        assert_merged_shifts(fed, result.model_hash_out, [1.0, 2.0])
    stopping.process.wait(20.0)
    wait_for_verdict(manager, "plant-c", Verdict.LOST)


def test_raising_trainer_fails_only_its_plant(federation):
    fed = federation(
        [
            fault_plant("plant-a", shift=1.0),
            fault_plant("plant-b", shift=2.0),
            fault_plant("plant-c", shift=4.0, fault="raises"),
        ]
    )
    manager = manager_for(fed)

    result = manager.execute_parallel_round(initial_model(), "faulty", deadline_s=10.0)

    assert result.success
    assert result.status == CloseReason.ALL_ANSWERED.value
    assert result.completed_datasites == ["plant-a", "plant-b"]
    failed = result.datasite_results["plant-c"]
    assert failed.status is OutcomeStatus.FAILED
    assert failed.error == "RuntimeError: sensor column 'torque' is empty"
    assert failed.update_hash is None
    assert "sensor column 'torque' is empty" in result.failed_datasites["plant-c"]
    assert_merged_shifts(fed, result.model_hash_out, [1.0, 2.0])


@pytest.mark.parametrize("fault", ["stuck", "swallow"])
def test_hard_limit_ends_unstoppable_task(federation, fault):
    fed = federation(
        [
            fault_plant("plant-a", shift=1.0),
            fault_plant("plant-b", shift=2.0),
            fault_plant("plant-c", shift=4.0, fault=fault),
        ]
    )
    assert fed.hq is not None
    plan = RoundPlan(
        trainer="faulty",
        params={"sleep_s": 3600.0},
        strategy={"name": "fedavg"},
        deadline_s=15.0,
        grace_s=12.0,
        soft_limit_s=2.0,
        hard_limit_s=4.0,
        thresholds=THRESHOLDS,
    )
    ref = RoundRef(f"hard-limit-{fault}", 0)
    model_hash = fed.hq.blobs.put(encode_weights(initial_model()), 600.0)

    started = time.monotonic()
    result = run_round(fed.hq, plan, ref, model_hash, select_round_sites(fed.hq, plan))
    took_s = time.monotonic() - started

    assert result.success
    assert result.status == CloseReason.ALL_ANSWERED.value
    assert result.completed_datasites == ["plant-a", "plant-b"]
    timed_out = result.datasite_results["plant-c"]
    assert timed_out.status is OutcomeStatus.TIMED_OUT
    assert "TimeLimitExceeded" in (timed_out.error or "")
    assert took_s < 12.0, f"closed after {took_s:.1f} s, not soon after the 4 s hard limit"
    assert_merged_shifts(fed, result.model_hash_out, [1.0, 2.0])


def send_copy(fed: LocalFederation, ref: RoundRef, site: str, task_id: str) -> None:
    """Send ``site``'s training task of round ``ref`` again, with the same keyword arguments."""
    assert fed.hq is not None
    hq = fed.hq
    give_up = time.monotonic() + 5.0
    record = hq.rounds.load(ref)
    while record is None and time.monotonic() < give_up:
        time.sleep(0.02)
        record = hq.rounds.load(ref)
    assert record is not None, f"{ref} was never opened"
    request = train_request(record.spec, site, hq.settings.update_ttl_s)
    hq.app.send_task(TRAIN_TASK, kwargs=request.to_json(), queue=site_queue(site), task_id=task_id)


def sleepy_plan(deadline_s: float = 15.0, grace_s: float = 10.0) -> RoundPlan:
    return RoundPlan(
        trainer="sleepy",
        params={},
        strategy={"name": "fedavg"},
        deadline_s=deadline_s,
        grace_s=grace_s,
        soft_limit_s=deadline_s + 5.0,
        hard_limit_s=deadline_s + 15.0,
        thresholds=THRESHOLDS,
    )


def test_same_task_twice_counts_once(federation):
    fed = federation(
        [
            fault_plant("plant-a", shift=1.0, sleep_s=1.0),
            fault_plant("plant-b", shift=2.0, sleep_s=1.0),
            fault_plant("plant-c", shift=4.0, sleep_s=4.0),
        ]
    )
    assert fed.hq is not None
    plan = sleepy_plan()
    ref = RoundRef("duplicate", 0)
    model_hash = fed.hq.blobs.put(encode_weights(initial_model()), 600.0)

    after(0.3, lambda: send_copy(fed, ref, "plant-a", "copy-of-plant-a"))
    result = run_round(fed.hq, plan, ref, model_hash, select_round_sites(fed.hq, plan))
    copy = wait_task_result(fed, "copy-of-plant-a")

    assert result.success
    assert result.status == CloseReason.ALL_ANSWERED.value
    assert result.completed_datasites == ["plant-a", "plant-b", "plant-c"]
    assert result.samples == 3
    assert_merged_shifts(fed, result.model_hash_out, [1.0, 2.0, 4.0])
    assert copy["status"] == OutcomeStatus.DISCARDED.value
    assert copy["error"] == "discarded at finish: duplicate"
    counted = result.datasite_results["plant-a"]
    assert counted.status is OutcomeStatus.COMPLETED
    assert counted.update_hash == copy["update_hash"]
    # The copy's update is byte-identical to the counted one, so they share one blob.
    ttl_ms = fed.hq.client.pttl(fed.hq.keys.blob(counted.update_hash))
    assert ttl_ms > DISCARDED_UPDATE_TTL_S * 1000


def test_closed_round_task_discarded(federation):
    fed = federation(
        [
            fault_plant("plant-a", shift=1.0, sleep_s=1.0),
            fault_plant("plant-b", shift=2.0, sleep_s=1.0),
        ]
    )
    assert fed.hq is not None
    plan = sleepy_plan()
    ref = RoundRef("redelivery", 0)
    model_hash = fed.hq.blobs.put(encode_weights(initial_model()), 600.0)
    result = run_round(fed.hq, plan, ref, model_hash, select_round_sites(fed.hq, plan))
    record_before = fed.hq.rounds.load(ref)
    outcomes_before = fed.hq.rounds.outcomes(ref)

    send_copy(fed, ref, "plant-b", "redelivered-plant-b")
    late = wait_task_result(fed, "redelivered-plant-b")

    assert result.success
    assert late["status"] == OutcomeStatus.DISCARDED.value
    assert late["error"] == "round is closed at task start"
    assert late["update_hash"] is None
    assert late["train_s"] < 0.5, "the task trained although its round was closed"
    assert fed.hq.rounds.load(ref) == record_before
    assert fed.hq.rounds.outcomes(ref) == outcomes_before
    assert_merged_shifts(fed, result.model_hash_out, [1.0, 2.0])


def test_redis_restart_mid_round(federation, redis_server):
    fed = federation(
        [
            fault_plant("plant-a", shift=1.0, sleep_s=3.0),
            fault_plant("plant-b", shift=2.0, sleep_s=3.0),
            fault_plant("plant-c", shift=4.0, sleep_s=3.0),
        ]
    )
    manager = manager_for(fed)
    model = initial_model()

    after(1.0, redis_server.restart)
    started = time.monotonic()
    result = manager.execute_parallel_round(model, "sleepy", deadline_s=12.0, grace_s=10.0)
    took_s = time.monotonic() - started

    assert not result.success
    assert result.status == RECORD_LOST
    assert result.completed_datasites == []
    assert sorted(result.failed_datasites) == ["plant-a", "plant-b", "plant-c"]
    assert result.model_hash_out == result.model_hash_in
    assert took_s < 12.0, f"the round took {took_s:.1f} s to notice its record was gone"

    fed.wait_ready(fed.site_ids, timeout_s=30.0)
    later = manager.execute_parallel_round(model, "sleepy", deadline_s=12.0, grace_s=10.0)

    assert later.success
    assert later.completed_datasites == ["plant-a", "plant-b", "plant-c"]
    assert later.failed_datasites == {}
    assert_merged_shifts(fed, later.model_hash_out, [1.0, 2.0, 4.0])


def use_fault_trainers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the test trainers in this process, where the coordinator looks them up.

    A copy of the registry keeps them out of the registry other tests see.
    """
    monkeypatch.setattr(registry, "_registered", dict(registry._registered))
    fault_trainers = importlib.import_module(FAULT_PLUGIN)
    registry.register_trainer("sleepy", fault_trainers.SleepyTrainer)


def sleepy_campaign(
    tmp_path: Path, campaign_id: str, round_section: dict[str, Any], retries: int
) -> CampaignConfig:
    """A two-round campaign of trainer ``sleepy`` on plant-a, plant-b and plant-c."""
    return campaign_config_from_dict(
        {
            "id": campaign_id,
            "rounds": 2,
            "sites": ["plant-a", "plant-b", "plant-c"],
            "min_sites": 2,
            "checkpoint_dir": str(tmp_path / "checkpoints"),
            "trainer": {"name": "sleepy"},
            "round": {"preset": "plant-lan", **round_section},
            "failures": {"round_retries": retries, "retry_backoff_s": 0.5},
        }
    )


def test_redis_restart_mid_round_of_campaign(federation, redis_server, tmp_path, monkeypatch):
    use_fault_trainers(monkeypatch)
    fed = federation([fault_plant(f"plant-{n}", shift=1.0, sleep_s=3.0) for n in "abc"])
    assert fed.hq is not None
    config = sleepy_campaign(
        tmp_path, "restart-mid-round", {"deadline_s": 20, "grace_s": 10}, retries=4
    )

    after(1.0, redis_server.restart)
    summary = CampaignRunner(fed.hq, config).run()

    # The attempt Redis lost is retried with every site, and the model is stored again
    # for it: no plant fails for want of the model. A plant whose liveness key is not
    # back yet when the retry starts sits that attempt out, which is not a failure.
    assert summary.rounds_completed == 2
    assert summary.datasite_failures == 0
    first = summary.rounds[0]
    assert first["round_index"] == 0
    assert first["attempts"] >= 2
    assert len(first["completed_sites"]) >= 2
    assert first["failed_sites"] == []


def test_campaign_reruns_round_whose_model_redis_lost(federation, tmp_path, monkeypatch):
    use_fault_trainers(monkeypatch)
    fed = federation([fault_plant(f"plant-{n}", shift=1.0, sleep_s=0.2) for n in "abc"])
    assert fed.hq is not None
    hq = fed.hq
    config = sleepy_campaign(tmp_path, "model-lost", {"deadline_s": 20}, retries=2)
    read_output = CampaignRunner._read_output
    lost: list[str] = []

    def lose_first_model(runner: CampaignRunner, result: RoundResult) -> RoundOutput | None:
        # As if Redis restarted between the close and this read: the new model is gone.
        if not lost:
            lost.append(result.model_hash_out)
            hq.client.delete(hq.keys.blob(result.model_hash_out))
        return read_output(runner, result)

    monkeypatch.setattr(CampaignRunner, "_read_output", lose_first_model)
    summary = CampaignRunner(hq, config).run()

    assert len(lost) == 1
    assert summary.rounds_completed == 2
    assert summary.datasite_failures == 0
    first = summary.rounds[0]
    assert first["attempts"] == 2
    assert first["completed_sites"] == ["plant-a", "plant-b", "plant-c"]


def test_bounded_concurrency_sends_in_waves(federation):
    fed = federation([fault_plant(f"plant-{n}", shift=1.0, sleep_s=1.0) for n in "abcd"])
    manager = manager_for(fed)

    started = time.monotonic()
    result = manager.execute_parallel_round(
        initial_model(), "sleepy", deadline_s=20.0, grace_s=10.0, max_concurrency=2
    )
    took_s = time.monotonic() - started

    assert result.success
    assert result.status == CloseReason.ALL_ANSWERED.value
    assert result.completed_datasites == ["plant-a", "plant-b", "plant-c", "plant-d"]
    assert took_s >= 2.0, "four 1 s tasks, two at a time, cannot finish in under 2 s"
    record = manager.hq.rounds.load(result.ref)
    assert record is not None
    assert record.closed_by == "coordinator"
    assert sorted(manager.hq.rounds.task_ids(result.ref)) == result.completed_datasites


def test_bounded_concurrency_moves_past_a_dead_plant(federation):
    fed = federation([fault_plant(f"plant-{n}", shift=1.0, sleep_s=2.0) for n in "abc"])
    manager = manager_for(fed)

    after(0.5, lambda: fed.plant_processes["plant-a"].signal_group(signal.SIGKILL))
    result = manager.execute_parallel_round(
        initial_model(), "sleepy", deadline_s=20.0, grace_s=10.0, max_concurrency=1
    )

    assert result.success
    assert result.completed_datasites == ["plant-b", "plant-c"]
    assert result.failed_datasites["plant-a"].startswith("lost")
