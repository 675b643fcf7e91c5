"""Tests of the demo data helpers: per-plant splits and the synthetic AI4I generator."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from worker.splits import split_ai4i_by_type, split_cmapss_by_engine, write_synthetic_ai4i
from worker.trainers.ai4i import Ai4iTrainer
from worker.trainers.base import DataError
from worker.trainers.cmapss import CmapssTrainer


def _read(path):
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def test_synthetic_ai4i_is_loadable_and_reproducible(tmp_path):
    write_synthetic_ai4i(tmp_path / "a.csv", rows=300, seed=4)
    write_synthetic_ai4i(tmp_path / "b.csv", rows=300, seed=4)

    data = Ai4iTrainer().load_data(tmp_path / "a.csv")

    assert data.train_samples + data.holdout_samples == 300
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_synthetic_ai4i_ranges_and_failure_rate(tmp_path):
    path = tmp_path / "synthetic.csv"
    write_synthetic_ai4i(path, rows=5000, seed=1)

    rows = _read(path)
    air = np.array([float(r["Air temperature [K]"]) for r in rows])
    wear = np.array([float(r["Tool wear [min]"]) for r in rows])
    failures = np.array([int(r["Machine failure"]) for r in rows])
    types = [r["Type"] for r in rows]

    assert len(rows) == 5000
    assert 1.0 < air.std() < 3.0
    assert abs(air.mean() - 300.0) < 1.5
    assert wear.min() == 0
    assert wear.max() <= 245
    assert 0.01 < failures.mean() < 0.08
    assert 0.55 < types.count("L") / 5000 < 0.65


def test_synthetic_ai4i_follows_failure_rules(tmp_path):
    path = tmp_path / "synthetic.csv"
    write_synthetic_ai4i(path, rows=5000, seed=2)
    limits = {"L": 11_000.0, "M": 12_000.0, "H": 13_000.0}

    for row in _read(path):
        air = float(row["Air temperature [K]"])
        process = float(row["Process temperature [K]"])
        speed = float(row["Rotational speed [rpm]"])
        torque = float(row["Torque [Nm]"])
        wear = float(row["Tool wear [min]"])
        power = torque * speed * 2 * math.pi / 60
        modes = {name: row[name] == "1" for name in ("TWF", "HDF", "PWF", "OSF", "RNF")}
        assert modes["HDF"] == (process - air < 8.6 and speed < 1380), row
        assert modes["PWF"] == (power < 3500 or power > 9000), row
        assert modes["OSF"] == (wear * torque > limits[row["Type"]]), row
        assert not modes["TWF"] or 200 <= wear <= 245, row
        assert (row["Machine failure"] == "1") == any(modes.values()), row


def test_synthetic_ai4i_is_learnable(tmp_path):
    path = tmp_path / "synthetic.csv"
    write_synthetic_ai4i(path, rows=4000, seed=5)
    trainer = Ai4iTrainer()
    data = trainer.load_data(path)

    result = trainer.train(trainer.initial_weights(0), data, {"epochs": 30}, 1e12)

    assert trainer.summarize(trainer.evaluate(result.weights, data))["f1"] >= 0.6


def test_split_ai4i_one_file_per_type(tmp_path):
    source = tmp_path / "all.csv"
    write_synthetic_ai4i(source, rows=400, seed=3)

    paths = split_ai4i_by_type(source, tmp_path / "sites")

    assert sorted(paths) == ["plant-h", "plant-l", "plant-m"]
    source_rows = _read(source)
    for site, product_type in (("plant-l", "L"), ("plant-m", "M"), ("plant-h", "H")):
        rows = _read(paths[site])
        assert rows == [r for r in source_rows if r["Type"] == product_type]


def test_split_ai4i_skips_absent_type(tmp_path):
    source = tmp_path / "all.csv"
    write_synthetic_ai4i(source, rows=400, seed=3)
    rows = [r for r in _read(source) if r["Type"] != "H"]
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    paths = split_ai4i_by_type(source, tmp_path / "sites")

    assert sorted(paths) == ["plant-l", "plant-m"]


def test_split_ai4i_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        split_ai4i_by_type(tmp_path / "absent.csv", tmp_path / "sites")


def _cmapss_lines(units, cycles=6):
    return [
        f"{unit} {cycle} " + " ".join(["0.5"] * 24)
        for unit in units
        for cycle in range(1, cycles + 1)
    ]


def test_split_cmapss_deals_engines_round_robin(tmp_path):
    source = tmp_path / "train_FD001.txt"
    source.write_text("\n".join(_cmapss_lines(range(1, 8))) + "\n")

    sites = split_cmapss_by_engine(source, tmp_path / "sites", n_sites=3)

    assert sorted(sites) == ["plant-1", "plant-2", "plant-3"]
    units = {
        site: sorted(
            {
                int(line.split()[0])
                for line in (path / "train_FD001.txt").read_text().split("\n")
                if line
            }
        )
        for site, path in sites.items()
    }
    assert units == {"plant-1": [1, 4, 7], "plant-2": [2, 5], "plant-3": [3, 6]}
    data = CmapssTrainer().load_data(sites["plant-2"])
    assert data.train_samples + data.holdout_samples == 12


@pytest.mark.parametrize("n_sites", [0, 4])
def test_split_cmapss_rejects_site_count(tmp_path, n_sites):
    source = tmp_path / "train_FD001.txt"
    source.write_text("\n".join(_cmapss_lines(range(1, 8))) + "\n")

    with pytest.raises(ValueError, match="n_sites must be between 1 and 3"):
        split_cmapss_by_engine(source, tmp_path / "sites", n_sites=n_sites)


def test_split_cmapss_real_file_covers_all_engines(shared_data_dir, tmp_path):
    source = shared_data_dir / "cmapss" / "train_FD001.txt"

    sites = split_cmapss_by_engine(source, tmp_path, n_sites=4)

    written = sum(len((path / source.name).read_text().splitlines()) for path in sites.values())
    assert written == 20_631
