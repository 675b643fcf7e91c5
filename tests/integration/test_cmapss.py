"""A second real workload: remaining-useful-life regression on NASA C-MAPSS FD001."""

from __future__ import annotations

import pytest

from coordinator.campaign import CampaignRunner
from coordinator.config import campaign_config_from_dict
from coordinator.localfed import PlantSpec
from plantfed.modelio import decode_weights
from worker.splits import split_cmapss_by_engine
from worker.trainers.cmapss import official_test_rmse

pytestmark = pytest.mark.integration


def test_cmapss_campaign_scores_official_test_set(federation, shared_data_dir, tmp_path):
    cmapss = shared_data_dir / "cmapss"
    sites = split_cmapss_by_engine(cmapss / "train_FD001.txt", tmp_path / "data", n_sites=3)
    plants = [PlantSpec((site,), path, trainers=("cmapss-rul",)) for site, path in sites.items()]
    fed = federation(plants)
    config = campaign_config_from_dict(
        {
            "id": "cmapss-test",
            "rounds": 4,
            "sites": sorted(sites),
            "checkpoint_dir": str(tmp_path / "checkpoints"),
            "trainer": {"name": "cmapss-rul"},
            "round": {"preset": "plant-lan", "deadline_s": 60},
        }
    )
    assert fed.hq is not None

    summary = CampaignRunner(fed.hq, config).run()
    weights = decode_weights(fed.hq.blobs.get(summary.global_model_hash))
    test_rmse = official_test_rmse(weights, cmapss)

    assert summary.rounds_completed == 4
    assert summary.datasite_failures == 0
    assert summary.primary_metric == "rmse"
    assert summary.final_metrics["rmse"] < 40.0
    assert summary.best_metric == min(r["metrics"]["rmse"] for r in summary.rounds)
    assert test_rmse < 40.0
