"""The Celery application of plant workers, the HQ worker and the coordinator.

Each entry point builds its app from ``Settings`` with ``configure_app``; task
modules declare their tasks with ``shared_task``, so they attach to whichever
app the process made. A process that is configured twice (tests, benchmarks)
gets a fresh app with fresh connection pools, not a stale one.
"""

from __future__ import annotations

from celery import Celery

from plantfed.errors import ConfigError
from plantfed.messages import CLOSE_ROUND_TASK
from plantfed.settings import Settings


def configure_app(settings: Settings) -> Celery:
    """Build the Celery app for ``settings``, make it the current app and return it.

    Raises
    ------
    ConfigError
        When no broker URL is configured, or the timeouts are inconsistent.
    """
    settings.validate()
    if not settings.broker_url:
        raise ConfigError(
            "no broker configured: set PLANTFED_BROKER_URL (for example "
            "redis://127.0.0.1:6379/0) or broker_url in the [plantfed] table of the settings file"
        )
    transport_options = {"visibility_timeout": settings.visibility_timeout_s}
    app = Celery("plantfed", set_as_current=True)
    app.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.backend_url,
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        broker_transport_options=transport_options,
        result_backend_transport_options=transport_options,
        result_expires=int(settings.result_expires_s),
        result_backend_always_retry=True,
        # One backend object for every thread, so settings applied to it hold in all.
        result_backend_thread_safe=True,
        result_backend_max_retries=20,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_default_queue=settings.hq_queue,
        task_routes={CLOSE_ROUND_TASK: {"queue": settings.hq_queue}},
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        enable_utc=True,
    )
    app.conf.plantfed_settings = settings
    app.set_default()
    return app


def app_settings(app: Celery) -> Settings:
    """Return the settings ``app`` was configured with."""
    settings = app.conf.get("plantfed_settings")
    if not isinstance(settings, Settings):
        raise ConfigError("the Celery app is not configured; call configure_app() first")
    return settings
