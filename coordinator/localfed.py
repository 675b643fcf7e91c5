"""A federation on one machine: Redis, the HQ worker and plant workers as child processes.

The demo, the integration tests and the benchmarks all start their workers
through ``LocalFederation``, so every one of them runs the real processes a
deployment runs, and stops all of them by pid, also when something fails.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.context import Hq
from coordinator.health import SiteHealth, Verdict
from coordinator.manager import ParallelExecutionManager
from coordinator.processes import ChildProcess, hq_worker_argv, plant_worker_argv, stop_all
from plantfed.errors import NotEnoughSitesError, PlantfedError
from plantfed.redis_server import RedisServer
from plantfed.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlantSpec:
    """One plant worker process: the sites it serves, its data and trainers."""

    site_ids: tuple[str, ...]
    data_path: Path | None = None
    trainers: tuple[str, ...] = ("ai4i-mlp",)
    plugins: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return self.site_ids[0] if len(self.site_ids) == 1 else f"{self.site_ids[0]}+"


@dataclass
class LocalFederation:
    """Starts and stops the processes of a one-machine federation.

    Without ``settings.broker_url`` a private ``redis-server`` is started on a
    free loopback port and stopped at the end. ``stopped_processes`` counts the
    worker processes ``stop`` has stopped so far.
    """

    settings: Settings
    plants: Sequence[PlantSpec]
    log_dir: Path | None = None
    hq_worker: bool = True
    startup_timeout_s: float = 90.0
    env: dict[str, str] = field(default_factory=dict)
    redis: RedisServer | None = None
    children: list[ChildProcess] = field(default_factory=list)
    plant_processes: dict[str, ChildProcess] = field(default_factory=dict)
    hq: Hq | None = None
    stopped_processes: int = 0

    def start(self) -> LocalFederation:
        """Start everything and wait until every site is ready."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if not self.settings.broker_url:
            self.redis = RedisServer().start()
            self.settings = self.settings.with_broker(self.redis.url)
        if self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="plantfed-logs-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.hq_worker:
            self._spawn("hq-worker", hq_worker_argv(self.broker_url))
        for plant in self.plants:
            self.start_plant(plant)
        self.hq = Hq.connect(self.settings, listen=True)
        self.wait_ready(self.site_ids)

    @property
    def broker_url(self) -> str:
        assert self.settings.broker_url is not None
        return self.settings.broker_url

    @property
    def site_ids(self) -> list[str]:
        return sorted(site for plant in self.plants for site in plant.site_ids)

    def start_plant(self, plant: PlantSpec) -> ChildProcess:
        """Start (or restart) the worker process of ``plant``."""
        argv = plant_worker_argv(
            plant.site_ids,
            plant.data_path,
            plant.trainers,
            self.broker_url,
            plugins=plant.plugins,
            extra=plant.extra_args,
        )
        child = self._spawn(f"plant {plant.name}", argv, dict(plant.env))
        for site_id in plant.site_ids:
            self.plant_processes[site_id] = child
        return child

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ChildProcess:
        assert self.log_dir is not None
        log = self.log_dir / f"{name.replace(' ', '-').replace('+', '-more')}.log"
        environment = {**self.settings.to_env(), **self.env, **(env or {})}
        child = ChildProcess(name, argv, log, env=environment).start()
        self.children.append(child)
        return child

    def wait_ready(self, site_ids: Sequence[str], timeout_s: float | None = None) -> None:
        """Wait until every site in ``site_ids`` can train.

        Raises
        ------
        PlantfedError
            When a worker exits, or as soon as the worker of every site still
            missing reports unusable local data; the message gives each reason.
        NotEnoughSitesError
            When the sites are not ready within ``timeout_s`` (default
            ``startup_timeout_s``).
        """
        assert self.hq is not None
        limit_s = timeout_s or self.startup_timeout_s
        manager = ParallelExecutionManager(self.hq, min_datasites=len(site_ids))
        started = time.monotonic()
        while True:
            latest = {child.name: child for child in self.children}
            dead = [name for name, child in latest.items() if not child.alive()]
            if dead:
                raise PlantfedError(f"worker exited during start-up: {', '.join(dead)}")
            readiness = manager.wait_for_datasites_ready(timeout_s=0.5, expected=site_ids)
            if readiness.ready:
                return

            # A worker reads its data once, at start, so its faulty verdict is final.
            health = manager.get_datasite_health(site_ids)
            faulty = unusable_data_reasons(health, self._plant_pids())
            if faulty is not None:
                listed = "; ".join(f"{site}: {reason}" for site, reason in sorted(faulty.items()))
                raise PlantfedError(f"plant workers cannot use their local data: {listed}")
            now = time.monotonic()
            if now - started > limit_s:
                waited = dataclasses.replace(readiness, waited_s=now - started)
                raise NotEnoughSitesError(waited.describe())

    def _plant_pids(self) -> dict[str, int]:
        return {site: child.pid for site, child in self.plant_processes.items() if child.alive()}

    def stop(self) -> None:
        """Stop every process this federation started, by pid, and its Redis."""
        if self.hq is not None:
            self.hq.close()
            self.hq = None
        stop_all(self.children)
        self.stopped_processes += len(self.children)
        self.children.clear()
        if self.redis is not None:
            self.redis.close()
            self.redis = None

    def __enter__(self) -> LocalFederation:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def unusable_data_reasons(
    health: Mapping[str, SiteHealth], plant_pids: Mapping[str, int]
) -> dict[str, str] | None:
    """Return the reason of each site that cannot train, when all of them have unusable data.

    A site counts only when its faulty verdict comes from the worker process
    serving it now (by pid), not from a liveness key an earlier worker left.
    Returns None when a site that cannot train is not faulty in that way, so it
    may still become ready, or when every site can train.
    """
    reasons: dict[str, str] = {}
    for site_id, site in health.items():
        if site.verdict.can_train:
            continue
        live = site.liveness
        current = live is not None and plant_pids.get(site_id) == live.pid
        if site.verdict is not Verdict.FAULTY or not current:
            return None
        reasons[site_id] = site.reason
    return reasons or None
