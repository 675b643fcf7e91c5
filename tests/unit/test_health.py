"""Unit tests of site verdicts, from liveness records and a fake heartbeat monitor."""

from __future__ import annotations

import logging
import time

import pytest
from celery import Celery

from coordinator.health import HealthThresholds, SiteHealth, Verdict, apply_hooks, judge_site
from coordinator.heartbeats import HeartbeatMonitor, WorkerBeat, describe_task_failure
from plantfed.messages import SiteLiveness

THRESHOLDS = HealthThresholds(liveness_interval_s=2.0, lost_after_s=3.0)
NOW = 1_000_000.0
WORKER = "plant-a@host"


def liveness(age_s: float = 0.5, busy: bool = False, data_error: str | None = None) -> SiteLiveness:
    return SiteLiveness(
        site_id="plant-a",
        worker=WORKER,
        trainers=("noop",),
        samples=120,
        version="0.1.0",
        busy=busy,
        pid=4242,
        started_unix_s=NOW - 600.0,
        written_unix_s=NOW - age_s,
        data_error=data_error,
    )


class FakeMonitor:
    """Stands in for ``HeartbeatMonitor``: fixed beats and a fixed listening time."""

    def __init__(self, beats: dict[str, WorkerBeat], listening_s: float) -> None:
        self._beats = beats
        self._listening_s = listening_s

    def beat(self, worker: str) -> WorkerBeat | None:
        return self._beats.get(worker)

    def listening_s(self) -> float:
        return self._listening_s


def monitor(
    beat_age_s: float | None = 0.5,
    listening_s: float = 60.0,
    active_tasks: int = 0,
    offline: bool = False,
) -> FakeMonitor:
    beats = {}
    if beat_age_s is not None:
        beats[WORKER] = WorkerBeat(
            worker=WORKER,
            last_seen_monotonic_s=time.monotonic() - beat_age_s,
            interval_s=1.0,
            active_tasks=active_tasks,
            offline=offline,
        )
    return FakeMonitor(beats, listening_s)


def judge(
    record: SiteLiveness | None,
    fake: FakeMonitor | None,
    drain: dict[str, str] | None = None,
) -> SiteHealth:
    return judge_site("plant-a", record, drain, fake, THRESHOLDS, NOW)  # type: ignore[arg-type]


def test_fresh_site_is_ready() -> None:
    health = judge(liveness(), monitor())

    assert health.verdict is Verdict.READY
    assert "120 samples" in health.reason
    assert health.heartbeat_age_s == pytest.approx(0.5, abs=0.1)
    assert health.worker == WORKER


def test_missing_liveness_key_is_lost() -> None:
    health = judge(None, monitor())

    assert health.verdict is Verdict.LOST
    assert "no liveness key" in health.reason


def test_silent_worker_is_lost_while_its_key_lives() -> None:
    health = judge(liveness(), monitor(beat_age_s=3.5))

    assert health.verdict is Verdict.LOST
    assert "no heartbeat from plant-a@host for 3.5 s" in health.reason


def test_unheard_worker_is_lost() -> None:
    health = judge(liveness(), monitor(beat_age_s=None, listening_s=4.0))

    assert health.verdict is Verdict.LOST
    assert "for 4.0 s" in health.reason


def test_new_listener_does_not_call_a_site_lost() -> None:
    # A coordinator that started a second ago has not received any heartbeat yet.
    health = judge(liveness(), monitor(beat_age_s=None, listening_s=1.0))

    assert health.verdict is Verdict.READY


def test_without_monitor_liveness_decides() -> None:
    assert judge(liveness(), None).verdict is Verdict.READY
    assert judge(liveness(age_s=10.0), None).verdict is Verdict.STALE


def test_worker_shutting_down_is_draining_not_lost() -> None:
    health = judge(liveness(busy=True), monitor(offline=True))

    assert health.verdict is Verdict.DRAINING
    assert not health.verdict.can_train
    assert "shutting down" in health.reason


def test_worker_gone_after_shutdown_is_lost() -> None:
    health = judge(None, monitor(offline=True))

    assert health.verdict is Verdict.LOST


def test_operator_drain_wins() -> None:
    drain = {"reason": "bearing swap", "until_unix_s": str(NOW + 3600.0)}

    health = judge(liveness(), monitor(), drain)

    assert health.verdict is Verdict.DRAINING
    assert "bearing swap" in health.reason
    assert health.drained_until_unix_s == NOW + 3600.0


def test_unusable_data_is_faulty() -> None:
    health = judge(liveness(data_error="ai4i-mlp: no data path given"), monitor())

    assert health.verdict is Verdict.FAULTY
    assert "no data path given" in health.reason


