"""The liveness keys a plant worker keeps in Redis while it runs.

Each site the worker serves gets ``site:<id>:alive`` rewritten every
``liveness_interval_s`` with a TTL of ``liveness_ttl_s``, so a coordinator that
just started sees at once which sites exist and what they offer. The keys are
deleted on a clean shutdown; after a crash they expire.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from celery.worker import state as worker_state

from plantfed import __version__
from plantfed.messages import SiteLiveness
from worker.site import PlantRuntime

logger = logging.getLogger(__name__)


class LivenessKeeper:
    """Background thread that writes a runtime's liveness keys on a timer."""

    def __init__(self, runtime: PlantRuntime, worker_name: str) -> None:
        self._runtime = runtime
        self._worker_name = worker_name
        self._started_unix_s = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="liveness", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer and delete the keys, so the sites read as gone at once."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            keys = [self._runtime.keys.site_alive(site) for site in self._runtime.site_ids]
            self._runtime.client.delete(*keys)
            logger.info("Sites %s: liveness keys removed", ",".join(self._runtime.site_ids))
        except Exception as exc:  # shutting down: report and carry on
            logger.warning("Sites %s: could not remove liveness keys: %s", self._site_list, exc)

    @property
    def _site_list(self) -> str:
        return ",".join(self._runtime.site_ids)

    def write_once(self) -> None:
        """Write every site's liveness key now."""
        settings = self._runtime.settings
        busy = bool(worker_state.active_requests)
        pipe = self._runtime.client.pipeline(transaction=False)
        for site_id in self._runtime.site_ids:
            record = SiteLiveness(
                site_id=site_id,
                worker=self._worker_name,
                trainers=tuple(sorted(self._runtime.offered)),
                samples=self._runtime.samples,
                version=__version__,
                busy=busy,
                pid=os.getpid(),
                started_unix_s=self._started_unix_s,
                written_unix_s=time.time(),
                data_error=self._runtime.data_error,
            )
            ttl_ms = int(settings.liveness_ttl_s * 1000)
            pipe.set(self._runtime.keys.site_alive(site_id), record.dumps(), px=ttl_ms)
        pipe.sadd(self._runtime.keys.site_index(), *self._runtime.site_ids)
        pipe.execute()

    def _run(self) -> None:
        interval_s = self._runtime.settings.liveness_interval_s
        while not self._stop.is_set():
            try:
                self.write_once()
                if self._failing:
                    logger.info("Sites %s: liveness keys written again", self._site_list)
                self._failing = False
            except Exception as exc:  # Redis down: keep trying, warn once per outage
                if not self._failing:
                    logger.warning("Sites %s: cannot write liveness keys: %s", self._site_list, exc)
                self._failing = True
            self._stop.wait(interval_s)
