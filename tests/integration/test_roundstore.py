"""Round records on a real Redis: the close gate and outcome recording."""

from __future__ import annotations

import threading
import time

import pytest

from plantfed.blobs import BlobStore
from plantfed.errors import BlobNotFoundError
from plantfed.keys import Keys, RoundRef
from plantfed.messages import OutcomeStatus, SiteOutcome
from plantfed.redisconn import connect
from plantfed.roundstore import RecordResult, RoundSpec, RoundState, RoundStore

pytestmark = pytest.mark.integration

REF = RoundRef("c1", 3, 1)


def make_spec(sites: tuple[str, ...] = ("a", "b")) -> RoundSpec:
    return RoundSpec(
        campaign_id=REF.campaign_id,
        index=REF.index,
        attempt=REF.attempt,
        sites=sites,
        trainer="noop",
        params={},
        model_hash="0" * 64,
        strategy={"name": "fedavg"},
        min_completed=1,
        deadline_unix_s=time.time() + 60,
        grace_s=1.0,
        opened_unix_s=time.time(),
    )


def outcome(site: str, ref: RoundRef = REF) -> SiteOutcome:
    return SiteOutcome(ref.campaign_id, ref.index, ref.attempt, site, OutcomeStatus.COMPLETED, 5)


@pytest.fixture
def store(redis_server):
    return RoundStore(connect(redis_server.url), Keys("t"))


def test_open_twice_keeps_first_record(store):
    assert store.open(make_spec())
    store.pass_gate(REF, "x", "deadline")

    assert not store.open(make_spec())
    assert store.state(REF) is RoundState.CLOSING


def test_gate_passes_exactly_once_under_race(store):
    store.open(make_spec())
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def contend(name: str) -> None:
        barrier.wait()
        if store.pass_gate(REF, name, "race"):
            winners.append(name)

    threads = [threading.Thread(target=contend, args=(f"closer-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(winners) == 1
    record = store.load(REF)
    assert record is not None
    assert record.closed_by == winners[0]


def test_outcomes_recorded_once_and_only_while_open(store):
    store.open(make_spec())

    first = store.record_outcome(outcome("a"), ttl_s=60)
    duplicate = store.record_outcome(outcome("a"), ttl_s=60)
    stranger = store.record_outcome(outcome("z"), ttl_s=60)
    store.pass_gate(REF, "x", "deadline")
    late = store.record_outcome(outcome("b"), ttl_s=60)

    assert first is RecordResult.RECORDED
    assert duplicate is RecordResult.DUPLICATE
    assert stranger is RecordResult.NOT_A_MEMBER
    assert late is RecordResult.ROUND_CLOSED
    assert list(store.outcomes(REF)) == ["a"]


def test_outcome_for_another_round_refused(store):
    store.open(make_spec())
    other = RoundRef("c1", 2, 1)

    result = store.record_outcome(outcome("a", other), ttl_s=60)

    assert result is RecordResult.ROUND_CLOSED
    assert store.outcomes(REF) == {}


def test_finish_close_only_from_closing(store):
    store.open(make_spec())

    assert not store.finish_close(REF, {"success": True})
    assert store.pass_gate(REF, "x", "all_answered")
    assert store.finish_close(REF, {"success": True})
    assert not store.finish_close(REF, {"success": False})
    record = store.load(REF)
    assert record is not None
    assert record.state is RoundState.CLOSED
    assert record.result == {"success": True}


def test_blob_store_verifies_and_expires(redis_server):
    client = connect(redis_server.url)
    blobs = BlobStore(client, Keys("t"))

    digest = blobs.put(b"weights", ttl_s=60)
    client.set(Keys("t").blob("f" * 64), b"tampered")

    assert blobs.get(digest) == b"weights"
    with pytest.raises(BlobNotFoundError, match="corrupt"):
        blobs.get("f" * 64)
    blobs.expire(digest, 0.05)
    time.sleep(0.2)
    with pytest.raises(BlobNotFoundError, match="never stored, or expired"):
        blobs.get(digest)


def test_blob_put_again_only_extends_expiry(redis_server):
    client = connect(redis_server.url)
    blobs = BlobStore(client, Keys("t"))
    key = Keys("t").blob(blobs.put(b"model", ttl_s=60))

    extended = blobs.put_new(b"model", ttl_s=120)
    extended_ttl_ms = client.pttl(key)
    shorter = blobs.put_new(b"model", ttl_s=10)
    kept_ttl_ms = client.pttl(key)
    client.delete(key)
    stored_again = blobs.put_new(b"model", ttl_s=30)

    assert extended[1] is False
    assert extended_ttl_ms > 60_000
    assert shorter[1] is False
    assert kept_ttl_ms > 60_000
    assert stored_again[1] is True
    assert client.get(key) == b"model"
    assert 0 < client.pttl(key) <= 30_000


def test_outcome_of_earlier_opening_refused(store):
    from dataclasses import replace

    store.open(replace(make_spec(), token="opening-2"))
    stale = replace(outcome("a"), round_token="opening-1")

    result = store.record_outcome(stale, ttl_s=60)

    assert result is RecordResult.OTHER_OPENING
    assert store.state(REF, token="opening-1") is None
    assert store.state(REF, token="opening-2") is RoundState.OPEN
    assert store.outcomes(REF) == {}
