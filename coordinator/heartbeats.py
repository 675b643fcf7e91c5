"""Worker heartbeats and task failures from Celery's event stream.

A background thread consumes the event stream and keeps, per worker name, when
its last heartbeat arrived (on this machine's monotonic clock, so clock skew
between plants and HQ does not matter) and whether it announced going offline.
It also remembers task failures that the worker reports itself, such as a hard
time limit killing a pool process, which never reach the round's outcomes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery

logger = logging.getLogger(__name__)

#: Seconds between reconnection attempts while the broker is unreachable.
RECONNECT_DELAY_S = 0.5


@dataclass(frozen=True)
class TaskFailure:
    """A task failure a worker reported on the event stream."""

    description: str
    received_unix_s: float


@dataclass(frozen=True)
class WorkerBeat:
    """Last heartbeat seen from one worker."""

    worker: str
    last_seen_monotonic_s: float
    interval_s: float
    active_tasks: int
    offline: bool


class HeartbeatMonitor:
    """Consumes worker and task events in a daemon thread."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._beats: dict[str, WorkerBeat] = {}
        self._task_failures: dict[str, TaskFailure] = {}
        self._connected_since: float | None = None
        self._stop = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, name="heartbeats", daemon=True)

    def start(self) -> HeartbeatMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(timeout=5)

    def beat(self, worker: str) -> WorkerBeat | None:
        """Return the last heartbeat of ``worker``, or None if none was seen."""
        with self._lock:
            return self._beats.get(worker)

    def beats(self, prefix: str = "") -> list[WorkerBeat]:
        """Return the last heartbeat of each worker whose name starts with ``prefix``, by name."""
        with self._lock:
            return [beat for name, beat in sorted(self._beats.items()) if name.startswith(prefix)]

    def listening_s(self) -> float:
        """Seconds the stream has been consumed without interruption; 0 when disconnected."""
        with self._lock:
            since = self._connected_since
        return 0.0 if since is None else time.monotonic() - since

    def task_failure(self, task_id: str, since_unix_s: float = 0.0) -> str | None:
        """Return the failure a worker reported for ``task_id`` at or after ``since_unix_s``.

        A caller passes the time its round opened, so that a failure reported
        before it, in any earlier run, is ignored.
        """
        with self._lock:
            failure = self._task_failures.get(task_id)
        if failure is None or failure.received_unix_s < since_unix_s:
            return None
        return failure.description

    def _run(self) -> None:
        outage_logged = False
        while not self._stop.is_set():
            try:
                with self._app.connection_for_read() as connection:
                    self._receiver = self._app.events.Receiver(
                        connection, handlers={"*": self._on_event}
                    )
                    with self._lock:
                        self._connected_since = time.monotonic()
                    if outage_logged:
                        logger.info("Event stream consumed again")
                    outage_logged = False
                    self._receiver.capture(limit=None, timeout=None, wakeup=False)
            except Exception as exc:  # broker restart or outage: retry until stopped
                with self._lock:
                    self._connected_since = None
                if not outage_logged and not self._stop.is_set():
                    logger.warning("Event stream lost, reconnecting: %s", exc)
                    outage_logged = True
                self._stop.wait(RECONNECT_DELAY_S)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type", ""))
        if kind.startswith("worker-"):
            self._on_worker_event(kind, event)
        elif kind == "task-failed":
            failure = TaskFailure(describe_task_failure(event), time.time())
            with self._lock:
                self._task_failures[str(event.get("uuid"))] = failure

    def _on_worker_event(self, kind: str, event: dict[str, Any]) -> None:
        worker = str(event.get("hostname", ""))
        with self._lock:
            previous = self._beats.get(worker)
            offline = kind == "worker-offline"
            if previous is not None and offline and not previous.offline:
                logger.info("Worker %s went offline", worker)
            elif previous is not None and previous.offline and not offline:
                logger.info("Worker %s is back online", worker)
            self._beats[worker] = WorkerBeat(
                worker=worker,
                last_seen_monotonic_s=time.monotonic(),
                interval_s=float(event.get("freq", 2.0) or 2.0),
                active_tasks=int(event.get("active", 0) or 0),
                offline=offline,
            )


def describe_task_failure(event: dict[str, Any]) -> str:
    """Return the exception of a ``task-failed`` event as ``Type: message``.

    Celery reports a pool process killed by the hard time limit or a signal with
    the exception wrapped as ``ExceptionWithTraceback()``. The last line of the
    event's traceback then names the real one, such as ``WorkerLostError: ...``.
    """
    exception = str(event.get("exception") or "")
    if exception and not exception.startswith("ExceptionWithTraceback"):
        return exception
    lines = [line.strip() for line in str(event.get("traceback") or "").splitlines()]
    last = next((line for line in reversed(lines) if line), "")
    if not last:
        return exception or "no exception reported"
    name, sep, message = last.partition(":")
    return f"{name.rsplit('.', 1)[-1]}{sep}{message}"
