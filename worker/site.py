"""What a plant worker process knows about its datasites: ids, data and trainers.

The daemon builds one ``PlantRuntime`` in the main process before the prefork
pool starts, so pool processes inherit the loaded data. Redis clients are made
per process, on first use after the fork.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import redis

from plantfed.blobs import BlobStore
from plantfed.errors import PlantfedError
from plantfed.keys import Keys
from plantfed.modelio import Weights, decode_weights
from plantfed.redisconn import connect
from plantfed.roundstore import RoundStore
from plantfed.settings import Settings
from worker.trainers.base import DataError, SiteData, Trainer
from worker.trainers.registry import get_trainer

logger = logging.getLogger(__name__)

#: Global models kept decoded in each worker process, most recent first.
MODEL_CACHE_SIZE = 4


@dataclass(frozen=True)
class OfferedTrainer:
    """A trainer a site offers, with its data loaded, or the reason it cannot run."""

    trainer: Trainer
    data: SiteData | None
    data_error: str | None


@dataclass
class PlantRuntime:
    """Per-process state of a plant worker."""

    settings: Settings
    site_ids: tuple[str, ...]
    data_path: Path | None
    offered: dict[str, OfferedTrainer]
    _pid: int = field(default=-1, repr=False)
    _client: redis.Redis | None = field(default=None, repr=False)
    _models: OrderedDict[str, Weights] = field(default_factory=OrderedDict, repr=False)

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.key_prefix)

    @property
    def client(self) -> redis.Redis:
        """Redis client of the current process (a fresh one after a fork)."""
        if self._client is None or self._pid != os.getpid():
            assert self.settings.broker_url is not None
            self._client = connect(self.settings.broker_url)
            self._pid = os.getpid()
            self._models.clear()
        return self._client

    @property
    def blobs(self) -> BlobStore:
        return BlobStore(self.client, self.keys)

    @property
    def rounds(self) -> RoundStore:
        return RoundStore(self.client, self.keys)

    @property
    def samples(self) -> int:
        """Local training samples of the first trainer whose data loaded."""
        for offer in self.offered.values():
            if offer.data is not None:
                return offer.data.train_samples
        return 0

    @property
    def data_error(self) -> str | None:
        errors = [f"{name}: {o.data_error}" for name, o in self.offered.items() if o.data_error]
        return "; ".join(errors) if errors else None

    def fetch_model(self, digest: str) -> Weights:
        """Return the global model with hash ``digest``, from the cache or from Redis."""
        client = self.client  # resets the cache after a fork
        cached = self._models.get(digest)
        if cached is not None:
            self._models.move_to_end(digest, last=False)
            return cached
        weights = decode_weights(BlobStore(client, self.keys).get(digest))
        self._models[digest] = weights
        self._models.move_to_end(digest, last=False)
        while len(self._models) > MODEL_CACHE_SIZE:
            self._models.popitem(last=True)
        return weights


def load_runtime(
    settings: Settings,
    site_ids: tuple[str, ...],
    data_path: Path | None,
    trainer_names: tuple[str, ...],
) -> PlantRuntime:
    """Look up the offered trainers and load the local data once for each.

    A data file that fails to load does not stop the worker: the error is kept,
    shown in the liveness key, and returned by every task that needs the data.
    """
    if not site_ids:
        raise PlantfedError("a plant worker needs at least one site id")
    offered: dict[str, OfferedTrainer] = {}
    for name in trainer_names:
        trainer = get_trainer(name)
        try:
            if data_path is None and getattr(trainer, "needs_data", True):
                raise DataError("no data path given (--data)")
            data = trainer.load_data(data_path or Path(os.devnull))
            offered[name] = OfferedTrainer(trainer, data, None)
            logger.info(
                "Sites %s: trainer %s loaded %d training and %d held-out samples from %s",
                ",".join(site_ids),
                name,
                data.train_samples,
                data.holdout_samples,
                data_path,
            )
        except DataError as exc:
            offered[name] = OfferedTrainer(trainer, None, str(exc))
            logger.error(
                "Sites %s: trainer %s cannot use its data: %s", ",".join(site_ids), name, exc
            )
    return PlantRuntime(settings, site_ids, data_path, offered)


_runtime: PlantRuntime | None = None


def install_runtime(runtime: PlantRuntime) -> None:
    """Make ``runtime`` the one this process and its future pool processes use."""
    global _runtime
    _runtime = runtime


def runtime_installed() -> bool:
    """Return whether this process runs as a plant worker."""
    return _runtime is not None


def current_runtime() -> PlantRuntime:
    """Return the installed runtime.

    Raises
    ------
    PlantfedError
        When the worker was not started through ``plantfed worker``.
    """
    if _runtime is None:
        raise PlantfedError(
            "no plant runtime installed: start plant workers with `plantfed worker`"
        )
    return _runtime
