"""Campaign configuration: the TOML campaign file, its dataclasses and its validation.

``load_campaign_config`` reads and checks a whole file before anything runs. It
collects every problem and raises one ``ConfigError`` that lists them all, each
naming the dotted key, the value found and the fix.

A campaign file looks like::

    id = "ai4i-2024-06"
    rounds = 20
    sites = ["plant-a", "plant-b", "plant-c"]   # omit for every ready site

    [trainer]
    name = "ai4i-mlp"
    [trainer.params]
    learning_rate = 0.01

    [round]
    preset = "wan"        # plant-lan, wan or cellular-edge
    deadline_s = 600      # maximum round deadline; learned deadlines stay below it

    [strategy]
    name = "fedavg"
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from coordinator.aggregation import (
    DEFAULT_MAX_NORM_Z,
    DEFAULT_MIN_COSINE,
    StrategyConfig,
    StrategyName,
    parameter_default,
)
from coordinator.config_section import Section
from coordinator.tuning import PRESETS, NetworkPreset, TimingProfile
from plantfed.errors import ConfigError

#: Site and campaign ids: letters, digits, dot, dash and underscore.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

TrainerParamValue = int | float | str | bool
_T = TypeVar("_T")


@dataclass(frozen=True)
class RoundConfig:
    """Timing and site selection of each round.

    ``timing`` is the preset's profile with the explicit ``[round]`` keys applied.
    ``max_sites_per_round`` and ``max_concurrency`` are ``None`` when unlimited.
    Sites not selected for ``priority_after_rounds`` rounds get priority.
    """

    preset: NetworkPreset = NetworkPreset.WAN
    timing: TimingProfile = PRESETS[NetworkPreset.WAN]
    adaptive: bool = True
    sample_fraction: float = 1.0
    max_sites_per_round: int | None = None
    max_concurrency: int | None = None
    priority_after_rounds: int = 3


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop after ``patience`` rounds without a gain of at least ``min_delta``.

    ``metric`` ``None`` means the trainer's primary metric; ``patience`` ``None``
    disables early stopping.
    """

    metric: str | None = None
    patience: int | None = None
    min_delta: float = 0.0

    @property
    def enabled(self) -> bool:
        """Whether early stopping is on."""
        return self.patience is not None


@dataclass(frozen=True)
class FailureConfig:
    """Retry, tolerance and quarantine settings for failed rounds and datasites.

    The campaign ends when the share of failed rounds exceeds ``max_failure_rate``.
    A datasite whose updates were rejected ``quarantine_after_rejections`` times
    is left out for ``quarantine_rounds`` rounds.
    """

    max_failure_rate: float = 0.5
    round_retries: int = 2
    retry_backoff_s: float = 5.0
    retry_backoff_max_s: float = 60.0
    quarantine_after_rejections: int = 3
    quarantine_rounds: int = 5


@dataclass(frozen=True)
class CampaignConfig:
    """A whole campaign; ``sites`` empty means every ready datasite."""

    id: str
    trainer: str
    rounds: int
    trainer_params: Mapping[str, TrainerParamValue] = field(default_factory=dict)
    seed: int = 0
    sites: tuple[str, ...] = ()
    min_sites: int = 2
    round: RoundConfig = RoundConfig()
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    failures: FailureConfig = FailureConfig()
    checkpoint_dir: Path = Path("checkpoints")
    keep_checkpoints: int = 3


#: Strategy parameters each strategy accepts, besides the guards every strategy takes.
STRATEGY_PARAMS: dict[StrategyName, tuple[str, ...]] = {
    StrategyName.FEDAVG: (),
    StrategyName.FEDPROX: ("proximal_mu",),
    StrategyName.FEDADAM: ("server_learning_rate", "beta1", "beta2", "tau"),
    StrategyName.FEDYOGI: ("server_learning_rate", "beta1", "beta2", "tau"),
    StrategyName.FEDADAGRAD: ("server_learning_rate", "tau"),
    StrategyName.MEDIAN: (),
    StrategyName.TRIMMED_MEAN: ("trim_fraction",),
}

#: Guard parameters every strategy accepts.
GUARD_PARAMS = ("clip_norm", "max_norm_z", "min_cosine")

