"""Tests of the AI4I 2020 failure classifier: file parsing, features, split, metrics, learning."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
import pytest

from plantfed.errors import ConfigError, ModelFormatError
from worker.splits import split_ai4i_by_type, write_synthetic_ai4i
from worker.trainers import ai4i, mlp
from worker.trainers.ai4i import Ai4iTrainer
from worker.trainers.base import DataError, SiteData, Trainer

FAR_DEADLINE_S = 1e12
HEADER = ["UDI", "Product ID", "Type", *ai4i.READING_COLUMNS, "Machine failure", "TWF"]
ROUNDS = 10


def _write_csv(path: Path, header: list[str], rows: list[list[object]], bom: bool = False) -> Path:
    with path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _row(index: int, product_type: str = "M", failure: int = 0) -> list[object]:
    return [index, f"{product_type}{index}", product_type, 298.1, 308.6, 1551, 42.8, 0, failure, 0]


def _pooled_summary(trainer: Ai4iTrainer, weights: mlp.Weights, sites: list[SiteData]) -> dict:
    totals: dict[str, float] = {}
    for site in sites:
        for key, value in trainer.evaluate(weights, site).items():
            totals[key] = totals.get(key, 0.0) + value
    return trainer.summarize(totals)


def _fedavg(updates: list[tuple[mlp.Weights, int]]) -> mlp.Weights:
    total = sum(samples for _, samples in updates)
    names = updates[0][0]
    return {
        name: sum(weights[name] * (samples / total) for weights, samples in updates).astype(
            np.float32
        )
        for name in names
    }


# --- file parsing ------------------------------------------------------------------------------


def test_trainer_satisfies_protocol():
    trainer = Ai4iTrainer()

    assert isinstance(trainer, Trainer)
    assert trainer.name == "ai4i-mlp"
    assert trainer.primary_metric == "f1"
    assert trainer.higher_is_better is True


def test_load_reads_file_with_byte_order_mark(tmp_path):
    rows = [_row(i, failure=int(i % 5 == 0)) for i in range(1, 21)]
    path = _write_csv(tmp_path / "plant.csv", HEADER, rows, bom=True)

    data = Ai4iTrainer().load_data(path)

    assert data.train_samples == 16
    assert data.holdout_samples == 4
    assert data.train.features.shape == (16, ai4i.FEATURE_COUNT)
    assert data.train.features.dtype == np.float32


def test_load_missing_file_names_file(tmp_path):
    path = tmp_path / "absent.csv"

    with pytest.raises(DataError, match=r"absent\.csv: file not found"):
        Ai4iTrainer().load_data(path)


def test_load_missing_column_names_column(tmp_path):
    header = [name for name in HEADER if name != "Torque [Nm]"]
    path = _write_csv(tmp_path / "plant.csv", header, [])

    with pytest.raises(DataError, match=r"plant\.csv: missing columns \['Torque \[Nm\]'\]"):
        Ai4iTrainer().load_data(path)


def test_load_non_numeric_value_names_line_and_column(tmp_path):
    rows = [_row(1), _row(2)]
    rows[1][6] = "n/a"
    path = _write_csv(tmp_path / "plant.csv", HEADER, rows)

    with pytest.raises(DataError, match=r"line 3: Torque \[Nm\] is not a number: 'n/a'"):
        Ai4iTrainer().load_data(path)


def test_load_header_only_has_no_rows(tmp_path):
    path = _write_csv(tmp_path / "plant.csv", HEADER, [])

    with pytest.raises(DataError, match=r"plant\.csv: no data rows"):
        Ai4iTrainer().load_data(path)


def test_load_empty_file_reports_missing_columns(tmp_path):
    path = tmp_path / "plant.csv"
    path.write_text("")

    with pytest.raises(DataError, match="missing columns"):
        Ai4iTrainer().load_data(path)


def test_load_unknown_product_type(tmp_path):
    path = _write_csv(tmp_path / "plant.csv", HEADER, [_row(1, product_type="X")])

    with pytest.raises(DataError, match="Type must be one of"):
        Ai4iTrainer().load_data(path)


def test_load_target_outside_zero_one(tmp_path):
    path = _write_csv(tmp_path / "plant.csv", HEADER, [_row(1, failure=2)])

    with pytest.raises(DataError, match="Machine failure must be 0 or 1"):
        Ai4iTrainer().load_data(path)


# --- features and split ------------------------------------------------------------------------


def test_features_use_fixed_physical_scaling():
    readings = np.array([[300.0, 308.6, 1380.0, 40.0, 275.0]])

    features = ai4i.build_features(["L"], readings)[0]
    by_name = dict(zip((name for name, _, _ in ai4i.FEATURE_SCALING), features, strict=True))

    power_w = 40.0 * 1380.0 * 2 * math.pi / 60
    assert by_name["air_temperature_k"] == pytest.approx(0.0)
    assert by_name["rotational_speed_rpm"] == pytest.approx(0.0)
    assert by_name["temperature_difference_k"] == pytest.approx(0.0, abs=1e-5)
    assert by_name["power_w"] == pytest.approx((power_w - 6250.0) / 1375.0, rel=1e-5)
    # 275 min x 40 Nm = 11,000 min Nm, exactly the overstrain limit of type L.
    assert by_name["strain_to_limit_ratio"] == pytest.approx(0.0, abs=1e-6)


def test_features_do_not_depend_on_other_rows():
    readings = np.array([[300.0, 310.0, 1500.0, 40.0, 100.0], [304.0, 313.0, 2800.0, 5.0, 0.0]])

    both = ai4i.build_features(["L", "H"], readings)
    alone = ai4i.build_features(["L"], readings[:1])

    np.testing.assert_array_equal(both[:1], alone)


def test_overstrain_ratio_depends_on_type():
    readings = np.array([[300.0, 310.0, 1500.0, 50.0, 240.0]] * 2)

    features = ai4i.build_features(["L", "H"], readings)

    ratio_column = ai4i.FEATURE_COUNT - 1
    assert features[0, ratio_column] > 0 > features[1, ratio_column]


def test_holdout_is_stratified_and_fixed():
    targets = np.array([1.0] * 50 + [0.0] * 950)

    mask = ai4i.stratified_holdout_mask(targets, 0.2, seed=1)
    again = ai4i.stratified_holdout_mask(targets, 0.2, seed=1)

    assert mask.sum() == 200
    assert targets[mask].sum() == 10
    np.testing.assert_array_equal(mask, again)


# --- metrics -----------------------------------------------------------------------------------


def test_summarize_computes_f1_from_counts():
    sums = {"n": 100.0, "tp": 6.0, "fp": 2.0, "fn": 4.0, "tn": 88.0, "loss_sum": 10.0}

    metrics = Ai4iTrainer().summarize(sums)

    assert metrics["precision"] == pytest.approx(0.75)
    assert metrics["recall"] == pytest.approx(0.6)
    assert metrics["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert metrics["accuracy"] == pytest.approx(0.94)
    assert metrics["loss"] == pytest.approx(0.1)


def test_summarize_without_predictions_gives_zero():
    sums = {"n": 0.0, "tp": 0.0, "fp": 0.0, "fn": 0.0, "tn": 0.0, "loss_sum": 0.0}

    metrics = Ai4iTrainer().summarize(sums)

    assert metrics == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "accuracy": 0.0, "loss": 0.0}


def test_evaluate_counts_add_up(tmp_path):
    path = tmp_path / "synthetic.csv"
    write_synthetic_ai4i(path, rows=500, seed=3)
    trainer = Ai4iTrainer()
    data = trainer.load_data(path)

    sums = trainer.evaluate(trainer.initial_weights(0), data)

    assert sums["n"] == data.holdout_samples
    assert sums["tp"] + sums["fp"] + sums["fn"] + sums["tn"] == sums["n"]
    assert sums["tp"] + sums["fn"] == data.holdout.targets.sum()
    assert sums["loss_sum"] > 0


# --- training ----------------------------------------------------------------------------------


def test_train_reports_samples_batches_and_loss(tmp_path):
    path = tmp_path / "synthetic.csv"
    write_synthetic_ai4i(path, rows=640, seed=3)
    trainer = Ai4iTrainer()
    data = trainer.load_data(path)
    weights = trainer.initial_weights(0)

    result = trainer.train(weights, data, {"epochs": 2, "batch_size": 64}, FAR_DEADLINE_S)

    assert result.samples == data.train_samples == 512
    assert result.batches == 2 * 8
    assert not result.stopped_at_deadline
    assert math.isfinite(result.metrics["train_loss"])
    assert set(result.weights) == set(weights)
    assert not np.array_equal(result.weights["dense0.weight"], weights["dense0.weight"])


def test_train_past_deadline_returns_start_weights(tmp_path):
    path = tmp_path / "synthetic.csv"
    write_synthetic_ai4i(path, rows=200, seed=3)
    trainer = Ai4iTrainer()
    data = trainer.load_data(path)
    weights = trainer.initial_weights(0)

    result = trainer.train(weights, data, {}, time.monotonic() - 1.0)

    assert result.stopped_at_deadline
    assert result.batches == 0
    np.testing.assert_array_equal(result.weights["dense1.weight"], weights["dense1.weight"])


def test_train_rejects_unknown_parameter(tmp_path):
    path = tmp_path / "synthetic.csv"
    write_synthetic_ai4i(path, rows=100, seed=3)
    trainer = Ai4iTrainer()
    data = trainer.load_data(path)

    with pytest.raises(ConfigError, match="pos_wieght"):
        trainer.train(trainer.initial_weights(0), data, {"pos_wieght": 2.0}, FAR_DEADLINE_S)


def test_train_rejects_non_positive_pos_weight(tmp_path):
    path = tmp_path / "synthetic.csv"
    write_synthetic_ai4i(path, rows=100, seed=3)
    trainer = Ai4iTrainer()
    data = trainer.load_data(path)

    with pytest.raises(ConfigError, match="pos_weight"):
        trainer.train(trainer.initial_weights(0), data, {"pos_weight": 0}, FAR_DEADLINE_S)


# --- real data ---------------------------------------------------------------------------------


def test_central_training_reaches_f1(shared_data_dir):
    trainer = Ai4iTrainer()
    data = trainer.load_data(shared_data_dir / "ai4i2020.csv")

    result = trainer.train(trainer.initial_weights(0), data, {"epochs": 3 * ROUNDS}, FAR_DEADLINE_S)
    metrics = trainer.summarize(trainer.evaluate(result.weights, data))

    assert data.holdout_samples == 2000
    assert metrics["f1"] >= 0.7


def test_fedavg_by_product_type_matches_central(shared_data_dir, tmp_path):
    trainer = Ai4iTrainer()
    paths = split_ai4i_by_type(shared_data_dir / "ai4i2020.csv", tmp_path)
    sites = [trainer.load_data(paths[site]) for site in ("plant-l", "plant-m", "plant-h")]
    start = trainer.initial_weights(0)

    global_weights = start
    for round_number in range(ROUNDS):
        params = {"seed": round_number}
        updates = [trainer.train(global_weights, site, params, FAR_DEADLINE_S) for site in sites]
        global_weights = _fedavg([(update.weights, update.samples) for update in updates])
    federated = _pooled_summary(trainer, global_weights, sites)

    # Central baseline: the same training rows pooled, as many epochs as the federation ran.
    pooled = mlp.Samples(
        np.vstack([site.train.features for site in sites]),
        np.vstack([site.train.targets for site in sites]),
    )
    pooled_site = SiteData(tmp_path, pooled, pooled, len(pooled), len(pooled))
    epochs = ROUNDS * ai4i.DEFAULTS.epochs
    central = trainer.train(start, pooled_site, {"epochs": epochs}, FAR_DEADLINE_S)
    central_f1 = _pooled_summary(trainer, central.weights, sites)["f1"]

    assert central_f1 >= 0.7
    assert federated["f1"] >= 0.9 * central_f1


def test_train_rejects_weights_of_other_model(tmp_path):
    path = tmp_path / "synthetic.csv"
    write_synthetic_ai4i(path, rows=100, seed=3)
    trainer = Ai4iTrainer()
    data = trainer.load_data(path)
    other = mlp.init_mlp((12, 32, 16, 1), np.random.default_rng(0))

    with pytest.raises(ModelFormatError, match="layer sizes"):
        trainer.train(other, data, {}, FAR_DEADLINE_S)
    with pytest.raises(ModelFormatError, match="layer sizes"):
        trainer.evaluate(other, data)
