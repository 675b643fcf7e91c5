"""Choosing the datasites of a round from their health."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from coordinator.health import SiteHealth, Verdict


@dataclass(frozen=True)
class Selection:
    """Sites chosen for a round, and why each other known site was left out."""

    selected: tuple[str, ...]
    excluded: dict[str, str]
    declared_samples: dict[str, int] = field(default_factory=dict)

    def describe_missing(self) -> str:
        """One line per excluded site: ``site: reason``."""
        return "; ".join(f"{site}: {reason}" for site, reason in sorted(self.excluded.items()))


def select_sites(
    health: Mapping[str, SiteHealth],
    trainer: str,
    requested: Sequence[str] | None = None,
    quarantined: Mapping[str, str] | None = None,
) -> Selection:
    """Keep the sites that can train with ``trainer`` now.

    Parameters
    ----------
    health
        Verdict of every known site.
    trainer
        Trainer the round needs; sites that do not offer it are left out.
    requested
        Sites the campaign names; None means every known site.
    quarantined
        Sites kept out by the campaign, with the reason.
    """
    candidates = list(requested) if requested is not None else sorted(health)
    selected: list[str] = []
    excluded: dict[str, str] = {}
    for site_id in candidates:
        site = health.get(site_id)
        if site is None:
            excluded[site_id] = f"{Verdict.LOST.value}: no liveness key"
        elif quarantined and site_id in quarantined:
            excluded[site_id] = f"quarantined: {quarantined[site_id]}"
        elif not site.verdict.can_train:
            excluded[site_id] = f"{site.verdict.value}: {site.reason}"
        elif site.liveness is not None and trainer not in site.liveness.trainers:
            offered = ", ".join(site.liveness.trainers) or "none"
            excluded[site_id] = f"does not offer trainer {trainer!r} (offers: {offered})"
        else:
            selected.append(site_id)
    declared = {s: health[s].liveness.samples for s in selected if health[s].liveness}  # type: ignore[union-attr]
    return Selection(tuple(selected), excluded, declared)