_TOP_KEYS = (
    "id",
    "rounds",
    "seed",
    "sites",
    "min_sites",
    "checkpoint_dir",
    "keep_checkpoints",
    "trainer",
    "round",
    "strategy",
    "early_stopping",
    "failures",
)
_SAMPLING_KEYS = (
    "preset",
    "adaptive",
    "sample_fraction",
    "max_sites_per_round",
    "max_concurrency",
    "priority_after_rounds",
)
#: ``[round]`` keys that differ from the ``TimingProfile`` field they set.
_ROUND_KEY_TO_FIELD = {"deadline_s": "max_deadline_s", "grace_s": "default_grace_s"}
_FIELD_TO_ROUND_KEY = {value: key for key, value in _ROUND_KEY_TO_FIELD.items()}
#: Timing settings that are durations and must be above zero.
_POSITIVE_DURATIONS = frozenset(
    {
        "deadline_s",
        "default_deadline_s",
        "min_deadline_s",
        "heartbeat_interval_s",
        "lost_after_s",
        "health_check_interval_s",
        "soft_limit_margin_s",
        "hard_limit_margin_s",
    }
)


def load_campaign_config(path: Path | str) -> CampaignConfig:
    """Read and validate a campaign file.

    A relative ``checkpoint_dir`` is resolved against the file's directory.

    Raises
    ------
    ConfigError
        When the file is missing, is not TOML, or has any invalid setting; the
        message lists every problem found.
    """
    file_path = Path(path)
    try:
        document = tomllib.loads(file_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"campaign file not found: {file_path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"campaign file {file_path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"campaign file {file_path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"campaign file {file_path} cannot be read: {exc}") from exc
    return campaign_config_from_dict(document, base_dir=file_path.parent, source=str(file_path))


def campaign_config_from_dict(
    data: Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    source: str = "campaign config",
) -> CampaignConfig:
    """Validate a parsed campaign document and build its ``CampaignConfig``.

    Parameters
    ----------
    data
        The document, shaped like the TOML file.
    base_dir
        Directory against which a relative ``checkpoint_dir`` is resolved; when
        ``None`` it stays relative.
    source
        Name of the document in error messages.

    Raises
    ------
    ConfigError
        Listing every invalid setting, one per line.
    """
    problems: list[str] = []
    top = Section(data, "", problems)
    top.reject_unknown(_TOP_KEYS)

    campaign_id = top.text("id", required=True, pattern=ID_PATTERN, example='"ai4i-2024-06"')
    rounds = top.integer("rounds", None, minimum=1, required=True)
    seed = top.integer("seed", 0, minimum=0)
    min_sites = top.integer("min_sites", 2, minimum=1)
    keep = top.integer("keep_checkpoints", 3, minimum=1)
    sites = _read_sites(top)
    checkpoint_dir = Path(top.text("checkpoint_dir", "checkpoints") or "checkpoints")
    if base_dir is not None and not checkpoint_dir.is_absolute():
        checkpoint_dir = base_dir / checkpoint_dir

    trainer, trainer_params = _read_trainer(top.table("trainer", required=True))
    round_config = _read_round(top.table("round"))
    strategy = _read_strategy(top.table("strategy"))
    early = _read_early_stopping(top.table("early_stopping"))
    failures = _read_failures(top.table("failures"))
    _check_site_counts(problems, sites, min_sites, round_config)

    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ConfigError(f"{source} is invalid ({count}):\n  - " + "\n  - ".join(problems))
    # Each is None only after a recorded problem, which raised above.
    assert campaign_id is not None
    assert rounds is not None
    assert trainer is not None
    return CampaignConfig(
        id=campaign_id,
        trainer=trainer,
        rounds=rounds,
        trainer_params=trainer_params,
        seed=seed if seed is not None else 0,
        sites=sites,
        min_sites=min_sites if min_sites is not None else 2,
        round=round_config,
        strategy=strategy,
        early_stopping=early,
        failures=failures,
        checkpoint_dir=checkpoint_dir,
        keep_checkpoints=keep if keep is not None else 3,
    )


def _read_sites(top: Section) -> tuple[str, ...]:
    raw = top.get("sites", [])
    if not isinstance(raw, list):
        top.problem("sites", raw, 'must be a list of site ids, e.g. sites = ["plant-a", "plant-b"]')
        return ()
    sites: list[str] = []
    for index, site in enumerate(raw):
        if not isinstance(site, str) or not ID_PATTERN.match(site):
            top.problem(
                f"sites[{index}]",
                site,
                "a site id is letters, digits, '.', '-' or '_', e.g. \"plant-a\"",
            )
        elif site in sites:
            top.problem(f"sites[{index}]", site, "is listed twice; remove the duplicate")
        else:
            sites.append(site)
    return tuple(sites)


def _read_trainer(section: Section) -> tuple[str | None, dict[str, TrainerParamValue]]:
    section.reject_unknown(("name", "params"))
    name = section.text("name", required=True, example='"ai4i-mlp"')
    params: dict[str, TrainerParamValue] = {}
    for key, value in section.table("params").items():
        if isinstance(value, bool | int | float | str):
            params[key] = value
        else:
            section.problem(
                f"params.{key}", value, "trainer params must be scalars (number, string, bool)"
            )
    return name, params


def _read_round(section: Section) -> RoundConfig:
    timing_keys = [_FIELD_TO_ROUND_KEY.get(item.name, item.name) for item in fields(TimingProfile)]
    section.reject_unknown((*_SAMPLING_KEYS, *timing_keys))
    preset = section.choice("preset", NetworkPreset, NetworkPreset.WAN)
    profile = PRESETS[preset]

    values: dict[str, float | int] = {}
    explicit: set[str] = set()
    for key in timing_keys:
        default = getattr(profile, _ROUND_KEY_TO_FIELD.get(key, key))
        problems_before = section.problem_count()
        values[key] = _read_timing_value(section, key, default)
        if key in section and section.problem_count() == problems_before:
            explicit.add(key)
    _order_timing(section, values, explicit)

    overrides: dict[str, Any] = {_ROUND_KEY_TO_FIELD.get(k, k): v for k, v in values.items()}
    timing = replace(profile, **overrides)
    return RoundConfig(
        preset=preset,
        timing=timing,
        adaptive=section.boolean("adaptive", True),
        sample_fraction=_or(section.number("sample_fraction", 1.0, low=0.0, high=1.0), 1.0),
        max_sites_per_round=section.integer("max_sites_per_round", None, minimum=1),
        max_concurrency=section.integer("max_concurrency", None, minimum=1),
        priority_after_rounds=_or(section.integer("priority_after_rounds", 3, minimum=1), 3),
    )


def _read_timing_value(section: Section, key: str, default: float | int) -> float | int:
    if key == "min_history_samples":
        return _or(section.integer(key, int(default), minimum=1), int(default))
    if key == "deadline_quantile":
        return _or(section.number(key, float(default), low=0.0, high=1.0), float(default))
    if key in ("safety_factor", "grace_factor"):
        low, inclusive = (1.0, True) if key == "safety_factor" else (0.0, False)
        return _or(
            section.number(key, float(default), low=low, low_inclusive=inclusive), float(default)
        )
    value = section.seconds(key, float(default), allow_zero=key not in _POSITIVE_DURATIONS)
    return _or(value, float(default))


def _order_timing(section: Section, values: dict[str, float | int], explicit: set[str]) -> None:
    # Order matters: the default deadline is fitted under the max before the min is.
    pairs = [
        ("default_deadline_s", "deadline_s"),
        ("min_deadline_s", "deadline_s"),
        ("min_deadline_s", "default_deadline_s"),
        ("min_grace_s", "max_grace_s"),
        ("min_grace_s", "grace_s"),
        ("grace_s", "max_grace_s"),
    ]
    for low_key, high_key in pairs:
        if values[low_key] <= values[high_key]:
            continue
        if low_key in explicit and high_key in explicit:
            section.problem(
                low_key,
                values[low_key],
                f"must not exceed round.{high_key} = {values[high_key]:g}; lower one of them",
            )
        elif low_key in explicit:
            values[high_key] = values[low_key]
        else:
            values[low_key] = values[high_key]
    strict_pairs = [
        ("soft_limit_margin_s", "hard_limit_margin_s", "the soft time limit must fire first"),
        ("heartbeat_interval_s", "lost_after_s", "a site must miss heartbeats to count as lost"),
    ]
    for low_key, high_key, cause in strict_pairs:
        if values[low_key] >= values[high_key]:
            section.problem(
                low_key,
                values[low_key],
                f"must be below round.{high_key} = {values[high_key]:g} because {cause}; "
                f"lower round.{low_key} or raise round.{high_key}",
            )


def _read_strategy(section: Section) -> StrategyConfig:
    section.reject_unknown(("name", "params"))
    name = section.choice("name", StrategyName, StrategyName.FEDAVG)
    params_section = section.table("params")
    accepted = (*GUARD_PARAMS, *STRATEGY_PARAMS[name])
    params_section.reject_unknown(accepted, context=f"for strategy {name.value!r}")
    values: dict[str, Any] = {}
    for key in STRATEGY_PARAMS[name]:
        default = parameter_default(name, key)
        if key == "trim_fraction":
            values[key] = params_section.number(
                key, default, low=0.0, high=0.5, high_inclusive=False
            )
        elif key in ("beta1", "beta2"):
            values[key] = params_section.number(
                key, default, low=0.0, high=1.0, high_inclusive=False
            )
        else:
            values[key] = params_section.number(key, default, low=0.0)
    # TOML has no null: ``false`` turns a screen off.
    if params_section.get("max_norm_z", None) is False:
        values["max_norm_z"] = None
    elif "max_norm_z" in params_section:
        values["max_norm_z"] = params_section.number("max_norm_z", DEFAULT_MAX_NORM_Z, low=0.0)
    if params_section.get("min_cosine", None) is False:
        values["min_cosine"] = None
    elif "min_cosine" in params_section:
        values["min_cosine"] = params_section.number(
            "min_cosine",
            DEFAULT_MIN_COSINE,
            low=-1.0,
            low_inclusive=True,
            high=1.0,
            high_inclusive=False,
        )
    if params_section.get("clip_norm", None) == "auto":
        values["clip_norm"] = "auto"
    elif "clip_norm" in params_section:
        values["clip_norm"] = params_section.number("clip_norm", 1.0, low=0.0)
    try:
        return StrategyConfig(name=name, **values)
    except ConfigError as exc:
        section.problem("params", values, str(exc))
        return StrategyConfig(name=name)


def _read_early_stopping(section: Section) -> EarlyStoppingConfig:
    section.reject_unknown(("metric", "patience", "min_delta"))
    return EarlyStoppingConfig(
        metric=section.text("metric", None),
        patience=section.integer("patience", None, minimum=1),
        min_delta=_or(section.number("min_delta", 0.0, low=0.0, low_inclusive=True), 0.0),
    )


def _read_failures(section: Section) -> FailureConfig:
    section.reject_unknown([item.name for item in fields(FailureConfig)])
    defaults = FailureConfig()
    rate = section.number(
        "max_failure_rate", defaults.max_failure_rate, low=0.0, low_inclusive=True, high=1.0
    )
    backoff_s = section.seconds("retry_backoff_s", defaults.retry_backoff_s, allow_zero=True)
    backoff_max_s = section.seconds(
        "retry_backoff_max_s", defaults.retry_backoff_max_s, allow_zero=True
    )
    if backoff_s is not None and backoff_max_s is not None and backoff_max_s < backoff_s:
        section.problem(
            "retry_backoff_max_s",
            backoff_max_s,
            f"must be at least failures.retry_backoff_s = {backoff_s:g}; raise it",
        )
    return FailureConfig(
        max_failure_rate=defaults.max_failure_rate if rate is None else rate,
        round_retries=_or(section.integer("round_retries", 2, minimum=0), 2),
        retry_backoff_s=_or(backoff_s, defaults.retry_backoff_s),
        retry_backoff_max_s=_or(backoff_max_s, defaults.retry_backoff_max_s),
        quarantine_after_rejections=_or(
            section.integer("quarantine_after_rejections", 3, minimum=1), 3
        ),
        quarantine_rounds=_or(section.integer("quarantine_rounds", 5, minimum=1), 5),
    )


def _check_site_counts(
    problems: list[str], sites: tuple[str, ...], min_sites: int | None, round_config: RoundConfig
) -> None:
    if min_sites is None:
        return
    if sites and min_sites > len(sites):
        problems.append(
            f"min_sites = {min_sites} is above the {len(sites)} sites listed in sites; "
            f"lower min_sites to at most {len(sites)} or list more sites"
        )
    cap = round_config.max_sites_per_round
    if cap is not None and cap < min_sites:
        problems.append(
            f"round.max_sites_per_round = {cap} is below min_sites = {min_sites}, so no round "
            f"could start; raise round.max_sites_per_round to at least {min_sites}"
        )


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value
