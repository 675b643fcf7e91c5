"""Start a plant worker: one Celery worker (prefork pool) serving ``site.<site_id>``."""

from __future__ import annotations

import importlib
import logging
import math
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis
from celery.signals import worker_ready, worker_shutdown

from plantfed.celery_app import configure_app
from plantfed.errors import ConfigError
from plantfed.keys import Keys
from plantfed.messages import SiteLiveness, site_queue
from plantfed.redisconn import connect
from plantfed.settings import Settings
from worker.liveness import LivenessKeeper
from worker.site import current_runtime, install_runtime, load_runtime, runtime_installed

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlantWorkerOptions:
    """Command-line options of ``plantfed worker``."""

    site_ids: tuple[str, ...]
    data_path: Path | None
    trainers: tuple[str, ...]
    plugins: tuple[str, ...] = ()
    concurrency: int = 1
    hostname: str | None = None
    loglevel: str = "INFO"

    @property
    def worker_name(self) -> str:
        """``<site_id>@<host>``, or ``sites-<first>+<n>@<host>`` for a multi-site worker."""
        host = self.hostname or socket.gethostname()
        if len(self.site_ids) == 1:
            return f"{self.site_ids[0]}@{host}"
        return f"{self.site_ids[0]}+{len(self.site_ids) - 1}@{host}"


_keeper: LivenessKeeper | None = None


@worker_ready.connect
def _start_liveness(sender: Any = None, **_: Any) -> None:
    global _keeper
    if not runtime_installed():
        return
    _keeper = LivenessKeeper(current_runtime(), str(getattr(sender, "hostname", "")))
    _keeper.write_once()
    _keeper.start()


@worker_shutdown.connect
def _stop_liveness(**_: Any) -> None:
    if _keeper is not None:
        _keeper.stop()


def run_plant_worker(settings: Settings, options: PlantWorkerOptions) -> None:
    """Load the site's data, then run the Celery worker until it receives a shutdown signal."""
    for site_id in options.site_ids:
        if not site_id or any(ch in site_id for ch in " ,:@*"):
            raise ConfigError(
                f"invalid site id {site_id!r}: use letters, digits, dots, dashes or underscores"
            )
    for module in options.plugins:
        importlib.import_module(module)
    app = configure_app(settings)
    refuse_live_duplicates(settings, options.site_ids)
    import worker.tasks  # noqa: F401  (registers the plant tasks on the app)

    install_runtime(load_runtime(settings, options.site_ids, options.data_path, options.trainers))
    queues = ",".join(site_queue(site_id) for site_id in options.site_ids)
    argv = [
        "worker",
        "--hostname",
        options.worker_name,
        "--queues",
        queues,
        "--pool",
        "prefork",
        "--concurrency",
        str(options.concurrency),
        "--loglevel",
        options.loglevel,
        "--task-events",
        "--heartbeat-interval",
        str(max(1, math.ceil(settings.heartbeat_interval_s))),
        "--without-gossip",
        "--without-mingle",
        "--prefetch-multiplier",
        "1",
    ]
    logger.info("Starting plant worker %s on queues %s", options.worker_name, queues)
    app.worker_main(argv)


def refuse_live_duplicates(settings: Settings, site_ids: tuple[str, ...]) -> None:
    """Raise ``ConfigError`` when another live worker already serves one of ``site_ids``.

    Two workers on one site queue would take turns at its tasks with different
    data. A worker that just died leaves a liveness key that is no longer
    rewritten, so the check watches the key for a little over one liveness
    interval: a key that is rewritten belongs to a live worker.
    """
    assert settings.broker_url is not None
    client = connect(settings.broker_url)
    keys = Keys(settings.key_prefix)
    try:
        first = _liveness_records(client, keys, site_ids)
        if not first:
            return
        time.sleep(settings.liveness_interval_s * 1.5 + 0.2)
        second = _liveness_records(client, keys, site_ids)
    finally:
        client.close()
    for site_id, record in second.items():
        earlier = first.get(site_id)
        if earlier is not None and record.written_unix_s > earlier.written_unix_s:
            raise ConfigError(
                f"site {site_id} is already served by {record.worker} (pid {record.pid}); "
                "stop that worker first, or give this one another site id"
            )


def _liveness_records(
    client: redis.Redis, keys: Keys, site_ids: tuple[str, ...]
) -> dict[str, SiteLiveness]:
    values = cast(list[bytes | None], client.mget([keys.site_alive(s) for s in site_ids]))
    return {
        site_id: SiteLiveness.loads(value)
        for site_id, value in zip(site_ids, values, strict=True)
        if value is not None
    }
