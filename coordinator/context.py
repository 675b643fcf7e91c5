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
        _stop_result_subscriptions(app)
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


def _stop_result_subscriptions(app: Celery) -> None:
    """Keep the Redis result backend from subscribing to every task this process sends.

    Celery's Redis backend subscribes to each sent task's result channel so that
    ``AsyncResult.get`` can return fast. The coordinator never waits on task
    results (outcomes are read from round records), so the subscriptions would
    only cost Redis commands per task, and unsubscribing from them when each
    ``AsyncResult`` is collected fails noisily at interpreter exit.
    """
    backend = app.backend
    backend.on_task_call = lambda producer, task_id: None
    backend.on_result_fulfilled = lambda result: None
