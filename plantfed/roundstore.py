"""Round records in Redis and the one gate through which a round closes.

A round record is a hash with an immutable ``spec`` (JSON), one ``site:<id>``
field per selected datasite, and a ``state`` that only moves forward:
``open`` -> ``closing`` -> ``closed``. The move out of ``open`` is a Lua script,
so exactly one caller (the chord body or the coordinator) wins it. Outcomes are
recorded by another script that accepts them only while the round is open.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from typing import Any, cast

import redis

from plantfed.keys import Keys, RoundRef
from plantfed.messages import SiteOutcome


class RoundState(StrEnum):
    """Life cycle of a round record."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class RecordResult(Enum):
    """Result of offering an outcome to a round."""

    RECORDED = 1
    ROUND_CLOSED = 0
    DUPLICATE = -1
    NOT_A_MEMBER = -2
    OTHER_OPENING = -3


_RECORD_OUTCOME = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'open' then return 0 end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[4] then return -3 end
if redis.call('HEXISTS', KEYS[1], 'site:' .. ARGV[1]) == 0 then return -2 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return -1 end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('RPUSH', KEYS[3], 'outcome:' .. ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return 1
"""

_OPEN_ROUND = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

_PASS_GATE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'open' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'closing', 'closed_by', ARGV[1],
           'close_reason', ARGV[2], 'closing_unix_s', ARGV[3])
redis.call('RPUSH', KEYS[2], 'closing')
return 1
"""

_FINISH_CLOSE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'closing' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'closed', 'result', ARGV[1], 'closed_unix_s', ARGV[2])
redis.call('RPUSH', KEYS[2], 'closed')
return 1
"""


@dataclass(frozen=True)
class RoundSpec:
    """Parameters of a round, written when it opens and never changed."""

    campaign_id: str
    index: int
    attempt: int
    sites: tuple[str, ...]
    trainer: str
    params: dict[str, Any]
    model_hash: str
    strategy: dict[str, Any]
    min_completed: int
    deadline_unix_s: float
    grace_s: float
    opened_unix_s: float
    timing_reason: str = ""
    excluded: dict[str, str] = field(default_factory=dict)
    declared_samples: dict[str, int] = field(default_factory=dict)
    server_state_hash: str | None = None
    token: str = ""
    max_concurrency: int | None = None

    @property
    def ref(self) -> RoundRef:
        return RoundRef(self.campaign_id, self.index, self.attempt)

    def dumps(self) -> str:
        data = asdict(self)
        data["sites"] = list(self.sites)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def loads(cls, text: str | bytes) -> RoundSpec:
        data = json.loads(text)
        data["sites"] = tuple(data["sites"])
        return cls(**data)


@dataclass(frozen=True)
class RoundRecord:
    """A round record as read back from Redis."""

    spec: RoundSpec
    state: RoundState
    closed_by: str | None
    close_reason: str | None
    closing_unix_s: float | None
    result: dict[str, Any] | None


class RoundStore:
    """Reads and writes round records, outcomes and round events."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._open_round = client.register_script(_OPEN_ROUND)
        self._record_outcome = client.register_script(_RECORD_OUTCOME)
        self._pass_gate = client.register_script(_PASS_GATE)
        self._finish_close = client.register_script(_FINISH_CLOSE)

    def open(self, spec: RoundSpec) -> bool:
        """Write a new open round record; return False when one already exists."""
        fields = ["state", RoundState.OPEN.value, "spec", spec.dumps(), "token", spec.token]
        for site in spec.sites:
            fields += [f"site:{site}", "1"]
        return bool(self._open_round(keys=[self._keys.round(spec.ref)], args=fields))

    def set_task_ids(self, ref: RoundRef, task_ids: dict[str, str]) -> None:
        """Remember which Celery task runs each site, adding to those already sent.

        The closer revokes them, and a resuming coordinator reads which sites of a
        round with bounded concurrency were sent their task.
        """
        merged = {**self.task_ids(ref), **task_ids}
        self._client.hset(self._keys.round(ref), "task_ids", json.dumps(merged))

    def mark_dispatched(self, ref: RoundRef) -> None:
        """Record that every training task of the round was handed to the broker."""
        self._client.hset(self._keys.round(ref), "dispatched_unix_s", repr(time.time()))

    def dispatched(self, ref: RoundRef) -> bool:
        """Return whether the round's tasks were handed to the broker."""
        return bool(self._client.hexists(self._keys.round(ref), "dispatched_unix_s"))

    def task_ids(self, ref: RoundRef) -> dict[str, str]:
        raw = self._client.hget(self._keys.round(ref), "task_ids")
        return cast(dict[str, str], json.loads(raw)) if raw else {}

    def load(self, ref: RoundRef) -> RoundRecord | None:
        """Return the record of ``ref``, or None when Redis has none."""
        raw = cast(dict[bytes, bytes], self._client.hgetall(self._keys.round(ref)))
        if b"spec" not in raw:
            return None
        text = {k.decode(): v.decode() for k, v in raw.items()}
        return RoundRecord(
            spec=RoundSpec.loads(text["spec"]),
            state=RoundState(text.get("state", RoundState.OPEN.value)),
            closed_by=text.get("closed_by"),
            close_reason=text.get("close_reason"),
            closing_unix_s=float(text["closing_unix_s"]) if "closing_unix_s" in text else None,
            result=json.loads(text["result"]) if "result" in text else None,
        )

    def state(self, ref: RoundRef, token: str | None = None) -> RoundState | None:
        """Return the round's state; None when there is no record, or ``token`` names another.

        A round index can be reused after Redis lost its data, so a task carries the
        token of the opening it belongs to, and a record with another token is not its round.
        """
        key = self._keys.round(ref)
        raw_state, raw_token = cast(list[bytes | None], self._client.hmget(key, ["state", "token"]))
        if raw_state is None:
            return None
        if token is not None and (raw_token or b"").decode() != token:
            return None
        return RoundState(raw_state.decode())

    def record_outcome(self, outcome: SiteOutcome, ttl_s: float) -> RecordResult:
        """Store ``outcome`` in its round if the round is open and the site belongs to it."""
        ref = RoundRef(outcome.campaign_id, outcome.round_index, outcome.attempt)
        keys = [self._keys.round(ref), self._keys.outcomes(ref), self._keys.events(ref)]
        args: list[str | int] = [
            outcome.site_id,
            outcome.dumps(),
            max(1, int(ttl_s * 1000)),
            outcome.round_token,
        ]
        return RecordResult(int(self._record_outcome(keys=keys, args=args)))

    def outcomes(self, ref: RoundRef, sites: Iterable[str] | None = None) -> dict[str, SiteOutcome]:
        """Return the recorded outcomes of a round (or of ``sites``), keeping those that name it."""
        key = self._keys.outcomes(ref)
        if sites is None:
            raw = cast(dict[bytes, bytes], self._client.hgetall(key))
        else:
            names = sorted(sites)
            values = cast(list[bytes | None], self._client.hmget(key, names)) if names else []
            raw = {n.encode(): v for n, v in zip(names, values, strict=True) if v is not None}
        result: dict[str, SiteOutcome] = {}
        for site, text in raw.items():
            outcome = SiteOutcome.loads(text)
            if (outcome.campaign_id, outcome.round_index, outcome.attempt) == (
                ref.campaign_id,
                ref.index,
                ref.attempt,
            ) and outcome.site_id == site.decode():
                result[outcome.site_id] = outcome
        return result

    def pass_gate(self, ref: RoundRef, closer: str, reason: str) -> bool:
        """Move the round from open to closing; True only for the one caller that did it."""
        keys = [self._keys.round(ref), self._keys.events(ref)]
        return bool(self._pass_gate(keys=keys, args=[closer, reason, repr(time.time())]))

    def finish_close(self, ref: RoundRef, result: dict[str, Any]) -> bool:
        """Store the round's result and mark it closed; False when it was not closing."""
        keys = [self._keys.round(ref), self._keys.events(ref)]
        args = [json.dumps(result, sort_keys=True), repr(time.time())]
        return bool(self._finish_close(keys=keys, args=args))

    def next_event(self, ref: RoundRef, timeout_s: float) -> str | None:
        """Pop the next round event, waiting up to ``timeout_s``; None on time-out."""
        popped = self._client.blpop([self._keys.events(ref)], timeout=max(timeout_s, 0.01))
        if popped is None:
            return None
        return cast(tuple[bytes, bytes], popped)[1].decode()

    def next_events(self, ref: RoundRef, timeout_s: float, limit: int = 1000) -> list[str]:
        """Pop every pending round event, waiting up to ``timeout_s`` for the first one."""
        first = self.next_event(ref, timeout_s)
        if first is None:
            return []
        rest = cast(list[bytes] | None, self._client.lpop(self._keys.events(ref), limit))
        return [first, *(event.decode() for event in rest or [])]

    def push_event(self, ref: RoundRef, event: str, ttl_s: float) -> None:
        """Append an event to a round's event list, waking its waiter."""
        key = self._keys.events(ref)
        pipe = self._client.pipeline(transaction=True)
        pipe.rpush(key, event)
        pipe.pexpire(key, max(1, int(ttl_s * 1000)))
        pipe.execute()
