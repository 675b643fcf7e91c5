"""``plantfed campaign run`` and ``plantfed campaign status``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import cast

from coordinator.campaign import CampaignRunner, RoundReport
from coordinator.checkpoint import CampaignState
from coordinator.config import CampaignConfig, load_campaign_config
from coordinator.context import Hq
from coordinator.health import HealthHook
from coordinator.manager import ParallelExecutionManager
from coordinator.persistence import load_progress
from coordinator.precheck import check_campaign
from coordinator.report import campaign_report_html
from coordinator.stats import build_report
from coordinator.summary import CampaignSummary, summarize
from plantfed.errors import ConfigError, NotEnoughSitesError
from plantfed.settings import Settings
from worker.trainers.registry import get_trainer


def import_plugins(modules: list[str]) -> None:
    """Import each module, which registers the extra trainers it defines."""
    for module in modules:
        importlib.import_module(module)


def campaign_run(settings: Settings, args: argparse.Namespace) -> int:
    """Run or resume a campaign; exit 0 when it ran, 1 when it ended by a failure limit."""
    import_plugins(args.plugins)
    hooks = [load_hook(spec) for spec in args.health_hooks]
    config = load_campaign_config(args.campaign_file)
    check_campaign(config, settings)
    hq = Hq.connect(settings, listen=True)
    try:
        _wait_for_sites(hq, config, args.ready_timeout)
        runner = CampaignRunner(hq, config, hooks=hooks, on_round=print_round)
        summary = runner.run(max_rounds=args.max_rounds, wait_lock_s=args.wait_lock or 0.0)
    finally:
        hq.close()
    print(describe_summary(summary))
    if args.summary:
        write_json(args.summary, summary.to_json())
    return 1 if summary.stopped_reason and summary.stopped_reason.startswith("failure") else 0


def load_hook(spec: str) -> HealthHook:
    """Import the health hook named ``module:function``."""
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise ConfigError(f"invalid health hook {spec!r}: expected MODULE:FUNCTION")
    try:
        hook = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"health hook {spec!r} cannot be loaded: {exc}") from exc
    if not callable(hook):
        raise ConfigError(f"health hook {spec!r} is not callable")
    return cast(HealthHook, hook)


def campaign_check(settings: Settings, args: argparse.Namespace) -> int:
    """Validate a campaign file against its trainer and these settings, without running it."""
    import_plugins(args.plugins)
    config = load_campaign_config(args.campaign_file)
    trainer = check_campaign(config, settings)
    sites = ", ".join(config.sites) if config.sites else "every ready site"
    print(
        f"campaign {config.id} is valid: {config.rounds} rounds of {trainer.name} on {sites} "
        f"(at least {config.min_sites}), strategy {config.strategy.name.value}, "
        f"preset {config.round.preset.value}, checkpoints in {config.checkpoint_dir}"
    )
    return 0


def _wait_for_sites(hq: Hq, config: CampaignConfig, timeout_s: float) -> None:
    manager = ParallelExecutionManager(hq, min_datasites=config.min_sites)
    readiness = manager.wait_for_datasites_ready(
        timeout_s=timeout_s, expected=config.sites or None, trainer=config.trainer
    )
    if not readiness.ready:
        raise NotEnoughSitesError(f"campaign {config.id}: {readiness.describe()}")


def campaign_status(settings: Settings, args: argparse.Namespace) -> int:
    """Print a campaign's progress, statistics and recommendations."""
    import_plugins(args.plugins)
    config = load_campaign_config(args.campaign_file)
    hq = Hq.connect(settings)
    try:
        progress = load_progress(hq, config)
        holder = cast(bytes | None, hq.client.get(hq.keys.campaign_lock(config.id)))
    finally:
        hq.close()
    if progress is None:
        print(f"campaign {config.id}: not started (no state in Redis or {config.checkpoint_dir})")
        return 0
    state = progress.state
    report = build_report(state.stats, state.reliability, config)
    # No process times the whole campaign, so the time shown is the sum of its rounds.
    rounds_s = sum(h.duration_s for h in state.history)
    summary = summarize(config, state, get_trainer(config.trainer), elapsed_s=rounds_s)
    if args.json:
        data = {
            "summary": summary.to_json(),
            "report": report.to_json(),
            "quarantine": dict(state.quarantine),
            "running_by": holder.decode() if holder else None,
            "source": progress.source,
        }
        print(json.dumps(data, indent=2, default=str))
        return 0
    running = f"running by {holder.decode()}" if holder else "no coordinator running"
    print(f"campaign {config.id}: round {state.next_round} of {config.rounds}, {running}")
    print(describe_summary(summary))
    print(report.describe())
    for line in describe_quarantine(state):
        print(line)
    return 0


def campaign_report(settings: Settings, args: argparse.Namespace) -> int:
    """Write the campaign's HTML report with plots."""
    import_plugins(args.plugins)
    config = load_campaign_config(args.campaign_file)
    hq = Hq.connect(settings)
    try:
        progress = load_progress(hq, config)
    finally:
        hq.close()
    if progress is None:
        print(f"campaign {config.id}: not started, nothing to report", file=sys.stderr)
        return 1
    metric = config.early_stopping.metric or get_trainer(config.trainer).primary_metric
    args.out.write_text(campaign_report_html(config, progress.state, metric), encoding="utf-8")
    print(f"report written to {args.out}")
    return 0


def describe_quarantine(state: CampaignState) -> list[str]:
    """Return one line per quarantined site: until when, and the last reason it was rejected."""
    lines = []
    for site, until in sorted(state.quarantine.items()):
        if until <= state.next_round:
            continue
        rel = state.reliability.get(site)
        reason = rel.last_failure_reason if rel else None
        lines.append(
            f"quarantined: {site} until round {until}, after repeated rejected updates"
            f" (last: {reason or 'unknown'})"
        )
    return lines


def print_round(report: RoundReport) -> None:
    """Print one line per finished round."""
    result = report.result
    metrics = " ".join(f"{k}={v:.4f}" for k, v in sorted(report.metrics.items())[:4])
    failed = (
        f" failed: {','.join(sorted(result.failed_datasites))}" if result.failed_datasites else ""
    )
    print(
        f"round {report.index}: {'ok' if result.success else 'FAILED'} "
        f"{len(result.completed_datasites)} sites in {result.execution_time_s:.2f} s "
        f"({result.status}){failed} {metrics}",
        flush=True,
    )


def describe_summary(summary: CampaignSummary) -> str:
    """Return the summary as a few plain-text lines."""
    best = (
        f"{summary.best_metric:.4f} at round {summary.best_round}" if summary.best_metric else "-"
    )
    final = ", ".join(f"{k} {v:.4f}" for k, v in sorted(summary.final_metrics.items()))
    lines = [
        f"campaign {summary.campaign_id}: {summary.rounds_run} of {summary.rounds_planned} rounds "
        f"({summary.rounds_completed} completed, {summary.rounds_failed} failed) "
        f"in {summary.elapsed_s:.1f} s",
        f"participations {summary.total_participations}, datasite failures "
        f"{summary.datasite_failures}, adaptive waits {summary.adaptive_waits}, "
        f"retries {summary.retries}",
        f"best {summary.primary_metric} {best}; final {final or '-'}",
    ]
    if summary.stopped_reason:
        lines.append(f"stopped: {summary.stopped_reason}")
    return "\n".join(lines)


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as indented JSON, atomically."""
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    temp.replace(path)
    print(f"summary written to {path}", file=sys.stderr)
