"""Weights encoding: safetensors round trip, hashes and refusal of bad bytes."""

from __future__ import annotations

import numpy as np
import pytest

from plantfed.errors import ModelFormatError
from plantfed.modelio import content_hash, decode_weights, describe, encode_weights


def test_round_trip_keeps_values_and_order() -> None:
    weights = {"b": np.arange(3, dtype=np.float32), "a": np.ones((2, 2), dtype=np.float32)}

    decoded = decode_weights(encode_weights(weights))

    assert list(decoded) == ["a", "b"]
    np.testing.assert_array_equal(decoded["b"], weights["b"])
    assert describe(decoded) == {"a": ((2, 2), "float32"), "b": ((3,), "float32")}


def test_hash_depends_on_content_only() -> None:
    first = encode_weights({"w": np.zeros(4, dtype=np.float32), "v": np.ones(1, dtype=np.float32)})
    second = encode_weights({"v": np.ones(1, dtype=np.float32), "w": np.zeros(4, dtype=np.float32)})

    assert content_hash(first) == content_hash(second)


def test_pickle_bytes_rejected() -> None:
    import pickle

    payload = pickle.dumps({"w": np.zeros(2)})

    with pytest.raises(ModelFormatError):
        decode_weights(payload)


def test_oversized_model_rejected() -> None:
    data = encode_weights({"w": np.zeros(1000, dtype=np.float32)})

    with pytest.raises(ModelFormatError, match="above the limit"):
        decode_weights(data, max_bytes=100)
