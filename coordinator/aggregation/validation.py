"""Validation of model updates before they are merged.

An update is checked on its own (sample count, encoded size, parameter names,
shapes and dtypes against the global model, finite values) and against the other
updates of its round: delta-norm outliers here, delta directions in
``coordinator.aggregation.direction``. A failed check is data, a
``Rejection`` that names the site, the reason and the offending value, never an
exception: the round goes on with the other sites.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from plantfed.modelio import DEFAULT_MAX_MODEL_BYTES, Array

#: Robust z-score above which a delta norm is an outlier (the usual modified z-score cut-off).
DEFAULT_MAX_NORM_Z = 3.5

#: Minimum number of updates in a round for the outlier test to run. With fewer, the
#: median and MAD cannot tell which update is the odd one.
MIN_UPDATES_FOR_OUTLIER_TEST = 3

#: Floor of the spread used by the outlier test, as a fraction of the median norm, so
#: that a round where most norms are nearly equal (MAD near 0) does not flag ordinary
#: differences. With three updates the MAD is the smaller gap to the median norm, so two
#: close norms make it tiny. On the three AI4I plants split by product type, a 5% floor
#: let an honest plant whose norm was 1.6 times the median reach robust z 5.1, and it was
#: rejected. With 25%, a norm is rejected at the default z of 3.5 only above 1.875 times
#: the median.
MIN_SPREAD_FRACTION = 0.25

# Scales the median absolute deviation to the standard deviation of a normal distribution.
_MAD_TO_SIGMA = 1.4826


class RejectionReason(StrEnum):
    """Reason an update was left out of the merge."""

    UNREADABLE = "unreadable"
    DUPLICATE_SITE = "duplicate-site"
    TOO_LARGE = "too-large"
    INVALID_SAMPLES = "invalid-samples"
    SAMPLES_ABOVE_DECLARED = "samples-above-declared"
    MISSING_PARAMETER = "missing-parameter"
    UNEXPECTED_PARAMETER = "unexpected-parameter"
    SHAPE_MISMATCH = "shape-mismatch"
    DTYPE_MISMATCH = "dtype-mismatch"
    NON_FINITE = "non-finite"
    NORM_OUTLIER = "norm-outlier"
    DIRECTION_OUTLIER = "direction-outlier"


@dataclass(frozen=True)
class Rejection:
    """An update left out of the merge, with a message naming the site and the value."""

    site_id: str
    reason: RejectionReason
    message: str


def validate_update(
    site_id: str,
    global_weights: Mapping[str, Array],
    update_weights: Mapping[str, Array],
    *,
    samples: int,
    declared_samples: int | None = None,
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    encoded_bytes: int | None = None,
) -> Rejection | None:
    """Check one update on its own and return the first failed check, or None.

    Parameters
    ----------
    site_id
        Datasite that sent the update, named in the rejection message.
    global_weights
        The round's global model, which fixes parameter names, shapes and dtypes.
    update_weights
        The site's trained local weights (not a delta).
    samples
        Training samples the site reports for this update; must be > 0.
    declared_samples
        Samples the site declared before the round (for example in its liveness
        record); ``samples`` must not exceed it. None skips that check.
    max_bytes
        Largest accepted encoded update, in bytes.
    encoded_bytes
        Size of the encoded blob, in bytes, when known. When None, the size of the
        raw arrays is checked instead, a lower bound of the encoded size.

    Returns
    -------
    Rejection | None
        None when the update passes every check.
    """
    size_bytes = encoded_bytes if encoded_bytes is not None else payload_bytes(update_weights)
    return (
        check_samples(site_id, samples, declared_samples)
        or check_size(site_id, size_bytes, max_bytes)
        or check_structure(site_id, global_weights, update_weights)
        or check_finite(site_id, update_weights)
    )


def check_samples(site_id: str, samples: int, declared_samples: int | None) -> Rejection | None:
    """Reject a sample count that is not a positive integer or exceeds the declared one."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples <= 0:
        return Rejection(
            site_id,
            RejectionReason.INVALID_SAMPLES,
            f"site {site_id}: sample count {samples!r} is invalid, expected an integer > 0",
        )
    if declared_samples is not None and samples > declared_samples:
        return Rejection(
            site_id,
            RejectionReason.SAMPLES_ABOVE_DECLARED,
            f"site {site_id}: reports {samples} samples, more than the {declared_samples} "
            "it declared",
        )
    return None


