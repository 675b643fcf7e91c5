"""Publishing a round: the model blob, the round record and the chord of training tasks."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from celery import chord

from coordinator.context import Hq
from plantfed.keys import RoundRef
from plantfed.messages import CLOSE_ROUND_TASK, TRAIN_TASK, TrainRequest, site_queue
from plantfed.roundstore import RoundSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskLimits:
    """Celery limits of the training tasks, derived from the round deadline."""

    soft_time_limit_s: float
    time_limit_s: float
    expires_s: float


def task_id_for(ref: RoundRef, site_id: str) -> str:
    """Return the Celery task id of a site's training task in a round.

    Ids are derived from the round, so a coordinator that restarts can find and
    revoke the tasks of a round it did not dispatch itself.
    """
    return f"plantfed-{ref.campaign_id}-{ref.tag}-{site_id}"


def send_round(hq: Hq, spec: RoundSpec, limits: TaskLimits) -> dict[str, str]:
    """Send one training task per site, with the closing task as the chord body.

    Returns the task id of each site.
    """
    ref = spec.ref
    header = []
    task_ids: dict[str, str] = {}
    for site_id in spec.sites:
        request = TrainRequest(
            campaign_id=spec.campaign_id,
            round_index=spec.index,
            attempt=spec.attempt,
            site_id=site_id,
            trainer=spec.trainer,
            model_hash=spec.model_hash,
            params=dict(spec.params),
            deadline_unix_s=spec.deadline_unix_s,
            update_ttl_s=hq.settings.update_ttl_s,
            round_token=spec.token,
        )
        task_ids[site_id] = task_id_for(ref, site_id)
        header.append(
            hq.app.signature(
                TRAIN_TASK,
                kwargs=request.to_json(),
                queue=site_queue(site_id),
                task_id=task_ids[site_id],
                soft_time_limit=limits.soft_time_limit_s,
                time_limit=limits.time_limit_s,
                expires=limits.expires_s,
            )
        )
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
