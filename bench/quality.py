"""Model quality: federated F1 on AI4I 2020 beside central and local-only training.

The federated figure comes from a real campaign: a private Redis, the HQ worker
and three plant worker processes, one per product type (L, M, H), run by
``CampaignRunner`` with FedAvg and the default guards. Its F1 is the campaign's
final federated evaluation, pooled over the held-out split of every plant.

The references are trained in this process with the same trainer
(``Ai4iTrainer``), the same parameters and the same number of passes over the
data: a campaign of R rounds of E local epochs is matched by R x E epochs. The
central model trains on every plant's training split pooled; each local-only
model trains on one plant's split alone. Every model is evaluated on the pooled
held-out splits of all three plants, which is the set the federated F1 uses.

Needs ``../shared/data/ai4i2020.csv`` beside the repository; without it the
benchmark prints why and exits 0.

Run from the repository root::

    python -m bench.quality             # 10 rounds, seeds 0, 1, 2
    python -m bench.quality --quick     # 5 rounds, seed 0
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np

from bench.support import (
    CampaignRequest,
    add_common_options,
    ai4i_plants,
    bench_federation,
    configure_bench_logging,
    emit,
    format_table,
    require_ai4i_csv,
    run_campaign,
)
from plantfed.modelio import Weights
from worker.trainers import mlp
from worker.trainers.ai4i import DEFAULTS, Ai4iTrainer
from worker.trainers.base import SiteData

#: Trainer parameters of the campaign and the references, besides epochs and seed.
TRAINER_PARAMS: dict[str, float | int] = {}


def load_plant_data(paths: Mapping[str, Path]) -> dict[str, SiteData]:
    """Load and split each plant's file exactly as its worker does."""
    trainer = Ai4iTrainer()
    return {site: trainer.load_data(path) for site, path in sorted(paths.items())}


def pooled(data: Sequence[SiteData]) -> SiteData:
    """Return one ``SiteData`` whose training split is every plant's training split."""
    trains = [d.train for d in data]
    assert all(isinstance(t, mlp.Samples) for t in trains)
    features = np.concatenate([t.features for t in trains if isinstance(t, mlp.Samples)])
    targets = np.concatenate([t.targets for t in trains if isinstance(t, mlp.Samples)])
    samples = mlp.Samples(features, targets)
    return SiteData(Path("pooled"), samples, None, len(samples), 0)


def pooled_f1(weights: Weights, holdouts: Sequence[SiteData]) -> float:
    """Return the F1 of ``weights`` on the held-out splits of every plant, pooled."""
    trainer = Ai4iTrainer()
    sums: dict[str, float] = {}
    for data in holdouts:
        for key, value in trainer.evaluate(weights, data).items():
            sums[key] = sums.get(key, 0.0) + value
    return trainer.summarize(sums)["f1"]


def train_reference(data: SiteData, epochs: int, seed: int) -> Weights:
    """Train the AI4I model on ``data`` for ``epochs`` from the campaign's initial weights."""
    trainer = Ai4iTrainer()
    params = {**TRAINER_PARAMS, "epochs": epochs, "seed": seed}
    deadline = time.monotonic() + 3600.0
    return trainer.train(trainer.initial_weights(seed), data, params, deadline).weights


def reference_f1(
    data: Mapping[str, SiteData], epochs: int, seed: int
) -> tuple[float, dict[str, float]]:
    """Return the central F1 and each plant's local-only F1, all on the pooled holdouts."""
    holdouts = list(data.values())
    central = pooled_f1(train_reference(pooled(holdouts), epochs, seed), holdouts)
    local = {
        site: pooled_f1(train_reference(d, epochs, seed), holdouts) for site, d in data.items()
    }
    return central, local


