"""Poisoned updates: final F1 of AI4I campaigns where one plant attacks, per merge strategy.

One federation serves every run: a private Redis, the HQ worker and three plant
worker processes, one per AI4I product type, all offering trainer
``ai4i-attack`` from ``bench.plugins``. Only the worker of ``ATTACKER_SITE`` has
``PLANTFED_BENCH_ATTACKER=1``, and each campaign's trainer parameter ``attack``
chooses what it does (see ``bench.plugins``):

- ``nan``: every weight of its update is NaN;
- ``scaled``: its delta from the global model is multiplied by 100;
- ``flip``: it trains on inverted failure labels.

Each attack runs under four merge strategies. ``fedavg-unguarded`` is FedAvg with
``max_norm_z=None``, ``min_cosine=None`` and no clipping, so only update validation
(finite values, shapes, sample counts) runs. ``fedavg-guarded`` is the default:
validation, the delta-norm outlier test and the direction screen. ``median`` and
``trimmed-mean`` keep the same default guards in front of their merge. With three
plants, a trimmed mean that drops one value at each end is the median, so those two
rows agree. ``honest_failures`` counts honest plants left out of a round (rejected,
failed or late), summed over rounds. The reference is the
clean campaign (attack ``none``) under the guarded default, and clean runs of the
other strategies are shown too.
Campaigns use the same seed, so the runs differ only by attack and strategy.

Run from the repository root::

    python -m bench.poison              # 10 rounds per campaign, 16 campaigns
    python -m bench.poison --quick      # 5 rounds, guarded and unguarded FedAvg only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.plugins import ATTACK_PARAM, ATTACKER_ENV, Attack, AttackTrainer
from bench.support import (
    PLUGIN_MODULE,
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
from coordinator.aggregation import StrategyConfig, StrategyName
from coordinator.context import Hq
from coordinator.localfed import PlantSpec

#: The plant that attacks: M, the middle-sized plant (about 30% of the rows).
ATTACKER_SITE = "plant-m"

#: Trim fraction of the trimmed mean: with 3 updates it drops the lowest and highest value.
TRIM_FRACTION = 0.34

#: Strategy configurations by the name the tables use.
STRATEGIES: dict[str, StrategyConfig] = {
    "fedavg-unguarded": StrategyConfig(max_norm_z=None, clip_norm=None, min_cosine=None),
    "fedavg-guarded": StrategyConfig(),
    "median": StrategyConfig(name=StrategyName.MEDIAN),
    "trimmed-mean": StrategyConfig(name=StrategyName.TRIMMED_MEAN, trim_fraction=TRIM_FRACTION),
}

#: The product's default, whose F1 under attack is held to the target.
GUARDED = "fedavg-guarded"


@dataclass(frozen=True)
class PoisonRun:
    """Final F1 of one campaign and how often the attacker's update was merged."""

    attack: str
    strategy: str
    f1: float
    rounds_completed: int
    attacker_merged_rounds: int
    honest_failures: int
    elapsed_s: float


def attack_plants(csv_path: Path, data_dir: Path) -> list[PlantSpec]:
    """Return the three AI4I plants, all offering ``ai4i-attack``, one of them the attacker."""
    plants = ai4i_plants(
        csv_path, data_dir, trainers=(AttackTrainer.name,), plugins=(PLUGIN_MODULE,)
    )
    return [
        PlantSpec(p.site_ids, p.data_path, p.trainers, p.plugins, env=((ATTACKER_ENV, "1"),))
        if p.site_ids == (ATTACKER_SITE,)
        else p
        for p in plants
    ]


