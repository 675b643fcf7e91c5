"""Unit tests of update validation and the round-level norm outlier test."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.aggregation import RejectionReason, norm_outliers, validate_update
from plantfed.modelio import DEFAULT_MAX_MODEL_BYTES, Weights


def model() -> Weights:
    return {
        "w": np.zeros((2, 2), dtype=np.float32),
        "b": np.zeros(2, dtype=np.float32),
    }


def validate(
    update: Weights,
    samples: int = 10,
    declared_samples: int | None = None,
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
) -> RejectionReason | None:
    rejection = validate_update(
        "plant-a",
        model(),
        update,
        samples=samples,
        declared_samples=declared_samples,
        max_bytes=max_bytes,
    )
    return None if rejection is None else rejection.reason


def test_valid_update_passes() -> None:
    assert validate(model(), samples=10, declared_samples=10) is None


@pytest.mark.parametrize("samples", [0, -3, True, 2.5])
def test_invalid_sample_count_rejected(samples: int) -> None:
    rejection = validate_update("plant-a", model(), model(), samples=samples)

    assert rejection is not None
    assert rejection.reason is RejectionReason.INVALID_SAMPLES
    assert "plant-a" in rejection.message
    assert repr(samples) in rejection.message


def test_samples_above_declared_rejected() -> None:
    rejection = validate_update("plant-a", model(), model(), samples=11, declared_samples=10)

    assert rejection is not None
    assert rejection.reason is RejectionReason.SAMPLES_ABOVE_DECLARED
    assert "11" in rejection.message
    assert "10" in rejection.message


def test_encoded_size_above_limit_rejected() -> None:
    rejection = validate_update(
        "plant-a", model(), model(), samples=1, max_bytes=99, encoded_bytes=100
    )

    assert rejection is not None
    assert rejection.reason is RejectionReason.TOO_LARGE
    assert "100 bytes" in rejection.message


def test_payload_size_checked_without_encoded_size() -> None:
    # Six float32 values are 24 bytes of payload.
    assert validate(model(), max_bytes=23) is RejectionReason.TOO_LARGE
    assert validate(model(), max_bytes=24) is None


def test_missing_parameter_rejected() -> None:
    update = model()
    del update["b"]

    assert validate(update) is RejectionReason.MISSING_PARAMETER


def test_unexpected_parameter_rejected() -> None:
    update = model()
    update["extra"] = np.zeros(1, dtype=np.float32)

    assert validate(update) is RejectionReason.UNEXPECTED_PARAMETER


def test_shape_mismatch_rejected() -> None:
    update = model()
    update["w"] = np.zeros((4,), dtype=np.float32)
    rejection = validate_update("plant-a", model(), update, samples=1)

    assert rejection is not None
    assert rejection.reason is RejectionReason.SHAPE_MISMATCH
    assert "(4,)" in rejection.message
    assert "(2, 2)" in rejection.message


def test_dtype_mismatch_rejected() -> None:
    update = model()
    update["b"] = np.zeros(2, dtype=np.float64)
    rejection = validate_update("plant-a", model(), update, samples=1)

    assert rejection is not None
    assert rejection.reason is RejectionReason.DTYPE_MISMATCH
    assert "float64" in rejection.message


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_value_rejected(bad_value: float) -> None:
    update = model()
    update["w"][1, 0] = bad_value
    rejection = validate_update("plant-a", model(), update, samples=1)

    assert rejection is not None
    assert rejection.reason is RejectionReason.NON_FINITE
    assert "'w'" in rejection.message
    assert "1 NaN or infinite" in rejection.message


def test_outlier_norm_rejected() -> None:
    # median 1.05, MAD 0.1: 1.4826 * MAD = 0.148 is below the floor 0.25 * 1.05 = 0.2625,
    # so z(site d) = 8.95 / 0.2625 = 34.1.
    norms = {"a": 1.0, "b": 1.1, "c": 0.9, "d": 10.0}

    rejections = norm_outliers(norms)

    assert [r.site_id for r in rejections] == ["d"]
    assert rejections[0].reason is RejectionReason.NORM_OUTLIER
    assert "10" in rejections[0].message
    assert "34.1" in rejections[0].message


def test_outlier_spread_uses_mad_above_floor() -> None:
    # median 2, MAD 1: spread 1.4826 is above the floor 0.5; z(e) = 8 / 1.4826 = 5.4.
    norms = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 2.0, "e": 10.0}

    rejections = norm_outliers(norms)

    assert [r.site_id for r in rejections] == ["e"]
    assert "5.4" in rejections[0].message


def test_outlier_test_skipped_below_three_updates() -> None:
    assert norm_outliers({"a": 1.0, "b": 1000.0}) == []


def test_outlier_spread_floored_when_mad_is_zero() -> None:
    # MAD is 0, so the spread is 25% of the median 1.0: z = 3.2 for 1.8 and 4 for 2.0.
    assert norm_outliers({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.8}) == []
    rejected = norm_outliers({"a": 1.0, "b": 1.0, "c": 1.0, "d": 2.0})
    assert [r.site_id for r in rejected] == ["d"]


def test_honest_three_plant_round_not_an_outlier() -> None:
    # Median 1.9973 and MAD 0.16, the smaller gap to the median: 1.4826 * MAD = 0.2372
    # gave plant-l z = 1.2189 / 0.2372 = 5.1 under a 5% floor. The 25% floor, 0.4993,
    # gives z = 2.4.
    norms = {"plant-h": 1.8373, "plant-l": 3.2162, "plant-m": 1.9973}

    assert norm_outliers(norms) == []


def test_small_norm_not_an_outlier() -> None:
    assert norm_outliers({"a": 1.0, "b": 1.0, "c": 1.1, "d": 0.0}) == []


def test_all_zero_norms_not_outliers() -> None:
    assert norm_outliers({"a": 0.0, "b": 0.0, "c": 0.0}) == []


def test_outlier_threshold_configurable() -> None:
    norms = {"a": 1.0, "b": 1.1, "c": 0.9, "d": 10.0}

    assert norm_outliers(norms, max_z=100.0) == []
