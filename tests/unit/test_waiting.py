"""Unit tests of the close policy of a round: when waiting stops, and why."""

from __future__ import annotations

import pytest

from coordinator.waiting import CloseReason, WaitPolicy, WaitSnapshot

SITES = frozenset({"a", "b", "c"})
POLICY = WaitPolicy(min_completed=2, grace_s=5.0)


def snapshot(
    completed: str = "",
    failed: str = "",
    lost: str = "",
    now_s: float = 10.0,
    deadline_s: float = 100.0,
    quorum_at_s: float | None = None,
    sites: frozenset[str] = SITES,
) -> WaitSnapshot:
    """A snapshot of a round over ``sites``; each site group is given as letters."""
    return WaitSnapshot(
        sites=sites,
        completed=frozenset(completed),
        failed=frozenset(failed),
        lost=frozenset(lost),
        now_s=now_s,
        deadline_s=deadline_s,
        quorum_reached_at_s=quorum_at_s,
    )


@pytest.mark.parametrize(
    ("case", "state", "expected"),
    [
        ("nothing in yet", snapshot(), None),
        ("one of two needed", snapshot(completed="a"), None),
        ("quorum, grace running", snapshot(completed="ab", quorum_at_s=8.0), None),
        ("quorum, grace over", snapshot(completed="ab", quorum_at_s=5.0),
         CloseReason.GRACE_EXPIRED),
        ("quorum, grace just over", snapshot(completed="ab", now_s=13.0, quorum_at_s=8.0),
         CloseReason.GRACE_EXPIRED),
        ("every site completed", snapshot(completed="abc"), CloseReason.ALL_ANSWERED),
        ("every site answered, one failed", snapshot(completed="ab", failed="c"),
         CloseReason.ALL_ANSWERED),
        ("every site failed", snapshot(failed="abc"), CloseReason.ALL_ANSWERED),
        ("quorum, the rest lost", snapshot(completed="ab", lost="c", quorum_at_s=9.9),
         CloseReason.QUORUM_REST_LOST),
        ("no quorum, one lost, one pending", snapshot(completed="a", lost="c"), None),
        ("quorum out of reach by failures", snapshot(failed="ab"), CloseReason.QUORUM_UNREACHABLE),
        ("quorum out of reach by loss", snapshot(completed="a", failed="b", lost="c"),
         CloseReason.QUORUM_UNREACHABLE),
        ("deadline without quorum", snapshot(completed="a", now_s=100.0), CloseReason.DEADLINE),
        ("deadline inside the grace", snapshot(completed="ab", now_s=100.0, quorum_at_s=99.0),
         CloseReason.DEADLINE),
        ("past the deadline, nothing in", snapshot(now_s=250.0), CloseReason.DEADLINE),
    ],
)  # fmt: skip
def test_decide(case: str, state: WaitSnapshot, expected: CloseReason | None) -> None:
    assert POLICY.decide(state) is expected, case


def test_all_answered_wins_over_deadline() -> None:
    late = snapshot(completed="abc", now_s=200.0)

    assert POLICY.decide(late) is CloseReason.ALL_ANSWERED


def test_rest_lost_wins_over_deadline() -> None:
    late = snapshot(completed="ab", lost="c", now_s=200.0, quorum_at_s=150.0)

    assert POLICY.decide(late) is CloseReason.QUORUM_REST_LOST


def test_zero_grace_closes_at_quorum() -> None:
    policy = WaitPolicy(min_completed=2, grace_s=0.0)

    assert policy.decide(snapshot(completed="ab", quorum_at_s=10.0)) is CloseReason.GRACE_EXPIRED


def test_grace_needs_the_quorum_time() -> None:
    # The waiter stamps the quorum time; until it has, the grace cannot run out.
    assert POLICY.decide(snapshot(completed="ab", quorum_at_s=None)) is None


def test_lost_site_that_answered_counts_as_answered() -> None:
    # A site may be judged lost right after its outcome arrived; the outcome wins.
    state = snapshot(completed="abc", lost="c")

    assert POLICY.decide(state) is CloseReason.ALL_ANSWERED


def test_single_site_round() -> None:
    policy = WaitPolicy(min_completed=1, grace_s=5.0)
    one = frozenset({"a"})

    assert policy.decide(snapshot(sites=one)) is None
    assert policy.decide(snapshot(sites=one, completed="a")) is CloseReason.ALL_ANSWERED
    assert policy.decide(snapshot(sites=one, lost="a")) is CloseReason.QUORUM_UNREACHABLE
