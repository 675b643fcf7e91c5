"""Deployment files: docker-compose.yml, the Dockerfile and the systemd units in deploy/.

Every ``plantfed`` command they run must parse with the real argument parser and
spell each option in full. Every service that talks to Redis must get the broker
URL, and plant services must name their site the same way everywhere. Stop
timeouts must leave a running training task time to finish. Each check returns
a list of problems, so the tests also feed it broken copies and expect problems.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fnmatch
import io
import re
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from coordinator.cli import build_parser
from coordinator.config import CampaignConfig, load_campaign_config
from coordinator.tuning import PRESETS
from plantfed.settings import TIMEOUT_MARGIN_S, Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

#: Where deploy/README.md installs each file that the units and compose refer to.
INSTALLED = {
    "/etc/plantfed/plantfed.env": DEPLOY / "plantfed.env",
    "/etc/plantfed/plantfed.toml": DEPLOY / "plantfed.toml",
    "/etc/plantfed/campaign.toml": DEPLOY / "campaign.toml",
}
ENV_FILE = "/etc/plantfed/plantfed.env"
#: Site id that replaces ``%i`` when a template unit is checked.
EXAMPLE_INSTANCE = "plant-l"
SERVICE_FILES = sorted(DEPLOY.glob("*.service"))

#: Seconds a plant task may still run after its round deadline, at worst.
MAX_HARD_LIMIT_MARGIN_S = max(profile.hard_limit_margin_s for profile in PRESETS.values())

Unit = dict[str, list[tuple[str, str]]]


# ---------------------------------------------------------------- plantfed commands


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {name: action for action in parser._actions for name in action.option_strings}


def _misspelled_options(args: Sequence[str]) -> list[str]:
    """List options that are not spelled in full where they appear.

    argparse accepts a unique prefix (``--max-r``), which a later option could
    make ambiguous, so deployment files must use each option's full name.
    """
    problems: list[str] = []
    parser = build_parser()
    tokens = iter(args)
    for token in tokens:
        if token.startswith("-"):
            name = token.split("=", 1)[0]
            action = _options(parser).get(name)
            if action is None:
                problems.append(f"option {name} is not an option of {parser.prog!r}")
            elif action.nargs != 0 and "=" not in token:
                next(tokens, None)
        elif token in _subcommands(parser):
            parser = _subcommands(parser)[token]
    return problems


def plantfed_command_problems(args: Sequence[str]) -> list[str]:
    """Return why ``plantfed ARGS`` would not run, or an empty list when it parses."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(list(args))
    except SystemExit:
        message = errors.getvalue().strip().splitlines()
        return [f"plantfed {shlex.join(args)}: {message[-1] if message else 'rejected'}"]
    return _misspelled_options(args)


def option_value(args: Sequence[str], name: str) -> str | None:
    """Return the value of option ``name`` in ``args``, written ``NAME VALUE`` or ``NAME=VALUE``."""
    for index, token in enumerate(args):
        if token == name and index + 1 < len(args):
            return args[index + 1]
        if token.startswith(name + "="):
            return token.split("=", 1)[1]
    return None


WRONG_COMMANDS = [
    pytest.param(["worker", "--data", "/data/plant-l.csv"], id="worker-without-site"),
    pytest.param(["campaign", "run", "--max-rounds", "3"], id="campaign-without-file"),
    pytest.param(["campaign", "run", "c.toml", "--max-round", "3"], id="abbreviated-option"),
    pytest.param(["worker", "--site", "plant-l", "--queue", "x"], id="unknown-option"),
    pytest.param(["campaign", "run", "c.toml", "--wait-lock", "soon"], id="invalid-duration"),
    pytest.param(["sites", "drain"], id="drain-without-site"),
    pytest.param(["hq-worker", "--site", "plant-l"], id="option-of-other-command"),
    pytest.param(["train", "--site", "plant-l"], id="unknown-command"),
]


@pytest.mark.parametrize("args", WRONG_COMMANDS)
def test_command_check_rejects_wrong_command(args: list[str]) -> None:
    assert plantfed_command_problems(args) != []


def test_command_check_accepts_full_command() -> None:
    args = ["campaign", "run", "c.toml", "--max-rounds", "3", "--wait-lock=30s"]
    assert plantfed_command_problems(args) == []


# ---------------------------------------------------------------- celery flower


def _celery_global_options() -> set[str]:
    from celery.bin.celery import celery

    return {name for param in celery.params for name in param.opts}


