"""Unit tests of the start-up checks of a one-machine federation and of the site table."""

from __future__ import annotations

from celery import Celery

from coordinator.commands import HQ_WORKER_PREFIX
from coordinator.health import SiteHealth, Verdict
from coordinator.heartbeats import HeartbeatMonitor, WorkerBeat
from coordinator.localfed import unusable_data_reasons
from coordinator.sitetable import format_hq_workers
from plantfed.messages import SiteLiveness


def site(site_id: str, verdict: Verdict, pid: int = 100, reason: str = "why") -> SiteHealth:
    liveness = SiteLiveness(
        site_id=site_id,
        worker=f"{site_id}@host",
        trainers=("ai4i-mlp",),
        samples=10,
        version="0.1.0",
        busy=False,
        pid=pid,
        started_unix_s=0.0,
        written_unix_s=0.0,
        data_error="bad" if verdict is Verdict.FAULTY else None,
    )
    return SiteHealth(site_id, verdict, reason, liveness, None)


def test_all_missing_sites_faulty_returns_reasons() -> None:
    health = {
        "a": site("a", Verdict.READY, pid=1),
        "b": site("b", Verdict.FAULTY, pid=2, reason="local data unusable: no data rows"),
        "c": site("c", Verdict.FAULTY, pid=3, reason="local data unusable: missing columns"),
    }

    reasons = unusable_data_reasons(health, {"a": 1, "b": 2, "c": 3})

    assert reasons == {
        "b": "local data unusable: no data rows",
        "c": "local data unusable: missing columns",
    }


def test_missing_site_not_faulty_keeps_waiting() -> None:
    health = {"a": site("a", Verdict.FAULTY, pid=1), "b": site("b", Verdict.LOST, pid=2)}

    assert unusable_data_reasons(health, {"a": 1, "b": 2}) is None


def test_faulty_key_of_earlier_worker_ignored() -> None:
    health = {"a": site("a", Verdict.FAULTY, pid=1)}

    assert unusable_data_reasons(health, {"a": 7}) is None
    assert unusable_data_reasons(health, {}) is None


def test_all_sites_ready_is_not_a_failure() -> None:
    health = {"a": site("a", Verdict.READY), "b": site("b", Verdict.BUSY)}

    assert unusable_data_reasons(health, {"a": 100, "b": 100}) is None


def test_monitor_lists_hq_workers_by_prefix() -> None:
    monitor = HeartbeatMonitor(Celery("unit", set_as_current=False))

    monitor._on_event({"type": "worker-heartbeat", "hostname": "plant-a@host", "freq": 1.0})
    monitor._on_event({"type": "worker-heartbeat", "hostname": "hq@b", "freq": 1.0})
    monitor._on_event({"type": "worker-online", "hostname": "hq@a", "freq": 1.0})
    monitor._on_event({"type": "task-failed", "uuid": "t1", "hostname": "hq@c"})

    assert [beat.worker for beat in monitor.beats(HQ_WORKER_PREFIX)] == ["hq@a", "hq@b"]
    assert len(monitor.beats()) == 3


def test_hq_line_names_workers_and_age() -> None:
    beats = [
        WorkerBeat("hq@a", 10.0, 1.0, 0, offline=False),
        WorkerBeat("hq@b", 8.0, 1.0, 0, offline=True),
    ]

    line = format_hq_workers(beats, 2.5, now_monotonic_s=12.0)

    assert line == (
        "HQ workers: hq@a (online, heartbeat 2.0s ago), hq@b (offline, heartbeat 4.0s ago)"
    )


def test_hq_line_says_none_seen() -> None:
    line = format_hq_workers([], 2.5)

    assert line.startswith("HQ workers: none seen on the event stream in 2.5 s")
    assert "plantfed hq-worker" in line
