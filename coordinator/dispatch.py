"""Sending a round's training tasks: as one chord, or in waves under bounded concurrency."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from celery import Signature, chord

from coordinator.context import Hq
from plantfed.messages import CLOSE_ROUND_TASK, TRAIN_TASK, TrainRequest, site_queue
from plantfed.roundstore import RoundSpec

logger = logging.getLogger(__name__)

#: Characters of the round opening's token in a task id: enough to tell openings apart.
TASK_ID_TOKEN_CHARS = 8


@dataclass(frozen=True)
class TaskLimits:
    """Celery limits of the training tasks, derived from the round deadline."""

    soft_time_limit_s: float
    time_limit_s: float
    expires_s: float


def task_id_for(spec: RoundSpec, site_id: str) -> str:
    """Return the Celery task id of a site's training task in a round.

    Ids are derived from the round record, so a coordinator that restarts can find
    and revoke the tasks of a round it did not dispatch itself. They include the
    opening's token: a round that Redis lost is opened again under the same tag,
    and a plant worker discards a task whose id it still remembers as revoked.
    """
    ref = spec.ref
    return f"plantfed-{ref.campaign_id}-{ref.tag}-{spec.token[:TASK_ID_TOKEN_CHARS]}-{site_id}"


def train_request(spec: RoundSpec, site_id: str, update_ttl_s: float) -> TrainRequest:
    """Return the keyword arguments of one site's training task in a round."""
    return TrainRequest(
        campaign_id=spec.campaign_id,
        round_index=spec.index,
        attempt=spec.attempt,
        site_id=site_id,
        trainer=spec.trainer,
        model_hash=spec.model_hash,
        params=dict(spec.params),
        deadline_unix_s=spec.deadline_unix_s,
        update_ttl_s=update_ttl_s,
        round_token=spec.token,
    )


def train_signature(hq: Hq, spec: RoundSpec, site_id: str, limits: TaskLimits) -> Signature:
    """Return the training task of one site in a round, with its limits."""
    request = train_request(spec, site_id, hq.settings.update_ttl_s)
    return hq.app.signature(
        TRAIN_TASK,
        kwargs=request.to_json(),
        queue=site_queue(site_id),
        task_id=task_id_for(spec, site_id),
        soft_time_limit=limits.soft_time_limit_s,
        time_limit=limits.time_limit_s,
        expires=limits.expires_s,
    )


def send_round(hq: Hq, spec: RoundSpec, limits: TaskLimits) -> dict[str, str]:
    """Send one training task per site, with the closing task as the chord body.

    Returns the task id of each site.
    """
    ref = spec.ref
    header = [train_signature(hq, spec, site_id, limits) for site_id in spec.sites]
    task_ids = {site_id: task_id_for(spec, site_id) for site_id in spec.sites}
    body = hq.app.signature(
        CLOSE_ROUND_TASK,
        kwargs={"campaign_id": ref.campaign_id, "index": ref.index, "attempt": ref.attempt},
        queue=hq.settings.hq_queue,
        immutable=True,
    )
    hq.rounds.set_task_ids(ref, task_ids)
    started = time.monotonic()
    chord(header)(body)
    logger.info(
        "%s: dispatched %d training tasks in %.3f s (soft limit %.1f s)",
        ref,
        len(header),
        time.monotonic() - started,
        limits.soft_time_limit_s,
    )
    return task_ids


class WaveDispatcher:
    """Keeps at most ``spec.max_concurrency`` training tasks of a round in flight.

    A round with bounded concurrency has no chord: the coordinator sends the
    first tasks, sends one more each time a site answers or is judged lost, and
    closes the round itself. The task ids in the round record say which sites
    were sent their task, so a resuming coordinator carries on where it stopped.
    """

    def __init__(self, hq: Hq, spec: RoundSpec, limits: Callable[[], TaskLimits]) -> None:
        if not spec.max_concurrency:
            raise ValueError(f"{spec.ref}: a wave dispatcher needs max_concurrency")
        self._hq = hq
        self._spec = spec
        self._limits = limits
        self._limit = spec.max_concurrency
        self._sent = set(hq.rounds.task_ids(spec.ref))

    def top_up(self, answered: Iterable[str], lost: Iterable[str]) -> None:
        """Send tasks to waiting sites until ``max_concurrency`` are in flight."""
        done = set(answered) | set(lost)
        in_flight = len(self._sent - done)
        waiting = [site for site in self._spec.sites if site not in self._sent]
        batch = waiting[: max(0, self._limit - in_flight)]
        if not batch:
            return
        limits = self._limits()
        for site_id in batch:
            train_signature(self._hq, self._spec, site_id, limits).apply_async()
        self._hq.rounds.set_task_ids(
            self._spec.ref, {site_id: task_id_for(self._spec, site_id) for site_id in batch}
        )
        self._sent.update(batch)
        logger.info(
            "%s: sent %d more training tasks (%d of %d sites sent, at most %d at once)",
            self._spec.ref,
            len(batch),
            len(self._sent),
            len(self._spec.sites),
            self._limit,
        )