def _flower_options() -> set[str]:
    import flower.options  # type: ignore[import-untyped]  # noqa: F401  (defines its options)
    from tornado.options import options

    return {"--" + name.replace("_", "-") for name in options}


def flower_command_problems(argv: Sequence[str], broker_url: str) -> list[str]:
    """Return why ``celery ... flower ...`` would not start Flower on ``broker_url``."""
    if PurePosixPath(argv[0]).name != "celery" or "flower" not in argv:
        return [f"{shlex.join(argv)}: not a `celery ... flower` command"]
    split = list(argv).index("flower")
    global_args, flower_args = argv[1:split], argv[split + 1 :]
    problems = [
        f"celery has no global option {token.split('=', 1)[0]}"
        for token in global_args
        if token.startswith("-") and token.split("=", 1)[0] not in _celery_global_options()
    ]
    problems += [
        f"flower has no option {token.split('=', 1)[0]}"
        for token in flower_args
        if token.startswith("-") and token.split("=", 1)[0] not in _flower_options()
    ]
    broker = option_value(global_args, "--broker")
    if broker != broker_url:
        problems.append(f"celery --broker is {broker!r}, expected {broker_url!r}")
    return problems


def test_flower_check_rejects_missing_broker() -> None:
    argv = ["celery", "flower", "--port=5555"]
    assert flower_command_problems(argv, "redis://redis:6379/0") != []


def test_flower_check_rejects_unknown_option() -> None:
    argv = ["celery", "--broker=redis://redis:6379/0", "flower", "--listen=5555"]
    assert flower_command_problems(argv, "redis://redis:6379/0") != []


# ---------------------------------------------------------------- durations


_DURATION_UNITS_S = {
    "": 1.0,
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "d": 86400.0,
}


def duration_s(text: str) -> float:
    """Parse a systemd time span (``35min``, ``1h 30min``) or a compose duration (``35m``)."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip().lower())
    if not parts or re.sub(r"[\d.\sa-z]", "", text.lower()):
        raise ValueError(f"invalid duration {text!r}")
    return sum(float(number) * _DURATION_UNITS_S[unit] for number, unit in parts)


def test_duration_units() -> None:
    assert duration_s("35min") == 2100.0
    assert duration_s("35m") == 2100.0
    assert duration_s("1h 30min") == 5400.0
    assert duration_s("90") == 90.0


def warm_stop_s(settings: Settings) -> float:
    """Return the shortest stop timeout that lets a plant finish its longest possible task."""
    return settings.max_round_s + MAX_HARD_LIMIT_MARGIN_S + TIMEOUT_MARGIN_S


# ---------------------------------------------------------------- shared files


def read_env_file(path: Path) -> dict[str, str]:
    """Read a systemd environment file of ``KEY=VALUE`` lines."""
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip("\"'")
    return env


def deploy_env() -> dict[str, str]:
    """The units' environment, with the settings file read from this repository."""
    env = read_env_file(DEPLOY / "plantfed.env")
    env["PLANTFED_CONFIG"] = str(INSTALLED[env["PLANTFED_CONFIG"]])
    return env


def campaign() -> CampaignConfig:
    return load_campaign_config(DEPLOY / "campaign.toml")


def test_env_file_names_broker_and_settings() -> None:
    env = read_env_file(DEPLOY / "plantfed.env")
    assert urlsplit(env["PLANTFED_BROKER_URL"]).scheme in ("redis", "rediss")
    assert env["PLANTFED_CONFIG"] in INSTALLED


def test_settings_file_is_valid() -> None:
    settings = load_settings(env=deploy_env())
    assert settings.broker_url == read_env_file(DEPLOY / "plantfed.env")["PLANTFED_BROKER_URL"]


def test_campaign_fits_settings() -> None:
    config = campaign()
    settings = load_settings(env=deploy_env())
    assert config.checkpoint_dir.is_absolute()
    assert config.round.timing.max_deadline_s <= settings.max_round_s


def test_readme_installs_every_file() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for path in [*SERVICE_FILES, DEPLOY / "plantfed-coordinator.timer", *INSTALLED.values()]:
        assert path.name in readme
    for installed in INSTALLED:
        assert installed in readme


# ---------------------------------------------------------------- docker compose


def load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _redis_services(services: Mapping[str, Any]) -> set[str]:
    return {name for name, s in services.items() if str(s.get("image", "")).startswith("redis:")}