def test_old_liveness_key_is_stale() -> None:
    # Stale after two missed refreshes and one second of slack: 2 * 2.0 + 1.0 s.
    assert judge(liveness(age_s=4.9), monitor()).verdict is Verdict.READY
    health = judge(liveness(age_s=5.1), monitor())

    assert health.verdict is Verdict.STALE
    assert "5.1 s ago" in health.reason


@pytest.mark.parametrize(
    ("busy", "active_tasks"),
    [(True, 0), (False, 1)],
    ids=["liveness-busy", "heartbeat-active"],
)
def test_running_task_is_busy(busy: bool, active_tasks: int) -> None:
    # The monitor is built here, not at collection time: its beat ages with the clock.
    health = judge(liveness(busy=busy), monitor(active_tasks=active_tasks))

    assert health.verdict is Verdict.BUSY
    assert health.verdict.can_train


def test_hook_vetoes_a_ready_site() -> None:
    health = judge(liveness(), monitor())

    vetoed = apply_hooks(health, [lambda h: None, lambda h: "maintenance window"])

    assert vetoed.verdict is Verdict.VETOED
    assert vetoed.reason == "maintenance window"


def test_failing_hook_vetoes() -> None:
    def broken(health: SiteHealth) -> str | None:
        raise TimeoutError("ping timed out")

    vetoed = apply_hooks(judge(liveness(), monitor()), [broken])

    assert vetoed.verdict is Verdict.VETOED
    assert "ping timed out" in vetoed.reason


def test_hooks_leave_a_lost_site_alone() -> None:
    lost = judge(None, monitor())

    assert apply_hooks(lost, [lambda h: "vetoed"]) == lost


def test_worker_events_update_beats() -> None:
    beats = HeartbeatMonitor(Celery("unit", set_as_current=False))

    beats._on_event({"type": "worker-heartbeat", "hostname": WORKER, "freq": 1.0, "active": 2})
    beat = beats.beat(WORKER)
    assert beat is not None
    assert beat.active_tasks == 2
    assert not beat.offline

    beats._on_event({"type": "worker-offline", "hostname": WORKER})
    beat = beats.beat(WORKER)
    assert beat is not None
    assert beat.offline


def test_worker_going_offline_and_back_logged(caplog: pytest.LogCaptureFixture) -> None:
    beats = HeartbeatMonitor(Celery("unit", set_as_current=False))
    caplog.set_level(logging.INFO, logger="coordinator.heartbeats")

    beats._on_event({"type": "worker-heartbeat", "hostname": WORKER})
    beats._on_event({"type": "worker-offline", "hostname": WORKER})
    beats._on_event({"type": "worker-online", "hostname": WORKER})
    beats._on_event({"type": "worker-heartbeat", "hostname": WORKER})

    messages = [r.getMessage() for r in caplog.records]
    assert messages == [f"Worker {WORKER} went offline", f"Worker {WORKER} is back online"]


def test_task_failure_before_round_opened_is_ignored() -> None:
    beats = HeartbeatMonitor(Celery("unit", set_as_current=False))
    beats._on_event({"type": "task-failed", "uuid": "t1", "exception": "ValueError('x')"})

    assert beats.task_failure("t1") == "ValueError('x')"
    assert beats.task_failure("t1", since_unix_s=time.time() - 60.0) == "ValueError('x')"
    assert beats.task_failure("t1", since_unix_s=time.time() + 60.0) is None
    assert beats.task_failure("unknown") is None


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"exception": "TimeLimitExceeded(4.0,)"}, "TimeLimitExceeded(4.0,)"),
        (
            {
                "exception": "ExceptionWithTraceback()",
                "traceback": "Traceback (most recent call last):\n  File 'x'\n"
                "billiard.exceptions.WorkerLostError: Worker exited prematurely: signal 15\n",
            },
            "WorkerLostError: Worker exited prematurely: signal 15",
        ),
        (
            {
                "exception": "ExceptionWithTraceback()",
                "traceback": "billiard.einfo.ExceptionWithTraceback: \n"
                "billiard.exceptions.TimeLimitExceeded: TimeLimitExceeded(4.0,)",
            },
            "TimeLimitExceeded: TimeLimitExceeded(4.0,)",
        ),
        ({"exception": "ExceptionWithTraceback()"}, "ExceptionWithTraceback()"),
        ({}, "no exception reported"),
    ],
    ids=["plain", "worker-lost", "hard-limit", "no-traceback", "empty"],
)
def test_describe_task_failure(event: dict[str, str], expected: str) -> None:
    assert describe_task_failure({"type": "task-failed", **event}) == expected
