"""Remaining-useful-life regression on NASA C-MAPSS FD001 turbofan data, trainer "cmapss-rul".

C-MAPSS (A. Saxena and K. Goebel, NASA Prognostics Data Repository, 2008)
records engines cycle by cycle, one whitespace-separated row per cycle: unit,
cycle, three operating settings and 21 sensors. A plant's data is a training
file of this format with engines run to failure. The model follows common
practice for FD001. The target is the remaining cycles capped at 125, a
piecewise-linear degradation target. The seven sensors that stay constant in
FD001 are dropped and the other 14 are standardised with fixed constants. The
input is the window of the last ``WINDOW_CYCLES`` cycles, flattened.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plantfed.modelio import Weights
from worker.trainers import mlp
from worker.trainers.base import DataError, SiteData, TrainParams, TrainResult

logger = logging.getLogger(__name__)

COLUMN_COUNT = 26
#: 1-based numbers of the sensors used; sensors 1, 5, 6, 10, 16, 18 and 19 are constant in FD001.
SENSOR_NUMBERS = (2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21)
SENSOR_COLUMNS = tuple(4 + number for number in SENSOR_NUMBERS)

#: Mean and standard deviation of each used sensor over all 20,631 rows of
#: train_FD001.txt, computed once and fixed here so that every plant scales alike.
SENSOR_MEANS = np.array(
    [
        642.6809,
        1590.5231,
        1408.9338,
        553.3677,
        2388.0967,
        9065.2429,
        47.5412,
        521.4135,
        2388.0962,
        8143.7527,
        8.4421,
        393.2107,
        38.8163,
        23.2897,
    ]
)
SENSOR_STDS = np.array(
    [
        0.5,
        6.131,
        9.0004,
        0.8851,
        0.071,
        22.0823,
        0.2671,
        0.7375,
        0.0719,
        19.0757,
        0.0375,
        1.5487,
        0.1807,
        0.1082,
    ]
)

#: Remaining useful life above which an engine counts as healthy, in cycles.
RUL_CAP_CYCLES = 125.0
WINDOW_CYCLES = 30
FEATURE_COUNT = WINDOW_CYCLES * len(SENSOR_NUMBERS)
HIDDEN_SIZES = (64, 32)
LAYER_SIZES = (FEATURE_COUNT, *HIDDEN_SIZES, 1)

HOLDOUT_FRACTION = 0.2
#: Seed that picks the held-out engines; fixed so that a plant's holdout never changes.
SPLIT_SEED = 2008

DEFAULTS = mlp.FitConfig(epochs=5, batch_size=128, learning_rate=1e-3, proximal_mu=0.0, seed=0)


@dataclass(frozen=True)
class EngineRecords:
    """Rows of a C-MAPSS file: unit numbers, cycle numbers and used sensors ``(n, 14)``."""

    units: np.ndarray
    cycles: np.ndarray
    sensors: np.ndarray


def read_records(path: Path) -> EngineRecords:
    """Read a C-MAPSS text file, ordered by unit and cycle.

    Raises
    ------
    DataError
        When the file is missing or unreadable, contains a non-numeric value or a row
        without 26 columns, or has no rows.
    """
    try:
        with warnings.catch_warnings():
            # An empty file is reported below as a DataError rather than as a warning.
            warnings.filterwarnings("ignore", message="loadtxt: input contained no data")
            table = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the file: {exc}") from exc
    except ValueError as exc:
        raise DataError(f"{path}: not a C-MAPSS table of numbers: {exc}") from exc

    if table.size == 0:
        raise DataError(f"{path}: no data rows")
    if table.shape[1] != COLUMN_COUNT:
        raise DataError(f"{path}: expected {COLUMN_COUNT} columns per row, got {table.shape[1]}")
    if not np.all(np.isfinite(table)):
        raise DataError(f"{path}: contains values that are not finite")

    table = table[np.lexsort((table[:, 1], table[:, 0]))]
    return EngineRecords(table[:, 0].astype(np.int64), table[:, 1], table[:, SENSOR_COLUMNS])


def find_train_file(path: Path) -> Path:
    """Return ``path`` if it is a file, else the one ``train_*.txt`` file in directory ``path``."""
    if not path.is_dir():
        return path
    candidates = sorted(path.glob("train_*.txt"))
    if len(candidates) != 1:
        names = [candidate.name for candidate in candidates]
        raise DataError(f"{path}: expected exactly one train_*.txt file, found {names}")
    return candidates[0]


def windows(records: EngineRecords, last_only: bool = False) -> np.ndarray:
    """Return flattened, scaled sensor windows ending at each cycle, float32.

    Each window contains the ``WINDOW_CYCLES`` most recent cycles of one engine, oldest
    first. Early cycles with a shorter history repeat the engine's first cycle. With
    ``last_only`` there is one window per engine, ending at its last cycle, in unit order.
    """
    scaled = (records.sensors - SENSOR_MEANS) / SENSOR_STDS
    result = []
    for unit in np.unique(records.units):
        rows = scaled[records.units == unit]
        padded = np.vstack([np.repeat(rows[:1], WINDOW_CYCLES - 1, axis=0), rows])
        stacked = np.lib.stride_tricks.sliding_window_view(padded, WINDOW_CYCLES, axis=0)
        # sliding_window_view puts the window axis last; move it before the sensors.
        engine_windows = stacked.transpose(0, 2, 1).reshape(len(rows), -1)
        result.append(engine_windows[-1:] if last_only else engine_windows)
    return np.vstack(result).astype(np.float32)


def capped_rul(records: EngineRecords) -> np.ndarray:
    """Return each row's remaining cycles until its engine's last cycle, capped at the RUL cap."""
    last_cycle = {unit: records.cycles[records.units == unit].max() for unit in set(records.units)}
    remaining = np.array([last_cycle[u] for u in records.units]) - records.cycles
    capped: np.ndarray = np.minimum(remaining, RUL_CAP_CYCLES)
    return capped


def holdout_units(units: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Return the unit numbers held out: ``fraction`` of the engines (at least one), by ``seed``."""
    distinct = np.unique(units)
    count = max(1, round(fraction * distinct.size))
    return np.sort(np.random.default_rng(seed).permutation(distinct)[:count])


