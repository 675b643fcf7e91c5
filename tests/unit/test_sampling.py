"""Unit tests of per-round datasite sampling."""

from __future__ import annotations

from collections import Counter

import pytest

from coordinator.sampling import sample_count, select_sites

SITES = [f"plant-{letter}" for letter in "abcdefghij"]


@pytest.mark.parametrize(
    ("eligible", "fraction", "max_sites", "min_sites", "expected"),
    [
        (10, 1.0, None, 2, 10),
        (10, 0.3, None, 2, 3),
        (10, 0.25, None, 2, 3),
        (10, 0.1, None, 2, 2),
        (10, 1.0, 4, 2, 4),
        (10, 0.5, 4, 2, 4),
        (3, 0.1, None, 5, 3),
        (0, 0.5, None, 2, 0),
    ],
)
def test_sample_count(
    eligible: int, fraction: float, max_sites: int | None, min_sites: int, expected: int
) -> None:
    count = sample_count(eligible, fraction=fraction, max_sites=max_sites, min_sites=min_sites)

    assert count == expected


def test_sample_count_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="fraction"):
        sample_count(5, fraction=0.0)


def test_full_fraction_selects_everyone() -> None:
    selection = select_sites(list(reversed(SITES)), {}, {}, round_index=0, seed=1)

    assert selection.selected == tuple(SITES)
    assert selection.skipped == ()
    assert selection.reason == "all 10 eligible sites"


def test_selection_deterministic_per_seed_and_round() -> None:
    def pick(round_index: int, seed: int) -> tuple[str, ...]:
        return select_sites(
            SITES, {}, {}, round_index=round_index, seed=seed, fraction=0.3
        ).selected

    assert pick(4, 9) == pick(4, 9)
    assert len({pick(r, 9) for r in range(20)}) > 1


def test_selection_ignores_input_order() -> None:
    forward = select_sites(SITES, {}, {}, round_index=2, seed=3, fraction=0.4)
    backward = select_sites(SITES[::-1], {}, {}, round_index=2, seed=3, fraction=0.4)

    assert forward == backward


def test_selection_partitions_eligible() -> None:
    selection = select_sites(SITES, {}, {}, round_index=0, seed=0, max_sites=4)

    assert len(selection.selected) == 4
    assert set(selection.selected) | set(selection.skipped) == set(SITES)
    assert not set(selection.selected) & set(selection.skipped)


def test_reliable_sites_are_favoured() -> None:
    scores = {site: (1.0 if site in ("plant-a", "plant-b") else 0.1) for site in SITES}
    counts: Counter[str] = Counter()

    for round_index in range(300):
        last = {site: round_index for site in SITES}
        selection = select_sites(SITES, scores, last, round_index=round_index, seed=5, max_sites=2)
        counts.update(selection.selected)

    assert counts["plant-a"] > 3 * counts["plant-c"]
    assert counts["plant-b"] > 3 * counts["plant-c"]


def test_waiting_site_gets_priority() -> None:
    scores = {site: 1.0 for site in SITES}
    scores["plant-j"] = 0.0
    last = {site: 9 for site in SITES}
    last["plant-j"] = 5

    selection = select_sites(
        SITES, scores, last, round_index=10, seed=0, max_sites=2, priority_after_rounds=3
    )

    assert "plant-j" in selection.selected
    assert selection.prioritized == ("plant-j",)
    assert "picked first" in selection.reason


def test_longest_waiting_sites_first_when_too_many() -> None:
    last = {site: 0 for site in SITES}
    last["plant-c"] = -5
    last["plant-f"] = -3

    selection = select_sites(SITES, {}, last, round_index=10, seed=0, max_sites=2)

    assert selection.selected == ("plant-c", "plant-f")


def test_every_site_gets_a_turn() -> None:
    scores = {site: 1.0 for site in SITES}
    scores["plant-j"] = 0.0
    last: dict[str, int] = {}
    turns: Counter[str] = Counter()

    for round_index in range(30):
        selection = select_sites(
            SITES,
            scores,
            last,
            round_index=round_index,
            seed=11,
            max_sites=3,
            priority_after_rounds=4,
        )
        turns.update(selection.selected)
        last.update({site: round_index for site in selection.selected})

    # By weight alone plant-j would be drawn about once in 30 rounds; priority
    # brings it back after at most 4 rounds out.
    assert set(turns) == set(SITES)
    assert turns["plant-j"] >= 5


def test_sampling_never_below_min_sites() -> None:
    selection = select_sites(SITES, {}, {}, round_index=0, seed=0, fraction=0.1, min_sites=4)

    assert len(selection.selected) == 4
