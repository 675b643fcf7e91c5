"""Guards run in front of every strategy: per-update checks, round-level tests, clipping.

Per update: sample count, encoded size, readability, parameter names, shapes and
dtypes, and finite values. Per round, on the updates that passed: the delta-norm
outlier test, then the direction screen on the rest (``round_outliers``).
``screen_round`` runs all of them as a first pass that loads each update once,
for the strategies that need every norm before they merge: the order-statistic
strategies and ``clip_norm="auto"``. The streaming mean runs the per-update
checks while it sums and the round-level tests after (``streaming``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from coordinator.aggregation.delta import DeltaWorkspace
from coordinator.aggregation.direction import (
    DEFAULT_MIN_COSINE,
    Float32Array,
    SketchBook,
    SketchPlan,
    direction_outliers,
    plan_sketch,
)
from coordinator.aggregation.interface import UpdateSource
from coordinator.aggregation.validation import (
    DEFAULT_MAX_NORM_Z,
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

    ``max_norm_z`` None turns the outlier test off, and ``min_cosine`` None the
    direction screen (``coordinator.aggregation.direction``). ``clip_norm`` scales
    each delta down to that L2 norm, ``"auto"`` clips to the median norm of the
    round, and None turns clipping off.
    """

    max_update_bytes: int = DEFAULT_MAX_MODEL_BYTES
    max_norm_z: float | None = DEFAULT_MAX_NORM_Z
    clip_norm: ClipNorm = None
    min_cosine: float | None = DEFAULT_MIN_COSINE

    def needs_norms_first(self) -> bool:
        """Return whether the round's norms are needed before anything is summed."""
        return self.clip_norm == "auto"


@dataclass(frozen=True)
class RoundTests:
    """Rejections of the round-level tests, and the direction screen's cosines."""

    rejected: list[Rejection]
    cosines: dict[str, float]


@dataclass
class ScreenedRound:
    """Result of the first pass: accepted sources, rejections, norms and clip threshold."""

    accepted: list[UpdateSource]
    rejected: list[Rejection]
    delta_norms: dict[str, float]
    clip_to: float | None
    loaded: dict[str, Weights] = field(default_factory=dict)
    cosines: dict[str, float] = field(default_factory=dict)


def check_global_finite(global_weights: Mapping[str, Array]) -> None:
    """Raise ModelFormatError when the global model itself has non-finite values."""
    for name, a in global_weights.items():
        if not np.isfinite(a).all():
            raise ModelFormatError(f"global model parameter {name!r} has NaN or infinite values")


def load_checked(
    source: UpdateSource, global_weights: Mapping[str, Array], guard: GuardConfig
) -> Weights | Rejection:
    """Check the sample count and declared size, load the update and check its structure."""
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
    return check_structure(site, global_weights, weights) or weights


def inspect_update(
    source: UpdateSource, global_weights: Mapping[str, Array], guard: GuardConfig,
    workspace: DeltaWorkspace, sketch: tuple[SketchPlan, Float32Array] | None = None,
) -> tuple[Weights, float] | Rejection:  # fmt: skip
    """Load and check one update, leaving its delta in ``workspace``.

    Returns the loaded weights and the delta's L2 norm, or the first failed check.
    """
    weights = load_checked(source, global_weights, guard)
    if isinstance(weights, Rejection):
        return weights
    norm = workspace.compute(source.site_id, weights, sketch)
    if isinstance(norm, Rejection):
        return norm
    return weights, norm


def round_outliers(
    delta_norms: Mapping[str, float], sketches: SketchBook | None, guard: GuardConfig
) -> RoundTests:
    """Run the norm outlier test, then the direction screen on the updates it kept.

    The direction screen runs when ``guard.min_cosine`` and ``sketches`` are set.
    """
    rejected: list[Rejection] = []
    if guard.max_norm_z is not None:
        rejected = norm_outliers(delta_norms, guard.max_norm_z)
    if guard.min_cosine is None or sketches is None:
        return RoundTests(rejected, {})
    outliers = {r.site_id for r in rejected}
    kept = [site for site in sketches.sites if site not in outliers]
    directions, cosines = direction_outliers(
        kept, sketches.rows_of(kept), guard.min_cosine, sketches.plan
    )
    return RoundTests(rejected + directions, cosines)


def new_sketch_book(
    global_weights: Mapping[str, Array], update_count: int, guard: GuardConfig
) -> SketchBook | None:
    """Return the round's sketch book, or None when the direction screen is off."""
    if guard.min_cosine is None:
        return None
    return SketchBook(plan_sketch(global_weights, update_count), update_count)


def sketch_target(sketches: SketchBook | None) -> tuple[SketchPlan, Float32Array] | None:
    """Return where the next update's sketch goes, or None when there is no sketch book."""
    return None if sketches is None else (sketches.plan, sketches.next_row())


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
    """Run the first pass: check every update, compute norms, drop round-level outliers.

    Updates are loaded one at a time and released unless ``keep_loaded`` is set,
    in which case every accepted update stays in ``ScreenedRound.loaded``.
    """
    workspace = DeltaWorkspace(global_weights)
    accepted, rejected = drop_duplicates(sources)
    sketches = new_sketch_book(global_weights, len(accepted), guard)
    passed: list[UpdateSource] = []
    norms: dict[str, float] = {}
    loaded: dict[str, Weights] = {}
    for source in accepted:
        target = sketch_target(sketches)
        outcome = inspect_update(source, global_weights, guard, workspace, target)
        if isinstance(outcome, Rejection):
            rejected.append(outcome)
            continue
        passed.append(source)
        norms[source.site_id] = outcome[1]
        if sketches is not None:
            sketches.commit(source.site_id)
        if keep_loaded:
            loaded[source.site_id] = outcome[0]
        del outcome

    tests = round_outliers(norms, sketches, guard)
    rejected.extend(tests.rejected)
    outlier_sites = {r.site_id for r in tests.rejected}
    passed = [s for s in passed if s.site_id not in outlier_sites]
    for site in outlier_sites:
        loaded.pop(site, None)
    clip_to = _clip_threshold(guard, passed, norms)
    return ScreenedRound(passed, rejected, norms, clip_to, loaded, tests.cosines)


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