def _volume_targets(service: Mapping[str, Any]) -> dict[str, str]:
    """Map each mount point of ``service`` to its source."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        mounts[target] = source
    return mounts


def compose_plant_problems(name: str, service: Mapping[str, Any], settings: Settings) -> list[str]:
    """Check that a plant service names its site, hostname and data mount alike."""
    command = service["command"]
    problems: list[str] = []
    if option_value(command, "--site") != name:
        problems.append(f"{name}: serves --site {option_value(command, '--site')}, not {name}")
    if service.get("hostname") != name:
        problems.append(f"{name}: hostname {service.get('hostname')!r}, expected {name!r}")
    data = PurePosixPath(option_value(command, "--data") or "/")
    mounts = {
        target: source
        for target, source in _volume_targets(service).items()
        if data.is_relative_to(target)
    }
    if [PurePosixPath(source).name for source in mounts.values()] != [name]:
        problems.append(f"{name}: --data {data} is not on a mount of ./data/{name}, {mounts}")
    grace_s = duration_s(str(service.get("stop_grace_period", "10s")))
    if grace_s < warm_stop_s(settings):
        problems.append(
            f"{name}: stop_grace_period {grace_s:g} s is below {warm_stop_s(settings):g} s"
        )
    return problems


def compose_service_problems(
    name: str, service: Mapping[str, Any], redis_services: set[str]
) -> list[str]:
    """Check the broker URL and the command of one non-Redis service."""
    broker_url = service.get("environment", {}).get("PLANTFED_BROKER_URL")
    if broker_url is None:
        return [f"{name}: PLANTFED_BROKER_URL is not set"]
    if urlsplit(broker_url).hostname not in redis_services:
        return [f"{name}: broker {broker_url} is not a Redis service of this file"]
    settings = load_settings(env=dict(service["environment"]))
    command = [str(token) for token in service.get("command", [])]
    if not command:
        return [f"{name}: no command"]
    if command[0] == "celery":
        return [f"{name}: {p}" for p in flower_command_problems(command, broker_url)]
    if command[0] != "plantfed":
        return [f"{name}: runs {command[0]}, not plantfed or celery"]
    problems = [f"{name}: {p}" for p in plantfed_command_problems(command[1:])]
    if command[1] == "worker":
        problems += compose_plant_problems(name, service, settings)
    return problems


def compose_problems(document: Mapping[str, Any]) -> list[str]:
    """Return every problem of a docker-compose document, or an empty list when it is sound."""
    services = document["services"]
    redis_services = _redis_services(services)
    problems = [] if redis_services else ["no Redis service"]
    for name, service in services.items():
        if name not in redis_services:
            problems += compose_service_problems(name, service, redis_services)
    return problems


def compose_plants(document: Mapping[str, Any]) -> list[str]:
    return [
        name
        for name, service in document["services"].items()
        if service.get("command", [None, None])[:2] == ["plantfed", "worker"]
    ]


def test_compose_file_is_sound() -> None:
    assert compose_problems(load_compose()) == []


def test_compose_runs_every_role() -> None:
    document = load_compose()
    commands = [service.get("command", []) for service in document["services"].values()]
    assert ["plantfed", "hq-worker"] in [command[:2] for command in commands]
    assert ["plantfed", "campaign", "run"] in [command[:3] for command in commands]
    assert ["celery", "flower"] in [[command[0], command[-2]] for command in commands]
    assert compose_plants(document) == ["plant-l", "plant-m", "plant-h"]


def test_compose_images_are_one_build() -> None:
    services = load_compose()["services"]
    for name, service in services.items():
        if name not in _redis_services(services):
            assert service["build"] == "."
            assert service["image"] == "plantfed:local"
    assert services["redis"]["image"] == "redis:7"


def test_compose_flower_is_published_on_5555() -> None:
    flower = load_compose()["services"]["flower"]
    assert flower["command"][-2:] == ["flower", "--port=5555"]
    assert [str(port).rsplit(":", 2)[-2:] for port in flower["ports"]] == [["5555", "5555"]]


def test_compose_coordinator_runs_on_request() -> None:
    coordinator = load_compose()["services"]["coordinator"]
    assert coordinator["restart"] == "no"
    assert coordinator["profiles"] == ["coordinator"]
    assert option_value(coordinator["command"], "--max-rounds") is not None


def test_compose_coordinator_uses_deploy_campaign() -> None:
    coordinator = load_compose()["services"]["coordinator"]
    mounts = _volume_targets(coordinator)
    campaign_file = coordinator["command"][3]
    assert REPO_ROOT / mounts[campaign_file] == DEPLOY / "campaign.toml"
    assert str(campaign().checkpoint_dir) in mounts


def test_compose_plants_are_campaign_sites() -> None:
    assert sorted(compose_plants(load_compose())) == sorted(campaign().sites)


def _drop_broker(services: dict[str, Any]) -> None:
    del services["plant-m"]["environment"]["PLANTFED_BROKER_URL"]


def _foreign_broker(services: dict[str, Any]) -> None:
    services["hq-worker"]["environment"]["PLANTFED_BROKER_URL"] = "redis://cache:6379/0"


def _wrong_site(services: dict[str, Any]) -> None:
    services["plant-h"]["command"][3] = "plant-x"


def _wrong_data_mount(services: dict[str, Any]) -> None:
    services["plant-l"]["volumes"] = ["./data/plant-m:/data:ro"]


def _abbreviated_option(services: dict[str, Any]) -> None:
    services["coordinator"]["command"][4] = "--max-round"


def _flower_without_broker(services: dict[str, Any]) -> None:
    services["flower"]["command"] = ["celery", "flower", "--port=5555"]


def _short_grace(services: dict[str, Any]) -> None:
    services["plant-m"]["stop_grace_period"] = "10s"


@pytest.mark.parametrize(
    "breakage",
    [
        _drop_broker,
        _foreign_broker,
        _wrong_site,
        _wrong_data_mount,
        _abbreviated_option,
        _flower_without_broker,
        _short_grace,
    ],
)
def test_compose_check_finds_breakage(breakage: Any) -> None:
    document = copy.deepcopy(load_compose())
    breakage(document["services"])
    assert compose_problems(document) != []


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """Return (instruction, arguments) pairs, with continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    pairs: list[tuple[str, str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def copied_sources(instructions: Sequence[tuple[str, str]]) -> list[str]:
    """Return the build-context paths that COPY instructions take, without flags."""
    sources: list[str] = []
    for instruction, arguments in instructions:
        tokens = shlex.split(arguments)
        if instruction == "COPY" and not any(t.startswith("--from") for t in tokens):
            sources += [t for t in tokens[:-1] if not t.startswith("--")]
    return sources


def dockerignore_problems(sources: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """Return the COPY sources that a .dockerignore pattern excludes from the build context."""
    return [
        f"{source} is excluded by .dockerignore pattern {pattern!r}"
        for source in sources
        for pattern in patterns
        if fnmatch.fnmatch(source.rstrip("/"), pattern.rstrip("/"))
    ]


def dockerignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_installs_package_on_python_slim() -> None:
    instructions = dockerfile_instructions((REPO_ROOT / "Dockerfile").read_text("utf-8"))
    images = [
        arguments.split()[0] for instruction, arguments in instructions if instruction == "FROM"
    ]
    assert set(images) == {"python:3.11-slim"}
    assert any("pip install ." in arguments for instruction, arguments in instructions)
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users[-1:] == ["plantfed"]


def test_dockerfile_copies_every_package() -> None:
    instructions = dockerfile_instructions((REPO_ROOT / "Dockerfile").read_text("utf-8"))
    sources = copied_sources(instructions)
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text("utf-8"))
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    for package in packages:
        assert package in sources
    for source in sources:
        assert "*" in source or (REPO_ROOT / source).exists(), source
    assert dockerignore_problems(sources, dockerignore_patterns()) == []


def test_dockerignore_check_finds_excluded_source() -> None:
    assert dockerignore_problems(["coordinator"], ["tests", "coordinator"]) != []


def test_image_provides_compose_commands() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text("utf-8"))
    assert "plantfed" in pyproject["project"]["scripts"]
    dependencies = " ".join(pyproject["project"]["dependencies"])
    assert "celery" in dependencies
    assert "flower" in dependencies


# ---------------------------------------------------------------- systemd units


def parse_unit(text: str) -> Unit:
    """Parse a systemd unit into sections of (key, value) pairs, in which keys may repeat."""
    unit: Unit = {}
    section: list[tuple[str, str]] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], [])
        else:
            key, _, value = line.partition("=")
            section.append((key.strip(), value.strip()))
    return unit


