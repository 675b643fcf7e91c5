"""Tests of the C-MAPSS remaining-useful-life regressor: parsing, windows, targets, metrics."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from worker.trainers import cmapss
from worker.trainers.base import DataError, Trainer
from worker.trainers.cmapss import CmapssTrainer, official_test_rmse

FAR_DEADLINE_S = 1e12


def _engine_rows(unit: int, cycles: int, rng: np.random.Generator) -> list[list[float]]:
    rows = []
    for cycle in range(1, cycles + 1):
        settings = [0.0, 0.0, 100.0]
        sensors = rng.normal(0.0, 1.0, 21)
        rows.append([unit, cycle, *settings, *sensors])
    return rows


def _write_cmapss(path: Path, engine_cycles: dict[int, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = [row for unit, n in engine_cycles.items() for row in _engine_rows(unit, n, rng)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(" ".join(f"{value:g}" for value in row) + " " for row in rows))
    return path


def _records(units, cycles, sensors) -> cmapss.EngineRecords:
    return cmapss.EngineRecords(np.array(units), np.array(cycles, dtype=float), np.array(sensors))


def test_trainer_satisfies_protocol():
    trainer = CmapssTrainer()

    assert isinstance(trainer, Trainer)
    assert trainer.name == "cmapss-rul"
    assert trainer.primary_metric == "rmse"
    assert trainer.higher_is_better is False


def test_read_records_sorts_and_selects_sensors(tmp_path):
    path = _write_cmapss(tmp_path / "train_FD001.txt", {2: 3, 1: 4})

    records = cmapss.read_records(path)

    assert list(records.units) == [1, 1, 1, 1, 2, 2, 2]
    assert list(records.cycles) == [1, 2, 3, 4, 1, 2, 3]
    assert records.sensors.shape == (7, len(cmapss.SENSOR_NUMBERS))


def test_capped_rul_is_piecewise_linear():
    cycles = list(range(1, 201))
    records = _records([1] * 200, cycles, np.zeros((200, 14)))

    rul = cmapss.capped_rul(records)

    assert rul[0] == cmapss.RUL_CAP_CYCLES
    assert rul[74] == 125.0
    assert rul[75] == 124.0
    assert rul[-1] == 0.0


def test_windows_repeat_first_cycle_and_keep_order():
    sensors = cmapss.SENSOR_MEANS + np.arange(3)[:, None] * cmapss.SENSOR_STDS
    records = _records([7, 7, 7], [1, 2, 3], sensors)

    result = cmapss.windows(records).reshape(3, cmapss.WINDOW_CYCLES, 14)

    # Scaled sensors are 0, 1, 2 for cycles 1, 2, 3 in every column.
    assert result.dtype == np.float32
    np.testing.assert_allclose(result[0], 0.0, atol=1e-5)
    np.testing.assert_allclose(result[2, -1], 2.0, rtol=1e-5)
    np.testing.assert_allclose(result[2, -2], 1.0, rtol=1e-5)
    np.testing.assert_allclose(result[2, :-2], 0.0, atol=1e-5)


def test_windows_last_only_one_per_engine():
    sensors = np.tile(cmapss.SENSOR_MEANS, (5, 1))
    records = _records([1, 1, 1, 2, 2], [1, 2, 3, 1, 2], sensors)

    result = cmapss.windows(records, last_only=True)

    assert result.shape == (2, cmapss.FEATURE_COUNT)


def test_windows_do_not_mix_engines():
    sensors = np.vstack(
        [
            np.tile(cmapss.SENSOR_MEANS, (2, 1)),
            np.tile(cmapss.SENSOR_MEANS + cmapss.SENSOR_STDS, (2, 1)),
        ]
    )
    records = _records([1, 1, 2, 2], [1, 2, 1, 2], sensors)

    result = cmapss.windows(records)

    np.testing.assert_allclose(result[2], 1.0, rtol=1e-5)


def test_holdout_units_fixed_and_at_least_one():
    units = np.repeat(np.arange(1, 11), 3)

    chosen = cmapss.holdout_units(units, 0.2, seed=5)

    assert chosen.size == 2
    np.testing.assert_array_equal(chosen, cmapss.holdout_units(units, 0.2, seed=5))
    assert cmapss.holdout_units(np.array([1, 2]), 0.2, seed=5).size == 1


def test_load_splits_by_engine(tmp_path):
    path = _write_cmapss(tmp_path / "train_FD001.txt", {u: 10 + u for u in range(1, 11)})

    data = CmapssTrainer().load_data(path)

    chosen = cmapss.holdout_units(np.arange(1, 11), cmapss.HOLDOUT_FRACTION, cmapss.SPLIT_SEED)
    assert data.holdout_samples == sum(10 + int(u) for u in chosen)
    assert data.train_samples + data.holdout_samples == sum(10 + u for u in range(1, 11))
    assert data.train.targets.max() <= 1.0


def test_load_accepts_directory(tmp_path):
    _write_cmapss(tmp_path / "site" / "train_FD001.txt", {1: 5, 2: 5})

    data = CmapssTrainer().load_data(tmp_path / "site")

    assert data.train_samples + data.holdout_samples == 10


def test_load_directory_without_train_file(tmp_path):
    (tmp_path / "notes.txt").write_text("x")

    with pytest.raises(DataError, match=r"exactly one train_\*\.txt file, found \[\]"):
        CmapssTrainer().load_data(tmp_path)


def test_load_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        CmapssTrainer().load_data(tmp_path / "train_FD001.txt")


def test_load_single_engine(tmp_path):
    path = _write_cmapss(tmp_path / "train_FD001.txt", {1: 5})

    with pytest.raises(DataError, match="at least 2 engines"):
        CmapssTrainer().load_data(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no data rows"),
        ("1 2 3\n", "expected 26 columns"),
        ("1 1 " + "x " * 24 + "\n", "not a C-MAPSS table"),
    ],
)
def test_load_invalid_file(tmp_path, content, message):
    path = tmp_path / "train_FD001.txt"
    path.write_text(content)

    with pytest.raises(DataError, match=message):
        CmapssTrainer().load_data(path)


def test_summarize_rmse_and_mae():
    metrics = CmapssTrainer().summarize({"n": 4.0, "sq_err_sum": 100.0, "abs_err_sum": 12.0})

    assert metrics == {"rmse": 5.0, "mae": 3.0}


def test_summarize_empty_is_nan():
    metrics = CmapssTrainer().summarize({"n": 0.0, "sq_err_sum": 0.0, "abs_err_sum": 0.0})

    assert math.isnan(metrics["rmse"])
    assert math.isnan(metrics["mae"])


def test_train_and_evaluate_on_small_file(tmp_path):
    path = _write_cmapss(tmp_path / "train_FD001.txt", {u: 40 for u in range(1, 6)})
    trainer = CmapssTrainer()
    data = trainer.load_data(path)
    weights = trainer.initial_weights(0)

    result = trainer.train(weights, data, {"epochs": 1, "batch_size": 32}, FAR_DEADLINE_S)
    sums = trainer.evaluate(result.weights, data)

    assert result.samples == 160
    assert result.batches == 5
    assert sums["n"] == 40
    assert sums["sq_err_sum"] >= sums["abs_err_sum"] ** 2 / sums["n"]


def test_train_past_deadline_stops(tmp_path):
    path = _write_cmapss(tmp_path / "train_FD001.txt", {1: 10, 2: 10})
    trainer = CmapssTrainer()
    data = trainer.load_data(path)

    result = trainer.train(trainer.initial_weights(0), data, {}, time.monotonic() - 1.0)

    assert result.stopped_at_deadline
    assert result.batches == 0


def test_official_test_rmse_rejects_count_mismatch(tmp_path):
    _write_cmapss(tmp_path / "test_FD001.txt", {1: 5, 2: 5})
    (tmp_path / "RUL_FD001.txt").write_text("10\n")

    with pytest.raises(DataError, match="expected 2 values"):
        official_test_rmse(CmapssTrainer().initial_weights(0), tmp_path)


def test_central_training_test_rmse(shared_data_dir):
    trainer = CmapssTrainer()
    data_dir = shared_data_dir / "cmapss"
    data = trainer.load_data(data_dir)

    result = trainer.train(trainer.initial_weights(0), data, {"epochs": 15}, FAR_DEADLINE_S)
    holdout = trainer.summarize(trainer.evaluate(result.weights, data))

    assert holdout["rmse"] < 25.0
    assert official_test_rmse(result.weights, data_dir) < 25.0
