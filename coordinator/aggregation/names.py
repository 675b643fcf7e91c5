"""Names of the aggregation strategies, as campaign files and round records spell them."""

from __future__ import annotations

from enum import StrEnum


class StrategyName(StrEnum):
    """Aggregation strategies a campaign can ask for."""

    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"
    FEDADAGRAD = "fedadagrad"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed-mean"
