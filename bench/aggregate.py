"""Aggregation: merge time and peak memory for N updates of P float32 parameters.

Beside each merge, the same process times one numpy pass over the same bytes: each
update loaded exactly as the strategy loads it, then ``np.add`` into a
preallocated float32 accumulator.

Updates are made on the fly. Eight updates (the global model plus noise of
slightly different scales) are generated once from fixed seeds, before any
timing. Update ``i`` is a fresh copy of pool entry ``i % 8``, made inside its
loader when the strategy calls it, so at most the updates a strategy holds
exist at once and 1000 updates of 4 MB never need 4 GB. That copy is the
generation cost, and the numpy pass pays it too, through the same loaders. A
merge that keeps loaded updates alive therefore shows up in its peak memory.

Each case runs in its own subprocess. Its peak memory is the growth of the
process's maximum resident set size (``ru_maxrss``) over its size just before
the first merge, so the pool and the global model are not counted. Before that
baseline, a merge of 10 updates of 1000 parameters makes numba compile its loops
or load them from its cache, a fixed cost of each process of about 45 MiB.

Merge and numpy pass are both warmed up first, untimed, on 40 updates (the
order-statistic strategies on the case's N, so that the warm-up does not set their
peak), and they
alternate their order across repeats. The FedAvg cases run with glibc's malloc
told to keep freed memory for reuse (``MALLOC_MMAP_THRESHOLD_`` 32 MiB and
``MALLOC_TRIM_THRESHOLD_`` 1 GiB, see ``mallopt(3)``). With its dynamic defaults,
whether a freed 4 MB array is reused or mapped afresh, at about 1000 page faults,
depends on the order of earlier allocations: on this machine it moved either
side's time by up to a factor of three between identical runs. The order-statistic
cases keep the defaults, because memory kept for reuse would count in their peak,
the figure that matters for them. ``--system-malloc`` keeps the defaults for all.

Strategies: ``fedavg`` (the default guards: validation, the delta-norm outlier
test and the direction screen, all in one pass), ``fedavg-unscreened``
(``max_norm_z=None, min_cosine=None``: validation only), and the order-statistic
strategies ``median`` and ``trimmed-mean``, which keep every update in memory
and are measured at small N only. None of these updates is rejected, so the
timed merges load each update once.

Run from the repository root::

    python -m bench.aggregate            # N = 10, 100, 1000; P = 1,000,000
    python -m bench.aggregate --quick    # N = 10, 100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench.support import add_common_options, configure_bench_logging, emit, format_table
from coordinator.aggregation import (
    Strategy,
    StrategyConfig,
    StrategyName,
    UpdateSource,
    make_strategy,
)
from coordinator.aggregation.delta import FOLD_EVERY
from plantfed.modelio import Weights

#: Distinct updates generated before timing; update i copies entry i % POOL_SIZE.
POOL_SIZE = 8

#: Noise scale of pool entry k is NOISE_SCALE * (1 + 0.05 k), so delta norms differ a little.
NOISE_SCALE = 0.01

#: Updates merged once, untimed, before a case is measured: more than one block sum's worth.
WARM_UP_UPDATES = FOLD_EVERY + 8

#: glibc malloc settings of the FedAvg cases: keep freed memory for reuse (see the module
#: docstring).
REUSE_FREED_MEMORY = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(2**30),
}

#: Parameters of the round merged before the memory baseline, to load the compiled loops.
TINY_PARAMS = 1000

#: Strategy configurations by the name the tables use.
STRATEGIES: dict[str, StrategyConfig] = {
    "fedavg": StrategyConfig(),
    "fedavg-unscreened": StrategyConfig(max_norm_z=None, min_cosine=None),
    "median": StrategyConfig(name=StrategyName.MEDIAN),
    "trimmed-mean": StrategyConfig(name=StrategyName.TRIMMED_MEAN, trim_fraction=0.1),
}


@dataclass(frozen=True)
class CaseResult:
    """Figures of one (updates, params, strategy) case."""

    updates: int
    params: int
    strategy: str
    merge_s: float
    numpy_pass_s: float
    speed_ratio: float
    peak_mib: float
    model_mib: float
    included: int
    max_abs_error: float
    repeats: int


def parameter_shapes(params: int) -> dict[str, tuple[int, ...]]:
    """Split ``params`` parameters into two weight matrices and a bias, like a small MLP."""
    bias = min(1000, params // 10)
    first = (params - bias) // 2
    columns = 500 if first >= 500 else 1
    first -= first % columns
    second = params - bias - first
    return {
        "layer1.weight": (first // columns, columns),
        "layer2.weight": (second,),
        "bias": (bias,),
    }


def build_pool(params: int) -> tuple[Weights, list[Weights]]:
    """Return the global model and ``POOL_SIZE`` updates, each deterministic by its seed."""
    shapes = parameter_shapes(params)
    rng = np.random.default_rng(0)
    global_weights = {n: rng.standard_normal(s, dtype=np.float32) for n, s in shapes.items()}
    pool = []
    for k in range(POOL_SIZE):
        rng = np.random.default_rng(1000 + k)
        scale = np.float32(NOISE_SCALE * (1 + 0.05 * k))
        pool.append(
            {n: g + scale * rng.standard_normal(g.shape, dtype=np.float32)
             for n, g in global_weights.items()}
        )  # fmt: skip
    for update in pool:
        for array in update.values():
            array.setflags(write=False)
    return global_weights, pool


def samples_of(index: int) -> int:
    """Return the sample count of update ``index`` (unequal, so the weighted path runs)."""
    return 100 + 10 * (index % 5)


def make_sources(pool: Sequence[Weights], updates: int) -> list[UpdateSource]:
    """Return ``updates`` sources whose loaders copy their pool entry when called."""

    def loader(entry: Weights) -> Callable[[], Weights]:
        return lambda: {name: array.copy() for name, array in entry.items()}

    return [
        UpdateSource(f"site-{i:04d}", samples_of(i), loader(pool[i % len(pool)]))
        for i in range(updates)
    ]


def numpy_pass(global_weights: Weights, sources: Sequence[UpdateSource]) -> float:
    """Time one load and ``np.add`` per update into a preallocated accumulator."""
    accumulator = {n: np.zeros_like(g) for n, g in global_weights.items()}
    started = time.perf_counter()
    for source in sources:
        loaded = source.load()
        for name, array in loaded.items():
            np.add(accumulator[name], array, out=accumulator[name])
        del loaded
    return time.perf_counter() - started


def expected_mean(global_weights: Weights, pool: Sequence[Weights], updates: int) -> Weights:
    """Return the exact sample-weighted FedAvg result, in float64, for the correctness column."""
    weight_of_entry = np.zeros(len(pool))
    for i in range(updates):
        weight_of_entry[i % len(pool)] += samples_of(i)
    weight_of_entry /= weight_of_entry.sum()
    expected: Weights = {}
    for name, g in global_weights.items():
        total = np.zeros(g.shape)
        for weight, entry in zip(weight_of_entry, pool, strict=True):
            total += weight * entry[name].astype(np.float64)
        expected[name] = total
    return expected


def load_compiled_code(strategy: Strategy) -> None:
    """Merge a round of tiny updates, so that numba compiles or loads its loops now."""
    tiny_global, tiny_pool = build_pool(TINY_PARAMS)
    strategy.aggregate(tiny_global, make_sources(tiny_pool, 10))


def run_case(updates: int, params: int, strategy_name: str, repeats: int) -> CaseResult:
    """Measure one case in this process; call it in a fresh subprocess for a clean peak."""
    global_weights, pool = build_pool(params)
    sources = make_sources(pool, updates)
    strategy = make_strategy(STRATEGIES[strategy_name])
    load_compiled_code(strategy)
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Untimed warm-up of both, so that neither pays for first-touch page faults alone. A
    # strategy that keeps every update warms up on at most the case's own update count,
    # so that the warm-up does not set its peak.
    warm_up_count = WARM_UP_UPDATES if strategy.streaming else min(updates, WARM_UP_UPDATES)
    warm_up = make_sources(pool, warm_up_count)
    strategy.aggregate(global_weights, warm_up)
    numpy_pass(global_weights, warm_up)
    merge_times: list[float] = []
    pass_times: list[float] = []
    result = None
    for repeat in range(repeats):
        if repeat % 2 == 1:
            pass_times.append(numpy_pass(global_weights, sources))
        # Only the last result is checked: freeing the others keeps the merges alike.
        result = None
        started = time.perf_counter()
        result = strategy.aggregate(global_weights, sources)
        merge_times.append(time.perf_counter() - started)
        if repeat % 2 == 0:
            pass_times.append(numpy_pass(global_weights, sources))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kib

    assert result is not None
    error = float("nan")
    if strategy_name.startswith("fedavg"):
        expected = expected_mean(global_weights, pool, updates)
        error = max(float(np.max(np.abs(result.weights[n] - expected[n]))) for n in expected)
    merge_s = float(np.median(merge_times))
    pass_s = float(np.median(pass_times))
    return CaseResult(
        updates=updates,
        params=params,
        strategy=strategy_name,
        merge_s=merge_s,
        numpy_pass_s=pass_s,
        speed_ratio=pass_s / merge_s,
        peak_mib=peak_kib / 1024.0,
        model_mib=4.0 * params / 2**20,
        included=len(result.included),
        max_abs_error=error,
        repeats=repeats,
    )


def run_case_subprocess(
    updates: int, params: int, strategy: str, repeats: int, system_malloc: bool
) -> CaseResult:
    """Run one case in a fresh interpreter and return its figures."""
    command = [
        sys.executable, "-m", "bench.aggregate", "--case",
        "--updates", str(updates), "--params", str(params),
        "--strategy", strategy, "--repeats", str(repeats),
    ]  # fmt: skip
    env = dict(os.environ)
    if not system_malloc and strategy.startswith("fedavg"):
        env.update(REUSE_FREED_MEMORY)
    completed = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if completed.returncode != 0:
        raise RuntimeError(
            f"aggregation case {strategy} N={updates} failed ({completed.returncode}): "
            f"{completed.stderr[-2000:]}"
        )
    return CaseResult(**json.loads(completed.stdout.strip().splitlines()[-1]))


def plan_cases(args: argparse.Namespace) -> list[tuple[int, str]]:
    """Return the (updates, strategy) cases to run."""
    counts = args.updates or ([10, 100] if args.quick else [10, 100, 1000])
    robust_counts = [n for n in counts if n <= args.max_robust_updates]
    cases = [(n, s) for s in ("fedavg", "fedavg-unscreened") for n in counts]
    cases += [(n, s) for s in ("median", "trimmed-mean") for n in robust_counts]
    return cases


def repeats_for(updates: int) -> int:
    """Return the timed repeats of a case: fewer for larger N."""
    if updates <= 10:
        return 11
    if updates <= 100:
        return 5
    return 3


def print_report(results: Sequence[CaseResult]) -> None:
    """Print the table of merge and numpy-pass figures."""
    headers = ["strategy", "updates", "params", "merge_s", "numpy_pass_s", "speed_ratio",
               "peak_mib", "model_mib", "included", "max_abs_error"]  # fmt: skip
    rows = [[r.strategy, r.updates, r.params, r.merge_s, r.numpy_pass_s, r.speed_ratio,
             r.peak_mib, r.model_mib, r.included, r.max_abs_error] for r in results]  # fmt: skip
    print("Aggregation: merge beside one numpy load-and-add pass over the same updates")
    print("(speed_ratio = numpy_pass_s / merge_s; peak_mib = growth of max RSS during merges)")
    print(format_table(headers, rows))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_options(parser)
    parser.add_argument("--updates", type=int, nargs="+", help="update counts N")
    parser.add_argument(
        "--params", type=int, default=1_000_000, help="float32 parameters per update"
    )
    parser.add_argument(
        "--max-robust-updates", type=int, default=10, help="largest N for median and trimmed-mean"
    )
    parser.add_argument(
        "--system-malloc",
        action="store_true",
        help="keep glibc's default malloc thresholds in the cases",
    )
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", choices=sorted(STRATEGIES), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_bench_logging(args.log_level)
    if args.case:
        result = run_case(args.updates[0], args.params, args.strategy, args.repeats)
        print(json.dumps(asdict(result)), flush=True)
        return 0
    results = []
    for updates, strategy in plan_cases(args):
        print(f"  {strategy} N={updates} P={args.params}", file=sys.stderr, flush=True)
        repeats = repeats_for(updates)
        results.append(
            run_case_subprocess(updates, args.params, strategy, repeats, args.system_malloc)
        )
    print_report(results)
    document: dict[str, Any] = {
        "benchmark": "aggregate",
        "target": "fedavg speed_ratio >= 0.5; fedavg peak_mib flat in N",
        "reference": "per update: the same loader (a copy of a pooled update), then np.add",
        "fedavg_malloc": "system defaults" if args.system_malloc else REUSE_FREED_MEMORY,
        "results": [asdict(r) for r in results],
    }
    emit(document, args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
