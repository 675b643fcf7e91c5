"""The chord body the HQ worker runs when every site of a round has answered."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from coordinator.closing import close_round
from coordinator.context import Hq
from coordinator.waiting import CloseReason
from plantfed.celery_app import app_settings
from plantfed.keys import RoundRef
from plantfed.messages import CLOSE_ROUND_TASK

_hq: Hq | None = None


def _connect(task: Task) -> Hq:
    global _hq
    if _hq is None:
        _hq = Hq.connect(app_settings(task.app))
    return _hq


@shared_task(name=CLOSE_ROUND_TASK, bind=True)
def close_round_task(self: Task, campaign_id: str, index: int, attempt: int) -> dict[str, Any]:
    """Close the round unless another closer did; returns the closure, or that none was made."""
    ref = RoundRef(campaign_id, index, attempt)
    closer = f"chord-body@{self.request.hostname}"
    closure = close_round(_connect(self), ref, closer, CloseReason.ALL_ANSWERED.value)
    if closure is None:
        return {"closed_by_me": False}
    return {"closed_by_me": True, **closure.to_json()}
