"""Per-round datasite sampling: which eligible datasites a round dispatches to.

Reliable datasites are favoured, but every datasite gets a turn: one left out
for ``priority_after_rounds`` rounds in a row is picked before any other. The
choice is deterministic for a given seed and round index, so a rerun round
selects the same datasites.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Weight floor, so a datasite with a score of 0 can still be drawn.
MIN_WEIGHT = 0.05

#: Score of a datasite with no reliability record yet.
DEFAULT_SCORE = 0.5


@dataclass(frozen=True)
class SiteSelection:
    """Datasites chosen for one round.

    Attributes
    ----------
    selected
        Chosen datasites, in ascending id order.
    prioritized
        Chosen datasites that were picked first because they had waited too long.
    skipped
        Eligible datasites left out of this round.
    reason
        How the count was chosen, for the operator and the round record.
    """

    selected: tuple[str, ...]
    prioritized: tuple[str, ...]
    skipped: tuple[str, ...]
    reason: str


def sample_count(
    eligible: int,
    *,
    fraction: float = 1.0,
    max_sites: int | None = None,
    min_sites: int = 1,
) -> int:
    """Return how many of ``eligible`` datasites a round uses.

    ``ceil(fraction * eligible)``, capped by ``max_sites``, raised to ``min_sites``
    so that sampling never drops a round below its quorum, and never above
    ``eligible``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], found {fraction}")
    count = math.ceil(fraction * eligible)
    if max_sites is not None:
        count = min(count, max_sites)
    return min(eligible, max(count, min_sites))


def select_sites(
    eligible: Sequence[str],
    scores: Mapping[str, float],
    last_selected_round: Mapping[str, int],
    *,
    round_index: int,
    seed: int,
    fraction: float = 1.0,
    max_sites: int | None = None,
    min_sites: int = 1,
    priority_after_rounds: int = 3,
) -> SiteSelection:
    """Choose the datasites of round ``round_index``.

    Parameters
    ----------
    eligible
        Ready, non-drained, non-quarantined datasites.
    scores
        Reliability score in [0, 1] per datasite; missing ones count as
        ``DEFAULT_SCORE``.
    last_selected_round
        Round index at which each datasite was last selected; a datasite never
        selected has waited since before round 0.
    round_index, seed
        Seed of the draw, together, so the choice is reproducible.
    fraction, max_sites, min_sites
        Size of the sample, as in ``sample_count``.
    priority_after_rounds
        Rounds a datasite may be left out in a row before it gets priority.

    Returns
    -------
    SiteSelection
        Datasites waiting ``priority_after_rounds`` rounds or more come first,
        longest wait first. The rest are drawn without replacement with
        probability proportional to ``max(score, MIN_WEIGHT)``.
    """
    sites = sorted(set(eligible))
    count = sample_count(len(sites), fraction=fraction, max_sites=max_sites, min_sites=min_sites)
    if count >= len(sites):
        return SiteSelection(tuple(sites), (), (), f"all {len(sites)} eligible sites")

    rng = random.Random(seed * 1_000_003 + round_index)
    tiebreak = {site: rng.random() for site in sites}
    waited = {site: round_index - last_selected_round.get(site, -1) - 1 for site in sites}

    starved = [site for site in sites if waited[site] >= priority_after_rounds]
    starved.sort(key=lambda site: (-waited[site], tiebreak[site]))
    prioritized = starved[:count]

    rest = [site for site in sites if site not in prioritized]
    drawn = _weighted_draw(rest, scores, count - len(prioritized), rng)
    selected = sorted([*prioritized, *drawn])
    skipped = tuple(site for site in sites if site not in selected)
    reason = (
        f"{count} of {len(sites)} eligible sites (fraction {fraction:g}"
        f"{f', max {max_sites}' if max_sites is not None else ''}, min {min_sites})"
        f"{f'; {len(prioritized)} picked first after waiting' if prioritized else ''}"
    )
    return SiteSelection(tuple(selected), tuple(sorted(prioritized)), skipped, reason)


def _weighted_draw(
    sites: Sequence[str], scores: Mapping[str, float], count: int, rng: random.Random
) -> list[str]:
    # Efraimidis-Spirakis: keep the `count` largest u ** (1 / weight), which draws
    # without replacement with probability proportional to weight.
    if count <= 0:
        return []
    keys = {}
    for site in sites:
        weight = max(min(scores.get(site, DEFAULT_SCORE), 1.0), MIN_WEIGHT)
        keys[site] = rng.random() ** (1.0 / weight)
    return sorted(sites, key=lambda site: -keys[site])[:count]
