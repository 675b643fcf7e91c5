"""Child worker processes for one-machine runs: the demo, benchmarks and tests.

Each child runs in its own session (process group), so stopping it also stops
the prefork pool processes it started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

#: Set in a child's environment to the pid of the process that must outlive it.
PARENT_PID_ENV = "PLANTFED_PARENT_PID"

#: Seconds an orphaned child gets for its warm shutdown before its group is killed.
ORPHAN_GRACE_S = 15.0

#: Linux prctl option that delivers a signal to a process when its parent dies.
_PR_SET_PDEATHSIG = 1


@dataclass
class ChildProcess:
    """A ``plantfed`` subcommand running as a child process group."""

    name: str
    argv: list[str]
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def start(self) -> ChildProcess:
        environment = {**os.environ, **self.env, PARENT_PID_ENV: str(os.getpid())}
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        logger.info("Started %s, pid %d", self.name, self.process.pid)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the child and every process of its group."""
        if self.alive():
            os.killpg(self.pid, sig)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Warm shutdown, then SIGKILL to the group when it does not exit in time.

        SIGTERM goes to the main process only: a Celery worker then finishes its
        running task and stops its pool, which a SIGTERM to each pool process
        would cut short.
        """
        if self.process is None:
            return
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0f s, killing it", self.name, timeout_s)
        # Pool processes left behind by a worker that exited still hold its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout_s)
        logger.info("Stopped %s, pid %d", self.name, self.pid)


def die_with_parent() -> None:
    """Stop this process when the process that started it dies.

    Child workers of the demo, tests and benchmarks call this at start, so a
    parent killed with SIGKILL leaves no worker behind. Linux sends SIGTERM, a
    warm shutdown, at once; a watchdog thread kills the whole process group
    ``ORPHAN_GRACE_S`` later, because a warm shutdown can wait forever on a
    Redis that died with the parent. It does nothing when the process was not
    started by ``ChildProcess`` or the platform is not Linux.
    """
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    threading.Thread(target=_kill_group_when_orphaned, args=(int(parent),), daemon=True).start()
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)


def _kill_group_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    time.sleep(ORPHAN_GRACE_S)
    os.killpg(os.getpgid(0), signal.SIGKILL)


def plantfed_command(*args: str) -> list[str]:
    """Return the argv that runs a ``plantfed`` subcommand with this interpreter."""
    return [sys.executable, "-m", "coordinator.cli", *args]


def plant_worker_argv(
    site_ids: Sequence[str],
    data_path: Path | None,
    trainers: Sequence[str],
    broker_url: str,
    plugins: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> list[str]:
    """Return the argv of ``plantfed worker`` for the given sites."""
    argv = plantfed_command("worker", "--broker", broker_url)
    for site_id in site_ids:
        argv += ["--site", site_id]
    if data_path is not None:
        argv += ["--data", str(data_path)]
    for trainer in trainers:
        argv += ["--trainer", trainer]
    for plugin in plugins:
        argv += ["--plugin", plugin]
    return argv + list(extra)


def hq_worker_argv(broker_url: str, extra: Sequence[str] = ()) -> list[str]:
    """Return the argv of ``plantfed hq-worker``."""
    return plantfed_command("hq-worker", "--broker", broker_url, *extra)


def stop_all(children: Sequence[ChildProcess], timeout_s: float = 15.0) -> None:
    """Stop children together: SIGTERM to every group first, then wait for each.

    Warm shutdowns run in parallel, so stopping N workers takes about as long
    as stopping the slowest one. A child that fails to stop does not keep the
    others running.
    """
    for child in children:
        if child.process is not None and child.alive():
            child.process.send_signal(signal.SIGTERM)
    for child in reversed(children):
        try:
            child.stop(timeout_s)
        except Exception as exc:  # keep stopping the rest
            logger.error("Could not stop %s: %s", child.name, exc)
