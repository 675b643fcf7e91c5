"""Guards run in front of every strategy: per-update checks, norm outliers, clipping.

``screen_round`` is the first pass over a round: it loads each update once,
checks it, computes its delta norm, then rejects the norm outliers and fixes the
clip threshold.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from coordinator.aggregation.delta import DeltaWorkspace
from coordinator.aggregation.interface import UpdateSource
from coordinator.aggregation.validation import (
    DEFAULT_MAX_NORM_Z,
    MIN_UPDATES_FOR_OUTLIER_TEST,
    Rejection,
    RejectionReason,
    check_samples,
    check_size,
    check_structure,
    norm_outliers,
)
from plantfed.errors import ModelFormatError, PlantfedError
from plantfed.modelio import DEFAULT_MAX_MODEL_BYTES, Array, Weights

ClipNorm = float | Literal["auto"] | None


@dataclass(frozen=True)
class GuardConfig:
    """Checks and clipping run in front of every strategy.

    ``max_norm_z`` None turns the outlier test off. ``clip_norm`` scales each delta
    down to that L2 norm, ``"auto"`` clips to the median norm of the round, and
    None turns clipping off.
    """

    max_update_bytes: int = DEFAULT_MAX_MODEL_BYTES
    max_norm_z: float | None = DEFAULT_MAX_NORM_Z
    clip_norm: ClipNorm = None

    def needs_norms_first(self, update_count: int) -> bool:
        """Return whether the whole round's norms are needed before merging."""
        outlier_test = self.max_norm_z is not None and update_count >= MIN_UPDATES_FOR_OUTLIER_TEST
        return outlier_test or self.clip_norm == "auto"


@dataclass
class ScreenedRound:
    """Result of the first pass: accepted sources, rejections, norms and clip threshold."""

    accepted: list[UpdateSource]
    rejected: list[Rejection]
    delta_norms: dict[str, float]
    clip_to: float | None
    loaded: dict[str, Weights] = field(default_factory=dict)


def check_global_finite(global_weights: Mapping[str, Array]) -> None:
    """Raise ModelFormatError when the global model itself has non-finite values."""
    for name, a in global_weights.items():
        if not np.isfinite(a).all():
            raise ModelFormatError(f"global model parameter {name!r} has NaN or infinite values")


def inspect_update(
    source: UpdateSource, global_weights: Mapping[str, Array], guard: GuardConfig,
    workspace: DeltaWorkspace,
) -> tuple[Weights, float] | Rejection:  # fmt: skip
    """Load and check one update, leaving its delta in ``workspace``.

    Returns the loaded weights and the delta's L2 norm, or the first failed check.
    """
    site = source.site_id
    early = check_samples(site, source.samples, source.declared_samples)
    if early is None and source.encoded_bytes is not None:
        early = check_size(site, source.encoded_bytes, guard.max_update_bytes)
    if early is not None:
        return early
    try:
        weights = source.load()
    except PlantfedError as exc:
        message = f"site {site}: update could not be loaded: {exc}"
        return Rejection(site, RejectionReason.UNREADABLE, message)
    rejection = check_structure(site, global_weights, weights)
    if rejection is not None:
        return rejection
    norm = workspace.compute(site, weights)
    if isinstance(norm, Rejection):
        return norm
    return weights, norm


def drop_duplicates(sources: Sequence[UpdateSource]) -> tuple[list[UpdateSource], list[Rejection]]:
    """Keep the first update of each site and reject the others."""
    kept: list[UpdateSource] = []
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for source in sources:
        if source.site_id in seen:
            message = f"site {source.site_id}: more than one update in the round, kept the first"
            rejected.append(Rejection(source.site_id, RejectionReason.DUPLICATE_SITE, message))
        else:
            seen.add(source.site_id)
            kept.append(source)
    return kept, rejected


def screen_round(
    global_weights: Mapping[str, Array],
    sources: Sequence[UpdateSource],
    guard: GuardConfig,
    *,
    keep_loaded: bool = False,
) -> ScreenedRound:
    """Run the first pass: check every update, compute norms, drop outliers.

    Updates are loaded one at a time and released unless ``keep_loaded`` is set,
    in which case every accepted update stays in ``ScreenedRound.loaded``.
    """
    workspace = DeltaWorkspace(global_weights)
    accepted, rejected = drop_duplicates(sources)
    passed: list[UpdateSource] = []
    norms: dict[str, float] = {}
    loaded: dict[str, Weights] = {}
    for source in accepted:
        outcome = inspect_update(source, global_weights, guard, workspace)
        if isinstance(outcome, Rejection):
            rejected.append(outcome)
            continue
        passed.append(source)
        norms[source.site_id] = outcome[1]
        if keep_loaded:
            loaded[source.site_id] = outcome[0]
        del outcome

    if guard.max_norm_z is not None:
        outliers = norm_outliers(norms, guard.max_norm_z)
        rejected.extend(outliers)
        outlier_sites = {r.site_id for r in outliers}
        passed = [s for s in passed if s.site_id not in outlier_sites]
        for site in outlier_sites:
            loaded.pop(site, None)
    return ScreenedRound(passed, rejected, norms, _clip_threshold(guard, passed, norms), loaded)


def clip_factor(norm: float, clip_to: float | None) -> float:
    """Return the factor that scales a delta of L2 norm ``norm`` down to ``clip_to``."""
    if clip_to is None or norm <= clip_to:
        return 1.0
    return clip_to / norm


def _clip_threshold(
    guard: GuardConfig, passed: Sequence[UpdateSource], norms: Mapping[str, float]
) -> float | None:
    if guard.clip_norm == "auto":
        passed_norms = [norms[s.site_id] for s in passed]
        return statistics.median(passed_norms) if passed_norms else None
    return guard.clip_norm
