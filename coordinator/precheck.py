"""Checks of a campaign file against its trainer and the deployment, before any round runs.

``load_campaign_config`` checks the file on its own; these checks need the
registered trainer (its parameters and metric names) and the deployment's
settings (the longest round the broker's timeouts allow).
"""

from __future__ import annotations

from coordinator.config import CampaignConfig
from plantfed.errors import ConfigError
from plantfed.settings import Settings
from worker.trainers.base import Trainer
from worker.trainers.registry import get_trainer


def check_campaign(config: CampaignConfig, settings: Settings) -> Trainer:
    """Return the campaign's trainer, or raise ``ConfigError`` listing every problem found."""
    problems: list[str] = []
    trainer = get_trainer(config.trainer)
    check_params = getattr(trainer, "check_params", None)
    if check_params is not None:
        try:
            check_params(dict(config.trainer_params))
        except ConfigError as exc:
            problems.append(f"trainer.params: {exc}")
    metric = config.early_stopping.metric
    metric_names = getattr(trainer, "metric_names", None)
    if metric is not None and metric_names is not None and metric not in metric_names:
        problems.append(
            f"early_stopping.metric: {metric!r} is not a metric of trainer {config.trainer!r}; "
            f"use one of {', '.join(metric_names)}"
        )
    deadline_s = config.round.timing.max_deadline_s
    if deadline_s > settings.max_round_s:
        problems.append(
            f"round.deadline_s: {deadline_s:g} s is above the deployment's max_round_s "
            f"({settings.max_round_s:g} s); lower round.deadline_s, or raise max_round_s "
            "together with visibility_timeout_s and result_expires_s in the settings"
        )
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ConfigError(
            f"campaign {config.id} cannot run ({count}):\n  - " + "\n  - ".join(problems)
        )
    return trainer
