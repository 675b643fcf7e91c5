"""Content-addressed blob store in Redis for models and updates."""

from __future__ import annotations

import redis

from plantfed.errors import BlobNotFoundError
from plantfed.keys import Keys
from plantfed.modelio import content_hash


class BlobStore:
    """Stores bytes under ``blob:<sha256>`` with an expiry, and reads them back verified."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys

    def put(self, data: bytes, ttl_s: float) -> str:
        """Store ``data`` and return its hash; an existing blob only has its expiry extended."""
        return self.put_new(data, ttl_s)[0]

    def put_new(self, data: bytes, ttl_s: float) -> tuple[str, bool]:
        """Store ``data``; return its hash and whether this call created the blob."""
        digest = content_hash(data)
        key = self._keys.blob(digest)
        ttl_ms = max(1, int(ttl_s * 1000))
        # A stored blob only has its expiry extended, so its bytes are not sent again.
        # PEXPIRE GT returns 0 both for a missing key and for a longer expiry, hence EXISTS.
        if self._client.pexpire(key, ttl_ms, gt=True) or self._client.exists(key):
            return digest, False
        created = bool(self._client.set(key, data, px=ttl_ms, nx=True))
        if not created:
            self._client.pexpire(key, ttl_ms, gt=True)
        return digest, created

    def get(self, digest: str) -> bytes:
        """Return the blob stored under ``digest``.

        Raises
        ------
        BlobNotFoundError
            When no blob is stored under the hash, or the stored bytes do not match it.
        """
        data = self._client.get(self._keys.blob(digest))
        if data is None:
            raise BlobNotFoundError(
                f"no blob stored under hash {digest} (never stored, or expired)"
            )
        assert isinstance(data, bytes)
        if content_hash(data) != digest:
            raise BlobNotFoundError(f"blob {digest} is corrupt: its bytes hash to another value")
        return data

    def exists(self, digest: str) -> bool:
        """Return whether a blob is stored under ``digest``."""
        return bool(self._client.exists(self._keys.blob(digest)))

    def expire(self, digest: str, ttl_s: float) -> None:
        """Set the remaining lifetime of a blob, for example to drop a discarded update soon."""
        self._client.pexpire(self._keys.blob(digest), max(1, int(ttl_s * 1000)))
