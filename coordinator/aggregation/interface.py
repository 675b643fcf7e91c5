"""Values that cross the strategy interface: an update source and a merge result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from coordinator.aggregation.validation import Rejection
from plantfed.modelio import Weights


@dataclass(frozen=True)
class UpdateSource:
    """One site's update, loaded only when ``load`` is called.

    ``load`` returns the trained local weights (not a delta). It may be called
    more than once and must return the same weights each time. It raises a
    ``PlantfedError`` (for example ``BlobNotFoundError`` or ``ModelFormatError``)
    when the update cannot be read, which rejects the update. Any other exception
    propagates, because it means headquarters failed, not the site.
    """

    site_id: str
    samples: int
    load: Callable[[], Weights]
    declared_samples: int | None = None
    encoded_bytes: int | None = None


@dataclass(frozen=True)
class AggregateResult:
    """Outcome of one merge.

    When no update is included, ``weights`` is the global model unchanged and
    ``state`` the state passed in: the caller decides whether the round counts.
    ``delta_norms`` contains the L2 norm of each site's delta before clipping, for
    every site whose norm was computed (included sites and norm outliers).
    ``state`` is the server optimizer state to pass to the next round, empty for
    strategies without one. ``delta_cosines`` contains each site's cosine to the
    round's median delta, for every site the direction screen scored (see
    ``coordinator.aggregation.direction``).
    """

    weights: Weights
    included: tuple[str, ...]
    rejected: tuple[Rejection, ...]
    delta_norms: dict[str, float]
    total_samples: int
    state: Weights = field(default_factory=dict)
    delta_cosines: dict[str, float] = field(default_factory=dict)
