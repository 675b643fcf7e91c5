"""When to stop waiting for a round: a pure policy over what is known right now.

The round closes when every site answered; when quorum is reached and every
site still out is lost; when quorum is reached and the grace period since then
has passed; at the deadline; or early, when quorum can no longer be reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CloseReason(StrEnum):
    """Reason a round stopped waiting."""

    ALL_ANSWERED = "all_answered"
    QUORUM_REST_LOST = "quorum_rest_lost"
    GRACE_EXPIRED = "grace_expired"
    DEADLINE = "deadline"
    QUORUM_UNREACHABLE = "quorum_unreachable"
    COORDINATOR_ABORT = "coordinator_abort"


@dataclass(frozen=True)
class WaitSnapshot:
    """State of a round as the coordinator sees it at one instant.

    ``completed`` and ``failed`` are sites with a recorded outcome; ``lost`` are
    sites still out whose worker is judged lost; the rest of ``sites`` are pending.
    """

    sites: frozenset[str]
    completed: frozenset[str]
    failed: frozenset[str]
    lost: frozenset[str]
    now_s: float
    deadline_s: float
    quorum_reached_at_s: float | None


@dataclass(frozen=True)
class WaitPolicy:
    """Closing rule of a round.

    Attributes
    ----------
    min_completed
        Quorum: completed sites needed for the round to count.
    grace_s
        Time allowed after quorum for the remaining sites to answer.
    """

    min_completed: int
    grace_s: float

    def decide(self, snapshot: WaitSnapshot) -> CloseReason | None:
        """Return why the round should close now, or None to keep waiting."""
        answered = snapshot.completed | snapshot.failed
        outstanding = snapshot.sites - answered
        alive = outstanding - snapshot.lost
        quorum = len(snapshot.completed) >= self.min_completed
        if not outstanding:
            return CloseReason.ALL_ANSWERED
        if quorum and not alive:
            return CloseReason.QUORUM_REST_LOST
        if snapshot.now_s >= snapshot.deadline_s:
            return CloseReason.DEADLINE
        if len(snapshot.completed) + len(alive) < self.min_completed:
            return CloseReason.QUORUM_UNREACHABLE
        reached = snapshot.quorum_reached_at_s
        if quorum and reached is not None and snapshot.now_s - reached >= self.grace_s:
            return CloseReason.GRACE_EXPIRED
        return None
