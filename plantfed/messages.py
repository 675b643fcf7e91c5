"""Message types of the task contract between the coordinator and plant workers.

Everything here crosses the wire as JSON: task keyword arguments, task results,
liveness records and round events. Weights never do; they travel as blob hashes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

#: Celery task names of the contract; the coordinator sends by name, never by import.
TRAIN_TASK = "plantfed.train"
EVALUATE_TASK = "plantfed.evaluate"
CLOSE_ROUND_TASK = "plantfed.close_round"

JsonScalar = int | float | str | bool


def site_queue(site_id: str) -> str:
    """Return the queue a plant worker serves: ``site.<site_id>``."""
    return f"site.{site_id}"


class OutcomeStatus(StrEnum):
    """Status of one datasite's part of a round."""

    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    DISCARDED = "discarded"
    REJECTED = "rejected"
    LOST = "lost"


@dataclass(frozen=True)
class TrainRequest:
    """Keyword arguments of one training task."""

    campaign_id: str
    round_index: int
    attempt: int
    site_id: str
    trainer: str
    model_hash: str
    params: dict[str, JsonScalar]
    deadline_unix_s: float
    update_ttl_s: float
    round_token: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainRequest:
        return cls(**data)


@dataclass(frozen=True)
class SiteOutcome:
    """Small result of one site's training task; never contains weights."""

    campaign_id: str
    round_index: int
    attempt: int
    site_id: str
    status: OutcomeStatus
    samples: int = 0
    train_s: float = 0.0
    update_hash: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    worker: str | None = None
    stopped_at_deadline: bool = False
    round_token: str = ""

    @property
    def completed(self) -> bool:
        return self.status is OutcomeStatus.COMPLETED

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SiteOutcome:
        values = dict(data)
        values["status"] = OutcomeStatus(values["status"])
        return cls(**values)

    @classmethod
    def loads(cls, text: str | bytes) -> SiteOutcome:
        return cls.from_json(json.loads(text))


@dataclass(frozen=True)
class SiteLiveness:
    """Contents of a plant worker's liveness key."""

    site_id: str
    worker: str
    trainers: tuple[str, ...]
    samples: int
    version: str
    busy: bool
    pid: int
    started_unix_s: float
    written_unix_s: float
    data_error: str | None = None

    def dumps(self) -> str:
        data = asdict(self)
        data["trainers"] = list(self.trainers)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def loads(cls, text: str | bytes) -> SiteLiveness:
        data = json.loads(text)
        data["trainers"] = tuple(data["trainers"])
        return cls(**data)


@dataclass(frozen=True)
class EvaluateRequest:
    """Keyword arguments of one evaluation task: score a global model on a site's held-out data."""

    campaign_id: str
    round_index: int
    attempt: int
    site_id: str
    trainer: str
    model_hash: str
    ttl_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvaluateRequest:
        return cls(**data)


@dataclass(frozen=True)
class EvaluationOutcome:
    """Additive evaluation sums of one site, or the reason it has none."""

    site_id: str
    model_hash: str
    sums: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def loads(cls, text: str | bytes) -> EvaluationOutcome:
        return cls(**json.loads(text))