class CmapssTrainer:
    """MLP (420-64-32-1) that predicts capped remaining useful life from a 30-cycle window.

    The output is the remaining life divided by the cap of 125 cycles; metrics are in
    cycles. Parameters a campaign may set, all optional:

    - ``epochs`` (default 5): local passes over the plant's training windows per round.
    - ``batch_size`` (default 128).
    - ``learning_rate`` (default 0.001): Adam step size.
    - ``proximal_mu`` (default 0): FedProx coefficient.
    - ``seed`` (default 0): seed of the batch shuffling.
    """

    name = "cmapss-rul"

    #: Metrics ``summarize`` returns, by name.
    metric_names = ("rmse", "mae")

    def check_params(self, params: TrainParams) -> None:
        """Raise ``ConfigError`` for an unknown or out-of-range parameter."""
        mlp.check_param_names(params, mlp.FIT_PARAM_NAMES, self.name)
        mlp.fit_config_from_params(params, DEFAULTS)

    @property
    def primary_metric(self) -> str:
        """Root mean squared error in cycles."""
        return "rmse"

    @property
    def higher_is_better(self) -> bool:
        """False: a smaller RMSE is better."""
        return False

    def load_data(self, path: Path) -> SiteData:
        """Read the plant's training file and hold out a fixed 20% of its engines.

        ``path`` is a training-format file or a directory with exactly one
        ``train_*.txt`` file. At least two engines are needed.
        """
        file = find_train_file(path)
        records = read_records(file)
        engines = np.unique(records.units)
        if engines.size < 2:
            raise DataError(f"{file}: needs at least 2 engines to hold one out, found 1")

        features = windows(records)
        targets = (capped_rul(records) / RUL_CAP_CYCLES).astype(np.float32).reshape(-1, 1)
        held_out_units = holdout_units(records.units, HOLDOUT_FRACTION, SPLIT_SEED)
        holdout_mask = np.isin(records.units, held_out_units)
        train = mlp.Samples(features[~holdout_mask], targets[~holdout_mask])
        holdout = mlp.Samples(features[holdout_mask], targets[holdout_mask])
        logger.info(
            "%s: %d engines, %d training cycles, %d holdout cycles",
            file,
            engines.size,
            len(train),
            len(holdout),
        )
        return SiteData(path, train, holdout, len(train), len(holdout))

    def initial_weights(self, seed: int) -> Weights:
        """Return He-initialised weights for the 420-64-32-1 network."""
        return mlp.init_mlp(LAYER_SIZES, np.random.default_rng(seed))

    def train(
        self,
        weights: Weights,
        data: SiteData,
        params: TrainParams,
        deadline_monotonic_s: float,
    ) -> TrainResult:
        """Train with Adam on the squared error; see the class docstring for ``params``."""
        mlp.check_param_names(params, mlp.FIT_PARAM_NAMES, self.name)
        config = mlp.fit_config_from_params(params, DEFAULTS)
        mlp.check_architecture(weights, LAYER_SIZES)
        samples = _samples(data.train, data.path)
        outcome = mlp.fit(weights, samples, mlp.mean_squared_error, config, deadline_monotonic_s)
        return TrainResult(
            weights=outcome.weights,
            samples=len(samples),
            metrics=outcome.metrics(),
            batches=outcome.batches,
            stopped_at_deadline=outcome.stopped_at_deadline,
        )

    def evaluate(self, weights: Weights, data: SiteData) -> dict[str, float]:
        """Return the count and the summed squared and absolute errors, in cycles, on the holdout.

        Every cycle of every held-out engine counts, against its capped remaining life.
        """
        mlp.check_architecture(weights, LAYER_SIZES)
        samples = _samples(data.holdout, data.path)
        errors = (
            predict_rul_cycles(weights, samples.features) - RUL_CAP_CYCLES * samples.targets[:, 0]
        )
        return {
            "n": float(len(samples)),
            "sq_err_sum": float(np.sum(errors.astype(np.float64) ** 2)),
            "abs_err_sum": float(np.sum(np.abs(errors))),
        }

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
        """Return RMSE and MAE in cycles; both are NaN when ``n`` is 0."""
        count = sums["n"]
        if count <= 0:
            return {"rmse": math.nan, "mae": math.nan}
        return {
            "rmse": math.sqrt(sums["sq_err_sum"] / count),
            "mae": sums["abs_err_sum"] / count,
        }


