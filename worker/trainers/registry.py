"""Trainers by name: the built-in ones, ``plantfed.trainers`` entry points and plugin registrations.

A training task names its trainer by a registered name, never by a module path,
so a message from the coordinator cannot make a plant import arbitrary code.
A trainer becomes available in one of three ways:

- it is built in (``BUILTIN_TRAINERS``), which works from a source tree without
  installed package metadata;
- an installed package declares an entry point in the ``plantfed.trainers``
  group, whose object, called without arguments, returns a ``Trainer``. An entry
  point of a built-in name replaces the built-in;
- a plugin module that the operator loads at worker start calls
  ``register_trainer``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import cast

from plantfed.errors import ConfigError
from worker.trainers.base import Trainer

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "plantfed.trainers"

#: Trainers of this package, as entry-point values (``module:attribute``).
BUILTIN_TRAINERS = {
    "ai4i-mlp": "worker.trainers.ai4i:Ai4iTrainer",
    "cmapss-rul": "worker.trainers.cmapss:CmapssTrainer",
    "noop": "worker.trainers.noop:NoopTrainer",
}

TrainerFactory = Callable[[], Trainer]

#: Trainers added at run time by ``register_trainer``, in this process only.
_registered: dict[str, TrainerFactory] = {}


def register_trainer(name: str, factory: TrainerFactory) -> None:
    """Make ``factory`` available as trainer ``name`` in this process.

    Registering the same factory again under the same name does nothing, so a
    plugin module may be imported twice.

    Raises
    ------
    ConfigError
        When ``name`` is empty or already names another trainer.
    """
    if not name:
        raise ConfigError("a trainer name must not be empty")
    if _registered.get(name) is factory:
        return
    if name in _registered or name in _entry_points():
        raise ConfigError(f"trainer name {name!r} is already taken; choose another name")
    _registered[name] = factory


def _entry_points() -> dict[str, EntryPoint]:
    found = {
        name: EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in BUILTIN_TRAINERS.items()
    }
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        found[entry_point.name] = entry_point
    return found


def _load(entry_point: EntryPoint) -> TrainerFactory:
    return cast(TrainerFactory, entry_point.load())


def available_trainers() -> dict[str, TrainerFactory]:
    """Return a factory for every trainer that can be loaded, by name, in name order.

    An entry point whose module fails to import is left out and logged as a
    warning, so one broken plugin does not disable the others.
    """
    factories: dict[str, TrainerFactory] = {}
    for name, entry_point in _entry_points().items():
        try:
            factories[name] = _load(entry_point)
        except (ImportError, AttributeError) as exc:
            logger.warning("trainer %s (%s) cannot be loaded: %s", name, entry_point.value, exc)
    factories.update(_registered)
    return dict(sorted(factories.items()))


def get_trainer(name: str) -> Trainer:
    """Return a new instance of the trainer registered as ``name``.

    Raises
    ------
    ConfigError
        When no trainer has that name, its module fails to import, or its factory
        does not return an object with the ``Trainer`` methods. The message for an
        unknown name lists the available names.
    """
    factory = _registered.get(name)
    if factory is None:
        entry_point = _entry_points().get(name)
        if entry_point is None:
            available = sorted(available_trainers())
            raise ConfigError(f"unknown trainer {name!r}; available trainers: {available}")
        try:
            factory = _load(entry_point)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"trainer {name!r} ({entry_point.value}) cannot be loaded: {exc}"
            ) from exc

    trainer = factory()
    if not isinstance(trainer, Trainer):
        raise ConfigError(
            f"trainer {name!r} is registered, but its factory returned "
            f"{type(trainer).__name__}, which does not implement the Trainer protocol"
        )
    return trainer
