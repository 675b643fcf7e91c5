"""Single rounds on real worker processes and a private Redis."""

from __future__ import annotations

import json

import pytest

from coordinator.localfed import PlantSpec
from coordinator.manager import ParallelExecutionManager
from coordinator.rounds import NOT_STARTED
from plantfed.messages import OutcomeStatus
from worker.trainers.registry import get_trainer

pytestmark = pytest.mark.integration


def test_round_across_three_plants(federation, ai4i_plants):
    fed = federation(ai4i_plants)
    manager = ParallelExecutionManager(fed.hq, min_datasites=2)
    model = get_trainer("ai4i-mlp").initial_weights(seed=1)

    result = manager.execute_parallel_round(model, "ai4i-mlp", deadline_s=60.0)

    assert result.success
    assert sorted(result.completed_datasites) == ["plant-h", "plant-l", "plant-m"]
    assert result.failed_datasites == {}
    assert result.model_hash_out != result.model_hash_in
    assert result.execution_time_s > 0
    for site, outcome in result.datasite_results.items():
        assert outcome.status is OutcomeStatus.COMPLETED
        assert outcome.samples > 0
        assert outcome.update_hash
        assert outcome.site_id == site
    record = fed.hq.rounds.load(result.ref)
    assert record is not None
    assert record.result is not None
    assert record.result["model_hash_out"] == result.model_hash_out


def test_round_not_started_below_minimum(federation, ai4i_plants):
    fed = federation(ai4i_plants[:1])
    manager = ParallelExecutionManager(fed.hq, min_datasites=2)
    model = get_trainer("ai4i-mlp").initial_weights(seed=1)

    result = manager.execute_parallel_round(
        model, "ai4i-mlp", datasites=["plant-h", "plant-l"], deadline_s=30.0
    )

    assert not result.success
    assert result.status == NOT_STARTED
    assert result.completed_datasites == []
    assert "plant-l" in result.excluded_datasites
    assert "no liveness key" in result.excluded_datasites["plant-l"]


def test_drained_and_vetoed_sites_stay_out(federation, ai4i_plants):
    from coordinator.health import drain_site

    fed = federation(ai4i_plants)
    drain_site(fed.hq.client, fed.hq.keys, "plant-h", "bearing swap", for_s=None)
    manager = ParallelExecutionManager(fed.hq, min_datasites=1)
    manager.add_health_check(lambda h: "maintenance window" if h.site_id == "plant-m" else None)
    model = get_trainer("ai4i-mlp").initial_weights(seed=1)

    result = manager.execute_parallel_round(model, "ai4i-mlp", deadline_s=60.0)

    assert result.completed_datasites == ["plant-l"]
    assert "bearing swap" in result.excluded_datasites["plant-h"]
    assert "maintenance window" in result.excluded_datasites["plant-m"]
    record = fed.hq.rounds.load(result.ref)
    assert record is not None
    assert "maintenance window" in record.spec.excluded["plant-m"]


def test_site_without_trainer_left_out(federation, ai4i_plants):
    plants = [*ai4i_plants[:2], PlantSpec(("plant-x",), None, trainers=("noop",))]
    fed = federation(plants)
    manager = ParallelExecutionManager(fed.hq, min_datasites=2)
    model = get_trainer("ai4i-mlp").initial_weights(seed=1)

    result = manager.execute_parallel_round(model, "ai4i-mlp", deadline_s=60.0)

    assert result.success
    assert "plant-x" not in result.completed_datasites
    assert "does not offer trainer 'ai4i-mlp'" in result.excluded_datasites["plant-x"]
    stats = manager.get_execution_stats()
    assert stats.stats.rounds_completed == 1
    assert stats.stats.total_participations == 2
    assert json.dumps(stats.to_json())
