"""Weights on the wire: safetensors encoding, content hashes and structural checks.

A model is a mapping from parameter name to a numpy array. It is encoded with
safetensors, a format that stores raw tensors and a JSON header and cannot carry
code, and it is addressed by the SHA-256 of its encoded bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from plantfed.errors import ModelFormatError

Array = npt.NDArray[np.floating]
Weights = dict[str, Array]

#: Largest encoded model or update accepted anywhere, in bytes.
DEFAULT_MAX_MODEL_BYTES = 256 * 1024 * 1024


def encode_weights(weights: Mapping[str, Array]) -> bytes:
    """Encode weights as safetensors bytes, with parameters in name order."""
    ordered = {name: np.ascontiguousarray(weights[name]) for name in sorted(weights)}
    return bytes(st_save(ordered))


def decode_weights(data: bytes, max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> Weights:
    """Decode safetensors bytes into weights.

    Raises
    ------
    ModelFormatError
        When the bytes exceed ``max_bytes`` or are not valid safetensors.
    """
    if len(data) > max_bytes:
        raise ModelFormatError(f"model is {len(data)} bytes, above the limit of {max_bytes} bytes")
    try:
        loaded = st_load(data)
    except (SafetensorError, ValueError, KeyError) as exc:
        raise ModelFormatError(f"invalid safetensors data: {exc}") from exc
    # The loader's order varies between calls; name order keeps every consumer deterministic.
    return {name: loaded[name] for name in sorted(loaded)}


def content_hash(data: bytes) -> str:
    """Return the hex SHA-256 digest that names a blob."""
    return hashlib.sha256(data).hexdigest()


def describe(weights: Mapping[str, Array]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Return each parameter's shape and dtype name, the structure updates must match."""
    return {name: (tuple(a.shape), a.dtype.name) for name, a in sorted(weights.items())}