def check_size(site_id: str, size_bytes: int, max_bytes: int) -> Rejection | None:
    """Reject an update whose encoded size exceeds ``max_bytes``."""
    if size_bytes > max_bytes:
        return Rejection(
            site_id,
            RejectionReason.TOO_LARGE,
            f"site {site_id}: update is {size_bytes} bytes, above the limit of {max_bytes} bytes",
        )
    return None


def check_structure(
    site_id: str, global_weights: Mapping[str, Array], update_weights: Mapping[str, Array]
) -> Rejection | None:
    """Reject an update whose parameter names, shapes or dtypes differ from the global model."""
    missing = sorted(set(global_weights) - set(update_weights))
    if missing:
        return Rejection(
            site_id,
            RejectionReason.MISSING_PARAMETER,
            f"site {site_id}: update lacks parameters {missing}",
        )
    unexpected = sorted(set(update_weights) - set(global_weights))
    if unexpected:
        return Rejection(
            site_id,
            RejectionReason.UNEXPECTED_PARAMETER,
            f"site {site_id}: update has parameters {unexpected} that the model does not have",
        )
    for name in sorted(global_weights):
        expected, found = global_weights[name], update_weights[name]
        if found.shape != expected.shape:
            return Rejection(
                site_id,
                RejectionReason.SHAPE_MISMATCH,
                f"site {site_id}: parameter {name!r} has shape {found.shape}, "
                f"expected {expected.shape}",
            )
        if found.dtype != expected.dtype:
            return Rejection(
                site_id,
                RejectionReason.DTYPE_MISMATCH,
                f"site {site_id}: parameter {name!r} has dtype {found.dtype.name}, "
                f"expected {expected.dtype.name}",
            )
    return None


def check_finite(site_id: str, update_weights: Mapping[str, Array]) -> Rejection | None:
    """Reject an update that contains NaN or infinite values."""
    for name in sorted(update_weights):
        bad = int(np.count_nonzero(~np.isfinite(update_weights[name])))
        if bad:
            return non_finite_rejection(site_id, name, bad)
    return None


def non_finite_rejection(site_id: str, name: str, count: int) -> Rejection:
    """Build the rejection for ``count`` non-finite values in parameter ``name``."""
    return Rejection(
        site_id,
        RejectionReason.NON_FINITE,
        f"site {site_id}: parameter {name!r} has {count} NaN or infinite values",
    )


def payload_bytes(weights: Mapping[str, Array]) -> int:
    """Return the total size of the arrays, in bytes."""
    return sum(int(a.nbytes) for a in weights.values())


def norm_outliers(
    delta_norms: Mapping[str, float], max_z: float = DEFAULT_MAX_NORM_Z
) -> list[Rejection]:
    """Reject updates whose delta L2 norm is far above the others of the round.

    The test is robust to the outliers it looks for: the centre is the median norm
    and the spread is 1.4826 times the median absolute deviation (MAD), floored at
    ``MIN_SPREAD_FRACTION`` of the median. An update is rejected when
    ``(norm - median) / spread > max_z``. Only large norms are rejected, because a
    small delta (a site that trained little) cannot drag the merge far.

    With fewer than ``MIN_UPDATES_FOR_OUTLIER_TEST`` (3) norms, or a spread of zero
    (every norm zero), the test is skipped and nothing is rejected.

    Parameters
    ----------
    delta_norms
        L2 norm of each site's delta (local minus global weights), by site id.
    max_z
        Largest accepted robust z-score.

    Returns
    -------
    list[Rejection]
        One rejection per outlier, in the order of ``delta_norms``.
    """
    if len(delta_norms) < MIN_UPDATES_FOR_OUTLIER_TEST:
        return []
    median = statistics.median(delta_norms.values())
    mad = statistics.median(abs(n - median) for n in delta_norms.values())
    spread = max(_MAD_TO_SIGMA * mad, MIN_SPREAD_FRACTION * median)
    if spread <= 0.0 or not math.isfinite(spread):
        return []
    rejections = []
    for site_id, norm in delta_norms.items():
        z = (norm - median) / spread
        if z > max_z:
            message = (
                f"site {site_id}: update delta norm {norm:.6g} is an outlier "
                f"(round median {median:.6g}, robust z {z:.3g} > {max_z:g})"
            )
            rejections.append(Rejection(site_id, RejectionReason.NORM_OUTLIER, message))
    return rejections
