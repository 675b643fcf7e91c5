"""Connections and stores the coordinator and the HQ worker share."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from celery import Celery

from coordinator.heartbeats import HeartbeatMonitor
from plantfed.blobs import BlobStore
from plantfed.celery_app import configure_app
from plantfed.keys import Keys
from plantfed.redisconn import connect
from plantfed.roundstore import RoundStore
from plantfed.settings import Settings


@dataclass
class Hq:
    """The coordinator's handles on Redis and Celery, made once per process."""

    settings: Settings
    app: Celery
    client: redis.Redis
    keys: Keys
    blobs: BlobStore
    rounds: RoundStore
    monitor: HeartbeatMonitor | None = field(default=None)

    @classmethod
    def connect(cls, settings: Settings, *, listen: bool = False) -> Hq:
        """Configure the Celery app and connect; ``listen`` starts the heartbeat monitor."""
        app = configure_app(settings)
        assert settings.broker_url is not None
        client = connect(settings.broker_url)
        keys = Keys(settings.key_prefix)
        monitor = HeartbeatMonitor(app).start() if listen else None
        return cls(
            settings, app, client, keys, BlobStore(client, keys), RoundStore(client, keys), monitor
        )

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        self.client.close()
