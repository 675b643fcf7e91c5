"""One coordinator per campaign: a Redis lock with a TTL, renewed while its holder lives."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import redis

from plantfed.errors import CampaignLockedError
from plantfed.keys import Keys

logger = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class CampaignLock:
    """Exclusive right to run one campaign.

    The value names the holder (host, pid and a random token), so a second
    coordinator can name who runs the campaign. If the holder dies, the lock
    expires after ``ttl_s`` and the next invocation takes over.
    """

    def __init__(self, client: redis.Redis, keys: Keys, campaign_id: str, ttl_s: float = 15.0):
        self._client = client
        self._key = keys.campaign_lock(campaign_id)
        self._campaign_id = campaign_id
        self._ttl_ms = int(ttl_s * 1000)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current_holder(self) -> str | None:
        value = self._client.get(self._key)
        return value.decode() if isinstance(value, bytes) else None

    def acquire(self, wait_s: float = 0.0) -> None:
        """Take the lock, waiting up to ``wait_s``; raise ``CampaignLockedError`` if held."""
        give_up = time.monotonic() + wait_s
        while not self._client.set(self._key, self.holder, px=self._ttl_ms, nx=True):
            if time.monotonic() >= give_up:
                raise CampaignLockedError(
                    f"campaign {self._campaign_id} is run by another coordinator "
                    f"({self.current_holder() or 'holder unknown'}); wait for it, or pass "
                    "--wait-lock DURATION to wait for it to finish. The lock of a "
                    f"coordinator that died expires within {self._ttl_ms / 1000:g} s"
                )
            time.sleep(0.5)
        logger.info("Campaign %s: lock taken by %s", self._campaign_id, self.holder)
        self._stop.clear()
        self._thread = threading.Thread(target=self._keep_alive, name="campaign-lock", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self._release(keys=[self._key], args=[self.holder])
        except redis.RedisError as exc:  # it expires on its own
            logger.warning("Campaign %s: could not release lock: %s", self._campaign_id, exc)

    def _keep_alive(self) -> None:
        interval_s = self._ttl_ms / 3000
        while not self._stop.wait(interval_s):
            try:
                renewed = self._renew(keys=[self._key], args=[self.holder, self._ttl_ms])
                # Redis lost the key (a restart without data): take it back if free.
                if not renewed and not self._client.set(
                    self._key, self.holder, px=self._ttl_ms, nx=True
                ):
                    logger.error(
                        "Campaign %s: lock now held by %s",
                        self._campaign_id,
                        self.current_holder(),
                    )
            except redis.RedisError as exc:
                logger.warning("Campaign %s: could not renew lock: %s", self._campaign_id, exc)

    def __enter__(self) -> CampaignLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