def predict_rul_cycles(weights: Weights, features: np.ndarray) -> np.ndarray:
    """Return predicted remaining life in cycles, clipped to ``[0, RUL_CAP_CYCLES]``."""
    outputs = mlp.predict(weights, features)[:, 0] * RUL_CAP_CYCLES
    clipped: np.ndarray = np.clip(outputs, 0.0, RUL_CAP_CYCLES)
    return clipped


def official_test_rmse(weights: Weights, data_dir: Path, subset: str = "FD001") -> float:
    """Return the RMSE in cycles on the official C-MAPSS test set of ``subset``.

    The prediction for each test engine, made at its last recorded cycle, is compared
    with the true remaining life in ``RUL_<subset>.txt``, uncapped, as in the benchmark.

    Raises
    ------
    DataError
        When ``test_<subset>.txt`` or ``RUL_<subset>.txt`` is missing or invalid, or
        their engine counts differ.
    ModelFormatError
        When ``weights`` do not fit this trainer's network.
    """
    mlp.check_architecture(weights, LAYER_SIZES)
    test_file = data_dir / f"test_{subset}.txt"
    rul_file = data_dir / f"RUL_{subset}.txt"
    features = windows(read_records(test_file), last_only=True)
    try:
        true_rul = np.loadtxt(rul_file, dtype=np.float64, ndmin=1)
    except (OSError, ValueError) as exc:
        raise DataError(f"{rul_file}: cannot read remaining-life values: {exc}") from exc
    if true_rul.shape != (features.shape[0],):
        raise DataError(
            f"{rul_file}: expected {features.shape[0]} values, one per test engine, "
            f"got {true_rul.size}"
        )
    errors = predict_rul_cycles(weights, features) - true_rul
    return float(np.sqrt(np.mean(errors**2)))


def _samples(value: object, path: Path) -> mlp.Samples:
    if not isinstance(value, mlp.Samples):
        raise DataError(f"{path}: site data was not loaded by this trainer")
    return value
