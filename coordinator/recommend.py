"""Plain-language recommendations drawn from execution statistics and site reliability.

Each rule looks at one symptom and, when it applies, returns one sentence that
names the evidence and the setting or place to look at. No rule fires on thin
evidence: each needs a minimum number of rounds or participations.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping

from coordinator.config import CampaignConfig
from coordinator.reliability import ExecutionStats, SiteReliability
from coordinator.tuning import RoundTiming
from plantfed.messages import OutcomeStatus

#: Recent participations a datasite needs before its own rules apply.
MIN_RECENT = 3

#: Rounds the campaign needs before campaign-wide rules apply.
MIN_ROUNDS = 3

#: A datasite rule fires when at least this share of its recent outcomes match.
SITE_SHARE = 0.5

#: A datasite is a straggler when its mean response time exceeds the median of
#: all datasites' means by this factor.
SLOW_FACTOR = 2.0

#: Share of rounds closed at the deadline above which the deadline is tight.
DEADLINE_CLOSE_SHARE = 0.2

#: Participation below this share of the expected participation is reported.
PARTICIPATION_FLOOR = 0.7

Rule = Callable[
    [ExecutionStats, Mapping[str, SiteReliability], RoundTiming | None, CampaignConfig],
    list[str],
]


def recommendations(
    stats: ExecutionStats,
    reliabilities: Mapping[str, SiteReliability],
    timing: RoundTiming | None,
    config: CampaignConfig,
) -> list[str]:
    """Return recommendations for the operator, most specific (per datasite) first.

    Parameters
    ----------
    stats
        Campaign execution statistics.
    reliabilities
        Reliability record per datasite.
    timing
        Timing of the latest round, or ``None`` before the first.
    config
        The campaign configuration, to name the settings to change.

    Returns
    -------
    list of str
        One sentence per finding; empty when nothing needs attention.
    """
    rules: tuple[Rule, ...] = (
        _site_timeouts,
        _site_failures,
        _site_rejections,
        _slow_sites,
        _deadline_closes,
        _capped_deadline,
        _participation,
        _round_failures,
    )
    found: list[str] = []
    for rule in rules:
        found.extend(rule(stats, reliabilities, timing, config))
    return found


def _recent_matching(rel: SiteReliability, statuses: frozenset[OutcomeStatus]) -> int | None:
    """Return how many recent outcomes match, or ``None`` when the rule must not fire."""
    total = len(rel.recent)
    matching = sum(1 for status in rel.recent if status in statuses)
    if total < MIN_RECENT or matching < 2 or matching < SITE_SHARE * total:
        return None
    return matching


def _site_timeouts(
    stats: ExecutionStats,
    reliabilities: Mapping[str, SiteReliability],
    timing: RoundTiming | None,
    config: CampaignConfig,
) -> list[str]:
    statuses = frozenset({OutcomeStatus.TIMED_OUT, OutcomeStatus.DISCARDED})
    deadline_s = config.round.timing.max_deadline_s
    found = []
    for site, rel in sorted(reliabilities.items()):
        count = _recent_matching(rel, statuses)
        if count is not None:
            found.append(
                f"{site} timed out in {count} of its last {len(rel.recent)} rounds; "
                f"raise round.deadline_s (now {deadline_s:g} s) or check its link"
            )
    return found


def _site_failures(
    stats: ExecutionStats,
    reliabilities: Mapping[str, SiteReliability],
    timing: RoundTiming | None,
    config: CampaignConfig,
) -> list[str]:
    statuses = frozenset({OutcomeStatus.FAILED, OutcomeStatus.LOST})
    found = []
    for site, rel in sorted(reliabilities.items()):
        count = _recent_matching(rel, statuses)
        if count is not None:
            found.append(
                f"{site} failed in {count} of its last {len(rel.recent)} rounds "
                f"(last error: {rel.last_failure_reason}); check its worker log and local data"
            )
    return found


def _site_rejections(
    stats: ExecutionStats,
    reliabilities: Mapping[str, SiteReliability],
    timing: RoundTiming | None,
    config: CampaignConfig,
) -> list[str]:
    limit = config.failures.quarantine_after_rejections
    found = []
    for site, rel in sorted(reliabilities.items()):
        count = rel.recent_count(OutcomeStatus.REJECTED)
        if count >= 2 or (count >= 1 and limit == 1):
            found.append(
                f"{site} had {count} of its last {len(rel.recent)} updates rejected by "
                f"validation; check its data and trainer version (it is quarantined after "
                f"{limit} rejections)"
            )
    return found


def _slow_sites(
    stats: ExecutionStats,
    reliabilities: Mapping[str, SiteReliability],
    timing: RoundTiming | None,
    config: CampaignConfig,
) -> list[str]:
    means = {
        site: rel.mean_response_s
        for site, rel in reliabilities.items()
        if rel.mean_response_s is not None and rel.successes >= MIN_RECENT
    }
    if len(means) < 3:
        return []
    median_s = statistics.median(means.values())
    return [
        f"{site} is a straggler: mean response {mean_s:.1f} s against a median of "
        f"{median_s:.1f} s across sites; it sets the round length, so check its hardware "
        f"or lower its local training budget"
        for site, mean_s in sorted(means.items())
        if median_s > 0 and mean_s > SLOW_FACTOR * median_s
    ]


def _deadline_closes(
    stats: ExecutionStats,
    reliabilities: Mapping[str, SiteReliability],
    timing: RoundTiming | None,
    config: CampaignConfig,
) -> list[str]:
    total = stats.rounds_total
    closes = stats.deadline_closes
    if total < MIN_ROUNDS or closes < 2 or closes < DEADLINE_CLOSE_SHARE * total:
        return []
    return [
        f"{closes} of {total} rounds closed at the deadline: the deadline is tight; raise "
        f"round.deadline_s or round.safety_factor, or check the sites that time out"
    ]


def _capped_deadline(
    stats: ExecutionStats,
    reliabilities: Mapping[str, SiteReliability],
    timing: RoundTiming | None,
    config: CampaignConfig,
) -> list[str]:
    if timing is None or not timing.deadline_capped:
        return []
    return [
        f"the learned deadline was capped at round.deadline_s = {timing.deadline_s:g} s; "
        f"raise it if slow sites should still count"
    ]


def _participation(
    stats: ExecutionStats,
    reliabilities: Mapping[str, SiteReliability],
    timing: RoundTiming | None,
    config: CampaignConfig,
) -> list[str]:
    rate = stats.participation_rate
    if rate is None or stats.rounds_total < MIN_ROUNDS:
        return []
    expected = _expected_share(reliabilities, config)
    if rate >= PARTICIPATION_FLOOR * expected:
        return []
    sentence = f"participation is {rate:.0%}: check drained or lost sites"
    if expected < 1.0:
        sentence += f" (sampling alone would give about {expected:.0%})"
    return [sentence]


def _expected_share(reliabilities: Mapping[str, SiteReliability], config: CampaignConfig) -> float:
    share = config.round.sample_fraction
    site_count = len(config.sites) or len(reliabilities)
    cap = config.round.max_sites_per_round
    if cap is not None and site_count > 0:
        share = min(share, cap / site_count)
    return share


def _round_failures(
    stats: ExecutionStats,
    reliabilities: Mapping[str, SiteReliability],
    timing: RoundTiming | None,
    config: CampaignConfig,
) -> list[str]:
    limit = config.failures.max_failure_rate
    rate = stats.round_failure_rate
    if stats.rounds_failed == 0 or rate < 0.5 * limit:
        return []
    return [
        f"{stats.rounds_failed} of {stats.rounds_total} rounds failed ({rate:.0%}); the "
        f"campaign stops above failures.max_failure_rate = {limit:.0%}, so fix the failing "
        f"sites or lower min_sites"
    ]
