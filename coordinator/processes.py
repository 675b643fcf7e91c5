"""Child worker processes for one-machine runs: the demo, benchmarks and tests.

Each child runs in its own session (process group), so stopping it also stops
the prefork pool processes it started.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


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
        environment = {**os.environ, **self.env}
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=environment,
                start_new_session=True,
            )  # fmt: skip
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
        """Warm shutdown (SIGTERM); SIGKILL to the group when it does not exit in time."""
        if self.process is None:
            return
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0f s, killing it", self.name, timeout_s)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout_s)
        logger.info("Stopped %s, pid %d", self.name, self.pid)


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


def stop_all(children: Sequence[ChildProcess]) -> None:
    """Stop children in reverse start order, continuing past any failure."""
    for child in reversed(children):
        try:
            child.stop()
        except Exception as exc:  # keep stopping the rest
            logger.error("Could not stop %s: %s", child.name, exc)