def unit_values(unit: Unit, section: str, key: str) -> list[str]:
    return [value for name, value in unit.get(section, []) if name == key]


def unit_value(unit: Unit, section: str, key: str) -> str | None:
    values = unit_values(unit, section, key)
    return values[-1] if values else None


def exec_argv(command: str, env: Mapping[str, str], instance: str) -> list[str]:
    """Split an ExecStart= line the way systemd does, with %i and ${VAR} expanded."""
    command = command.lstrip("-@+!:")
    command = command.replace("%i", instance).replace("%I", instance)
    command = re.sub(r"\$\{(\w+)\}", lambda match: env.get(match.group(1), ""), command)
    return shlex.split(command)


def _writable_paths(unit: Unit) -> list[PurePosixPath]:
    paths = [
        PurePosixPath(path.lstrip("-"))
        for value in unit_values(unit, "Service", "ReadWritePaths")
        for path in value.split()
    ]
    for value in unit_values(unit, "Service", "StateDirectory"):
        paths += [PurePosixPath("/var/lib") / name for name in value.split()]
    return paths


def _is_writable(unit: Unit, path: PurePosixPath) -> bool:
    return any(path.is_relative_to(root) for root in _writable_paths(unit))


REQUIRED_SERVICE_SETTINGS = {
    "EnvironmentFile": ENV_FILE,
    "User": "plantfed",
    "WorkingDirectory": "/var/lib/plantfed",
    "KillMode": "mixed",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "PrivateTmp": "yes",
}