def federated_f1(
    csv_path: Path, workdir: Path, rounds: int, seeds: Sequence[int]
) -> tuple[dict[int, float], float]:
    """Run one campaign per seed on real worker processes; return F1 by seed and total seconds."""
    plants = ai4i_plants(csv_path, workdir / "data")
    federation = bench_federation(plants, workdir / "logs")
    f1_by_seed: dict[int, float] = {}
    elapsed_s = 0.0
    try:
        federation.start()
        assert federation.hq is not None
        for seed in seeds:
            request = CampaignRequest(
                campaign_id=f"bench-quality-{seed}-{int(time.time())}",
                sites=tuple(federation.site_ids),
                trainer="ai4i-mlp",
                rounds=rounds,
                checkpoint_dir=workdir / "checkpoints" / str(seed),
                seed=seed,
                trainer_params=dict(TRAINER_PARAMS),
            )
            summary = run_campaign(federation.hq, request)
            if summary.rounds_completed < rounds:
                print(
                    f"warning: seed {seed}: {summary.rounds_completed} of {rounds} rounds "
                    f"completed (stopped: {summary.stopped_reason})",
                    file=sys.stderr,
                )
            f1_by_seed[seed] = float(summary.final_metrics.get("f1", float("nan")))
            elapsed_s += summary.elapsed_s
    finally:
        federation.stop()
    return f1_by_seed, elapsed_s


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_options(parser)
    parser.add_argument("--rounds", type=int, help="campaign rounds (default 10, 5 with --quick)")
    parser.add_argument(
        "--seeds", type=int, help="campaigns with seeds 0..K-1, F1 averaged (default 3, 1 quick)"
    )
    args = parser.parse_args(argv)
    configure_bench_logging(args.log_level)
    csv_path = require_ai4i_csv()
    if csv_path is None:
        return 0
    rounds = args.rounds or (5 if args.quick else 10)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    epochs = rounds * DEFAULTS.epochs
    workdir = Path(tempfile.mkdtemp(prefix="plantfed-bench-quality-"))

    federated_by_seed, elapsed_s = federated_f1(csv_path, workdir, rounds, seeds)
    paths = {p.site_ids[0]: p.data_path for p in ai4i_plants(csv_path, workdir / "data")}
    data = load_plant_data({site: path for site, path in paths.items() if path is not None})
    central_by_seed: dict[int, float] = {}
    local_by_seed: dict[int, dict[str, float]] = {}
    for seed in seeds:
        central_by_seed[seed], local_by_seed[seed] = reference_f1(data, epochs, seed)
    federated = mean(federated_by_seed.values())
    central = mean(central_by_seed.values())
    local = {site: mean(by_site[site] for by_site in local_by_seed.values()) for site in data}
    ratio = federated / central if central > 0 else float("nan")

    print(
        f"Model quality on AI4I 2020: {rounds} FedAvg rounds of {DEFAULTS.epochs} local epochs "
        f"on 3 plants, against {epochs} epochs in-process; F1 on the pooled holdouts, "
        f"mean over seeds {seeds}"
    )
    rows: list[list[object]] = [
        ["federated (3 plants)", federated, *federated_by_seed.values()],
        ["central (pooled)", central, *central_by_seed.values()],
    ]
    rows += [
        [f"local only: {site}", f1, *(by_site[site] for by_site in local_by_seed.values())]
        for site, f1 in sorted(local.items())
    ]
    print(format_table(["model", "f1_mean", *(f"seed {s}" for s in seeds)], rows))
    print(f"federated / central = {ratio:.3f} (target >= 0.9); campaigns took {elapsed_s:.1f} s")
    document: dict[str, Any] = {
        "benchmark": "quality",
        "target": "ratio >= 0.9",
        "rounds": rounds,
        "epochs_per_round": DEFAULTS.epochs,
        "reference_epochs": epochs,
        "seeds": seeds,
        "federated_f1": federated,
        "central_f1": central,
        "local_only_f1": local,
        "ratio": ratio,
        "per_seed": {
            str(seed): {
                "federated_f1": federated_by_seed[seed],
                "central_f1": central_by_seed[seed],
                "local_only_f1": local_by_seed[seed],
            }
            for seed in seeds
        },
        "campaign_s": elapsed_s,
    }
    emit(document, args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
