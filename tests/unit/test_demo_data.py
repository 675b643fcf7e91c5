"""Unit tests of the demo's input checks, data splits and shared-broker names."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from coordinator.demo import DemoNamespace
from coordinator.demo_data import (
    MAX_REASON_CHARS,
    WORKLOADS,
    check_demo_request,
    check_plant_files,
    one_line,
    prepare_data,
)
from plantfed.errors import PlantfedError
from plantfed.settings import Settings
from worker.splits import AI4I_HEADER, split_ai4i_by_type, split_cmapss_by_engine
from worker.trainers.base import DataError

AI4I = WORKLOADS["ai4i"]
CMAPSS = WORKLOADS["cmapss"]


def ai4i_row(index: int, product_type: str, failure: int = 0) -> list[object]:
    return [index, f"{product_type}{index}", product_type, 300.0, 310.0, 1500, 40.0, 10, failure]


def write_ai4i(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(AI4I_HEADER[:9])
        writer.writerows(rows)
    return path


def cmapss_line(unit: int, cycle: int) -> str:
    return " ".join([str(unit), str(cycle)] + ["0.5"] * 24)


def write_cmapss(folder: Path, units: int, cycles: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [cmapss_line(u, c) for u in range(1, units + 1) for c in range(1, cycles + 1)]
    (folder / "train_FD001.txt").write_text("\n".join(lines) + "\n")
    return folder


def rejection(workload_name: str, data: Path | None, **kwargs: object) -> str:
    options: dict[str, object] = {"sites": 3, "rounds": 2, **kwargs}
    with pytest.raises(PlantfedError) as error:
        check_demo_request(WORKLOADS[workload_name], data, **options)  # type: ignore[arg-type]
    message = str(error.value)
    assert "\n" not in message
    return message


def test_data_error_is_plantfed_error() -> None:
    assert issubclass(DataError, PlantfedError)


@pytest.mark.parametrize(("sites", "rounds"), [(1, 2), (0, 2), (3, 0), (3, -1)])
def test_counts_rejected_below_minimum(sites: int, rounds: int) -> None:
    message = rejection("ai4i", None, sites=sites, rounds=rounds)

    assert "at least" in message


def test_synthetic_data_needs_no_file() -> None:
    check_demo_request(AI4I, None, sites=3, rounds=1)


def test_missing_file_named_with_fix(tmp_path: Path) -> None:
    missing = tmp_path / "ai4i.csv"

    message = rejection("ai4i", missing)

    assert message.startswith(f"--data {missing} ")
    assert "file not found" in message
    assert "ai4i2020.csv" in message


def test_directory_suggests_cmapss_workload(tmp_path: Path) -> None:
    message = rejection("ai4i", tmp_path)

    assert "is a directory" in message
    assert "--workload cmapss" in message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x7fELF\x02\x01\x01\x00\xf0\xff\xfe" * 40, "cannot read the file"),
        (b"a,b\n1,2\n", "missing columns"),
        (b"\x00" * 64, "binary file"),
        (",".join(AI4I_HEADER).encode() + b"\n", "no data rows"),
        (",".join(AI4I_HEADER[:9]).encode() + b"\n1,L1,L,300,310,abc,40,0,0\n", "not a number"),
        (",".join(AI4I_HEADER[:9]).encode() + b"\n1,L1,Q,300,310,1500,40,0,0\n", "Type"),
    ],
    ids=["binary", "other-columns", "nul-bytes", "header-only", "garbage-value", "unknown-type"],
)
def test_unusable_file_rejected(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "plant.csv"
    path.write_bytes(content)

    message = rejection("ai4i", path)

    assert message.startswith(f"--data {path} cannot be used by the ai4i workload: ")
    assert reason in message
    assert len(message) < MAX_REASON_CHARS + 300


def test_cmapss_without_data_names_folder() -> None:
    message = rejection("cmapss", None)

    assert "train_FD001.txt" in message
    assert "None" not in message


def test_cmapss_file_rejected_as_not_folder(tmp_path: Path) -> None:
    path = write_ai4i(tmp_path / "plant.csv", [ai4i_row(1, "L")])

    message = rejection("cmapss", path)

    assert "is a file, not a folder" in message


def test_cmapss_folder_without_train_file(tmp_path: Path) -> None:
    message = rejection("cmapss", tmp_path)

    assert f"--data {tmp_path} has no train_FD001.txt" in message


def test_cmapss_garbage_train_file(tmp_path: Path) -> None:
    (tmp_path / "train_FD001.txt").write_text("1 1 x\n")

    message = rejection("cmapss", tmp_path)

    assert "cannot be used by the cmapss workload" in message


def test_cmapss_folder_accepted(tmp_path: Path) -> None:
    check_demo_request(CMAPSS, write_cmapss(tmp_path / "cmapss", units=4), sites=2, rounds=1)


def test_summary_folder_must_exist(tmp_path: Path) -> None:
    message = rejection("ai4i", None, summary=tmp_path / "missing" / "out.json")

    assert "--summary" in message
    assert "not found" in message


def test_one_type_cannot_make_three_plants(tmp_path: Path) -> None:
    data = write_ai4i(tmp_path / "only-l.csv", [ai4i_row(i, "L") for i in range(1, 40)])

    with pytest.raises(PlantfedError, match="only 1 plant"):
        prepare_data(AI4I, data, 3, tmp_path / "split")


def test_too_many_plants_for_rows(tmp_path: Path) -> None:
    data = write_ai4i(tmp_path / "few.csv", [ai4i_row(i, "L") for i in range(1, 4)])

    with pytest.raises(PlantfedError, match="pass fewer --sites"):
        prepare_data(AI4I, data, 5, tmp_path / "split")


def test_too_many_plants_for_engines(tmp_path: Path) -> None:
    data = write_cmapss(tmp_path / "cmapss", units=4)

    with pytest.raises(PlantfedError, match="--sites 3 does not fit"):
        prepare_data(CMAPSS, data, 3, tmp_path / "split")


def test_plant_files_accepted_when_loadable(tmp_path: Path) -> None:
    rows = [ai4i_row(i, "LMH"[i % 3], failure=int(i % 7 == 0)) for i in range(1, 60)]
    data = write_ai4i(tmp_path / "mixed.csv", rows)

    files, _ = prepare_data(AI4I, data, 3, tmp_path / "split")

    assert sorted(files) == ["plant-h", "plant-l", "plant-m"]
    check_plant_files(AI4I, files, data)


def test_split_by_type_skips_blank_lines(tmp_path: Path) -> None:
    data = write_ai4i(tmp_path / "blank.csv", [ai4i_row(1, "L"), ai4i_row(2, "M")])
    data.write_text(data.read_text() + "\n\n")

    files = split_ai4i_by_type(data, tmp_path / "split")

    assert sorted(files) == ["plant-l", "plant-m"]


def test_split_by_type_rejects_binary(tmp_path: Path) -> None:
    data = tmp_path / "binary.csv"
    data.write_bytes(b"Type\n\xf0\xff\xfe\n")

    with pytest.raises(DataError, match="cannot read the file"):
        split_ai4i_by_type(data, tmp_path / "split")


def test_split_by_engine_rejects_fractional_unit(tmp_path: Path) -> None:
    data = tmp_path / "train_FD001.txt"
    data.write_text(cmapss_line(1, 1) + "\n" + "1.5 2 " + " ".join(["0.5"] * 24) + "\n")

    with pytest.raises(DataError, match="line 2: unit is not a whole number"):
        split_cmapss_by_engine(data, tmp_path / "split", 1)


def test_one_line_flattens_and_cuts() -> None:
    flat = one_line("a\nb\t c" + "x" * 1000)

    assert flat.startswith("a b c")
    assert len(flat) == MAX_REASON_CHARS
    assert flat.endswith("...")


def test_namespace_prefixes_sites_keys_and_queue() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0")
    files = {"plant-l": Path("l.csv"), "plant-h": Path("h.csv")}

    namespace = DemoNamespace.create(settings, token="1a2b")
    isolated, renamed = namespace.apply(settings, files)

    assert sorted(renamed) == ["demo-1a2b-plant-h", "demo-1a2b-plant-l"]
    assert renamed["demo-1a2b-plant-l"] == Path("l.csv")
    assert isolated.key_prefix == "plantfed-demo-1a2b"
    assert isolated.hq_queue == "hq-demo-1a2b"
    assert isolated.broker_url == settings.broker_url
    assert "demo-1a2b-" in namespace.describe()


def test_namespace_tokens_differ() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0")

    tokens = {DemoNamespace.create(settings).site_prefix for _ in range(20)}

    assert len(tokens) > 1