def unit_settings_problems(unit: Unit) -> list[str]:
    """Check the settings every plantfed service shares, and those of long-running ones."""
    problems = [
        f"[Service] {key}={unit_value(unit, 'Service', key)}, expected {expected}"
        for key, expected in REQUIRED_SERVICE_SETTINGS.items()
        if unit_value(unit, "Service", key) != expected
    ]
    if unit_value(unit, "Service", "Type") == "oneshot":
        return problems
    expected = {("Service", "Type"): "exec", ("Service", "Restart"): "on-failure"}
    expected |= {("Service", "KillSignal"): "SIGTERM", ("Install", "WantedBy"): "multi-user.target"}
    problems += [
        f"[{section}] {key}={unit_value(unit, section, key)}, expected {value}"
        for (section, key), value in expected.items()
        if unit_value(unit, section, key) != value
    ]
    return problems


def plant_unit_problems(unit: Unit, argv: Sequence[str], settings: Settings) -> list[str]:
    """Check that a plant template serves the instance's site and stops warm."""
    problems: list[str] = []
    if option_value(argv, "--site") != EXAMPLE_INSTANCE:
        problems.append(f"plant worker serves --site {option_value(argv, '--site')}, not %i")
    if EXAMPLE_INSTANCE not in (option_value(argv, "--data") or ""):
        problems.append("plant worker --data path does not depend on %i")
    stop_s = duration_s(unit_value(unit, "Service", "TimeoutStopSec") or "90s")
    if stop_s < warm_stop_s(settings):
        problems.append(f"TimeoutStopSec {stop_s:g} s is below {warm_stop_s(settings):g} s")
    return problems


def coordinator_unit_problems(unit: Unit, argv: Sequence[str], settings: Settings) -> list[str]:
    """Check that a coordinator run may write what it writes and is given time to finish."""
    campaign_path = INSTALLED.get(argv[argv.index("run") + 1])
    if campaign_path is None:
        return [f"campaign file {argv[argv.index('run') + 1]} is not installed by the README"]
    written = [PurePosixPath(str(load_campaign_config(campaign_path).checkpoint_dir))]
    summary = option_value(argv, "--summary")
    if summary is not None:
        written.append(PurePosixPath(summary).parent)
    problems = [f"{path} is not writable" for path in written if not _is_writable(unit, path)]
    start_s = duration_s(unit_value(unit, "Service", "TimeoutStartSec") or "90s")
    if start_s < settings.max_round_s:
        problems.append(f"TimeoutStartSec {start_s:g} s is shorter than one round")
    return problems


def service_problems(name: str, unit: Unit, env: Mapping[str, str]) -> list[str]:
    """Return every problem of one plantfed service unit."""
    problems = unit_settings_problems(unit)
    command = unit_value(unit, "Service", "ExecStart")
    if command is None:
        return [*problems, "no ExecStart"]
    argv = exec_argv(command, env, EXAMPLE_INSTANCE)
    if not PurePosixPath(argv[0]).is_absolute():
        problems.append(f"ExecStart runs {argv[0]}, not an absolute path")
    if PurePosixPath(argv[0]).name == "celery":
        return problems + flower_command_problems(argv, env.get("PLANTFED_BROKER_URL", ""))
    problems += plantfed_command_problems(argv[1:])
    settings = load_settings(env=dict(env))
    if name.startswith("plantfed-plant@"):
        problems += plant_unit_problems(unit, argv, settings)
    if argv[1:3] == ["campaign", "run"]:
        problems += coordinator_unit_problems(unit, argv, settings)
    return problems