def run_one(
    hq: Hq, sites: Sequence[str], attack: Attack, strategy: str, rounds: int, workdir: Path
) -> PoisonRun:
    """Run one campaign with ``attack`` under ``strategy`` and return its figures."""
    campaign_id = f"bench-poison-{attack.value}-{strategy}-{int(time.time() * 1000)}"
    request = CampaignRequest(
        campaign_id=campaign_id,
        sites=tuple(sites),
        trainer=AttackTrainer.name,
        rounds=rounds,
        checkpoint_dir=workdir / "checkpoints" / campaign_id,
        strategy=STRATEGIES[strategy],
        trainer_params={ATTACK_PARAM: attack.value},
    )
    summary = run_campaign(hq, request)
    merged = sum(1 for r in summary.rounds if ATTACKER_SITE in r["completed_sites"])
    honest_failures = sum(
        1 for r in summary.rounds for site in r["failed_sites"] if site != ATTACKER_SITE
    )
    return PoisonRun(
        attack=attack.value,
        strategy=strategy,
        f1=float(summary.final_metrics.get("f1", float("nan"))),
        rounds_completed=summary.rounds_completed,
        attacker_merged_rounds=merged,
        honest_failures=honest_failures,
        elapsed_s=summary.elapsed_s,
    )


def print_report(runs: Sequence[PoisonRun], clean_f1: float, rounds: int) -> None:
    """Print one row per run with its F1 as a share of the clean guarded run."""
    print(
        f"Poisoned updates on AI4I 2020: 3 plants, {ATTACKER_SITE} attacks, {rounds} rounds; "
        f"clean F1 (guarded default) = {clean_f1:.4f}"
    )
    headers = ["attack", "strategy", "f1", "of_clean", "rounds_ok", "attacker_merged",
               "honest_failures", "time_s"]  # fmt: skip
    rows = [
        [r.attack, r.strategy, r.f1, r.f1 / clean_f1 if clean_f1 > 0 else float("nan"),
         f"{r.rounds_completed}/{rounds}", r.attacker_merged_rounds, r.honest_failures,
         r.elapsed_s]
        for r in runs
    ]  # fmt: skip
    print(format_table(headers, rows))
    guarded = [r for r in runs if r.strategy == GUARDED and r.attack != Attack.NONE.value]
    worst = min((r.f1 for r in guarded), default=float("nan"))
    print(f"guarded default, worst attack: {worst / clean_f1:.3f} of clean F1 (target >= 0.95)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_options(parser)
    parser.add_argument(
        "--rounds", type=int, help="rounds per campaign (default 6, 3 with --quick)"
    )
    args = parser.parse_args(argv)
    configure_bench_logging(args.log_level)
    csv_path = require_ai4i_csv()
    if csv_path is None:
        return 0
    rounds = args.rounds or (5 if args.quick else 10)

    strategies = ["fedavg-unguarded", GUARDED] if args.quick else list(STRATEGIES)
    workdir = Path(tempfile.mkdtemp(prefix="plantfed-bench-poison-"))
    federation = bench_federation(attack_plants(csv_path, workdir / "data"), workdir / "logs")
    runs: list[PoisonRun] = []
    try:
        federation.start()
        assert federation.hq is not None
        for attack in Attack:
            for strategy in strategies:
                run = run_one(federation.hq, federation.site_ids, attack, strategy, rounds, workdir)
                print(f"  {run.attack} / {run.strategy}: f1 {run.f1:.4f}", file=sys.stderr)
                runs.append(run)
    finally:
        federation.stop()

    clean_f1 = next(r.f1 for r in runs if r.attack == Attack.NONE.value and r.strategy == GUARDED)
    print_report(runs, clean_f1, rounds)
    document: dict[str, Any] = {
        "benchmark": "poison",
        "target": "guarded default keeps >= 0.95 of the clean F1 under every attack",
        "attacker": ATTACKER_SITE,
        "rounds": rounds,
        "clean_f1": clean_f1,
        "runs": [r.__dict__ for r in runs if r.attack != Attack.NONE.value],
        "clean_runs": [r.__dict__ for r in runs if r.attack == Attack.NONE.value],
    }
    emit(document, args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
