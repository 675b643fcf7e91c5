"""Every Redis key plantfed writes, with its owner and lifetime.

All keys live under one prefix (``Settings.key_prefix``, default ``plantfed``).

=================================  ===================  ===============================
key                                written by           lifetime
=================================  ===================  ===============================
``site:<site>:alive``              plant worker timer   TTL ``liveness_ttl_s``; deleted
                                                        on clean shutdown
``site:<site>:drain``              operator (CLI)       until undrained, or ``--for``
``sites``                          plant worker timer   set of every site ever seen;
                                                        ``plantfed sites forget`` removes one
``blob:<sha256>``                  coordinator, plants  TTL ``model_ttl_s`` for models,
                                                        ``update_ttl_s`` for updates
``campaign:<c>``                   coordinator          permanent (also on disk)
``campaign:<c>:lock``              running coordinator  TTL, renewed while it lives
``campaign:<c>:stats``             coordinator          permanent (also on disk)
``campaign:<c>:round_counter``     ad hoc rounds        permanent
``round:<c>:<r>``                  coordinator, closer  permanent record of one round
``round:<c>:<r>:outcomes``         plant tasks          same TTL as update blobs
``round:<c>:<r>:events``           plant tasks, closer  same TTL as update blobs
``round:<c>:<r>:eval``             plant eval tasks     same TTL as update blobs
=================================  ===================  ===============================

``<r>`` is a round tag such as ``r0003.a1``: round index and dispatch attempt.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoundRef:
    """Identity of one dispatched round: campaign, round index and attempt (from 1)."""

    campaign_id: str
    index: int
    attempt: int = 1

    @property
    def tag(self) -> str:
        """Short form used in keys and log lines, such as ``r0003.a1``."""
        return f"r{self.index:04d}.a{self.attempt}"

    def __str__(self) -> str:
        return f"campaign {self.campaign_id} round {self.index} attempt {self.attempt}"


@dataclass(frozen=True)
class Keys:
    """Builds the Redis key names under one prefix."""

    prefix: str = "plantfed"

    def site_alive(self, site_id: str) -> str:
        return f"{self.prefix}:site:{site_id}:alive"

    def site_index(self) -> str:
        return f"{self.prefix}:sites"

    def site_drain(self, site_id: str) -> str:
        return f"{self.prefix}:site:{site_id}:drain"

    def blob(self, digest: str) -> str:
        return f"{self.prefix}:blob:{digest}"

    def campaign(self, campaign_id: str) -> str:
        return f"{self.prefix}:campaign:{campaign_id}"

    def campaign_lock(self, campaign_id: str) -> str:
        return f"{self.prefix}:campaign:{campaign_id}:lock"

    def campaign_stats(self, campaign_id: str) -> str:
        return f"{self.prefix}:campaign:{campaign_id}:stats"

    def round_counter(self, campaign_id: str) -> str:
        return f"{self.prefix}:campaign:{campaign_id}:round_counter"

    def round(self, ref: RoundRef) -> str:
        return f"{self.prefix}:round:{ref.campaign_id}:{ref.tag}"

    def outcomes(self, ref: RoundRef) -> str:
        return f"{self.round(ref)}:outcomes"

    def events(self, ref: RoundRef) -> str:
        return f"{self.round(ref)}:events"

    def evaluations(self, ref: RoundRef) -> str:
        return f"{self.round(ref)}:eval"