def load_unit(path: Path) -> Unit:
    return parse_unit(path.read_text(encoding="utf-8"))


def test_deploy_has_every_unit() -> None:
    names = {path.name for path in SERVICE_FILES}
    assert names == {
        "plantfed-plant@.service",
        "plantfed-hq-worker.service",
        "plantfed-coordinator.service",
        "plantfed-flower.service",
    }


@pytest.mark.parametrize("path", SERVICE_FILES, ids=lambda path: path.name)
def test_service_unit_is_sound(path: Path) -> None:
    env = deploy_env()
    unit = load_unit(path)
    assert unit_value(unit, "Service", "EnvironmentFile") in INSTALLED
    assert service_problems(path.name, unit, env) == []


def test_units_get_broker_url() -> None:
    env = read_env_file(INSTALLED[ENV_FILE])
    assert env["PLANTFED_BROKER_URL"]
    for path in SERVICE_FILES:
        assert unit_values(load_unit(path), "Service", "EnvironmentFile") == [ENV_FILE]


def test_flower_unit_uses_broker_variable() -> None:
    command = unit_value(load_unit(DEPLOY / "plantfed-flower.service"), "Service", "ExecStart")
    assert "--broker=${PLANTFED_BROKER_URL}" in (command or "")


def test_coordinator_unit_runs_bounded_campaign() -> None:
    unit = load_unit(DEPLOY / "plantfed-coordinator.service")
    argv = exec_argv(unit_value(unit, "Service", "ExecStart") or "", deploy_env(), "")
    assert unit_value(unit, "Service", "Type") == "oneshot"
    assert argv[1:4] == ["campaign", "run", "/etc/plantfed/campaign.toml"]
    assert int(option_value(argv, "--max-rounds") or 0) > 0


def test_coordinator_timer_is_hourly() -> None:
    timer = load_unit(DEPLOY / "plantfed-coordinator.timer")
    assert unit_value(timer, "Timer", "OnCalendar") == "hourly"
    assert unit_value(timer, "Timer", "Unit") == "plantfed-coordinator.service"
    assert (DEPLOY / "plantfed-coordinator.service").is_file()
    assert unit_value(timer, "Install", "WantedBy") == "timers.target"


def _set(unit: Unit, key: str, value: str) -> None:
    unit["Service"] = [(k, v) for k, v in unit["Service"] if k != key] + [(key, value)]


UNIT_BREAKAGES = [
    pytest.param("plantfed-plant@.service", "EnvironmentFile", "/etc/default/other", id="env"),
    pytest.param("plantfed-plant@.service", "TimeoutStopSec", "90s", id="cold-stop"),
    pytest.param("plantfed-plant@.service", "Restart", "no", id="no-restart"),
    pytest.param(
        "plantfed-plant@.service",
        "ExecStart",
        "/opt/plantfed/venv/bin/plantfed worker --site plant-a --data /d/%i.csv",
        id="fixed-site",
    ),
    pytest.param("plantfed-hq-worker.service", "KillMode", "control-group", id="kill-mode"),
    pytest.param("plantfed-hq-worker.service", "ExecStart", "plantfed hq-worker", id="relative"),
    pytest.param(
        "plantfed-coordinator.service",
        "ReadWritePaths",
        "/var/lib/plantfed/reports",
        id="checkpoints-read-only",
    ),
    pytest.param("plantfed-coordinator.service", "TimeoutStartSec", "90s", id="start-timeout"),
    pytest.param(
        "plantfed-flower.service",
        "ExecStart",
        "/opt/plantfed/venv/bin/celery flower --port=5555",
        id="flower-no-broker",
    ),
]


@pytest.mark.parametrize(("name", "key", "value"), UNIT_BREAKAGES)
def test_unit_check_finds_breakage(name: str, key: str, value: str) -> None:
    unit = load_unit(DEPLOY / name)
    if key == "ReadWritePaths":
        _set(unit, "StateDirectory", "plantfed/reports")
    _set(unit, key, value)
    assert service_problems(name, unit, deploy_env()) != []
