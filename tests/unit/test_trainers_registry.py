"""Tests of the trainer registry: built-ins, entry points and errors for unknown names."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from plantfed.errors import ConfigError
from worker.trainers import registry
from worker.trainers.ai4i import Ai4iTrainer
from worker.trainers.cmapss import CmapssTrainer
from worker.trainers.noop import NoopTrainer


def _use_entry_points(monkeypatch, *entries: tuple[str, str]) -> None:
    points = [EntryPoint(name, value, registry.ENTRY_POINT_GROUP) for name, value in entries]
    monkeypatch.setattr(registry, "entry_points", lambda group: points)


class NotATrainer:
    pass


def test_builtins_available_without_installed_metadata(monkeypatch):
    _use_entry_points(monkeypatch)

    factories = registry.available_trainers()

    assert list(factories) == ["ai4i-mlp", "cmapss-rul", "noop"]
    assert isinstance(registry.get_trainer("ai4i-mlp"), Ai4iTrainer)
    assert isinstance(registry.get_trainer("cmapss-rul"), CmapssTrainer)


def test_get_trainer_returns_new_instance():
    assert registry.get_trainer("ai4i-mlp") is not registry.get_trainer("ai4i-mlp")


def test_unknown_name_lists_available(monkeypatch):
    _use_entry_points(monkeypatch)

    with pytest.raises(ConfigError, match=r"unknown trainer 'resnet'.*'ai4i-mlp', 'cmapss-rul'"):
        registry.get_trainer("resnet")


def test_entry_point_adds_trainer(monkeypatch):
    _use_entry_points(monkeypatch, ("ai4i-copy", "worker.trainers.ai4i:Ai4iTrainer"))

    assert isinstance(registry.get_trainer("ai4i-copy"), Ai4iTrainer)


def test_broken_entry_point_is_left_out(monkeypatch, caplog):
    _use_entry_points(monkeypatch, ("broken", "no_such_module_here:Trainer"))

    factories = registry.available_trainers()

    assert "broken" not in factories
    assert "ai4i-mlp" in factories
    assert "trainer broken" in caplog.text


def test_broken_entry_point_named_in_error(monkeypatch):
    _use_entry_points(monkeypatch, ("broken", "no_such_module_here:Trainer"))

    with pytest.raises(
        ConfigError, match=r"'broken' \(no_such_module_here:Trainer\) cannot be loaded"
    ):
        registry.get_trainer("broken")


def test_factory_without_protocol_is_rejected(monkeypatch):
    _use_entry_points(monkeypatch, ("odd", f"{__name__}:NotATrainer"))

    with pytest.raises(ConfigError, match="does not implement the Trainer protocol"):
        registry.get_trainer("odd")


@pytest.fixture
def clean_registrations(monkeypatch):
    monkeypatch.setattr(registry, "_registered", {})


def test_register_trainer_adds_name(clean_registrations):
    class SlowNoop(NoopTrainer):
        name = "slow-noop"

    registry.register_trainer("slow-noop", SlowNoop)
    registry.register_trainer("slow-noop", SlowNoop)

    assert isinstance(registry.get_trainer("slow-noop"), SlowNoop)
    assert "slow-noop" in registry.available_trainers()


def test_register_trainer_rejects_taken_name(clean_registrations):
    with pytest.raises(ConfigError, match="'ai4i-mlp' is already taken"):
        registry.register_trainer("ai4i-mlp", NoopTrainer)


def test_register_trainer_rejects_second_factory(clean_registrations):
    registry.register_trainer("extra", NoopTrainer)

    with pytest.raises(ConfigError, match="'extra' is already taken"):
        registry.register_trainer("extra", Ai4iTrainer)
