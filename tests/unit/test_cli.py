"""Unit tests of the ``plantfed`` argument parser and the errors its entry point reports."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import pytest

from coordinator import cli
from coordinator.commands import sites_listen_s, wait_min_sites
from plantfed.settings import Settings


@pytest.fixture
def quiet_main(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep ``cli.main`` from changing this process's logging and signal handlers."""
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)
    monkeypatch.setattr(cli, "die_with_parent", lambda: None)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ("sites", "--broker", "redis://a/0", "drain", "plant-h"),
        ("sites", "drain", "plant-h", "--broker", "redis://a/0"),
        ("sites", "wait", "--broker", "redis://a/0"),
        ("sites", "undrain", "plant-h", "--broker", "redis://a/0"),
        ("sites", "forget", "plant-h", "--broker", "redis://a/0"),
        ("campaign", "--broker", "redis://a/0", "run", "c.toml"),
        ("campaign", "run", "c.toml", "--broker", "redis://a/0"),
        ("campaign", "status", "c.toml", "--broker", "redis://a/0"),
        ("campaign", "report", "c.toml", "--out", "r.html", "--broker", "redis://a/0"),
    ],
)
def test_broker_option_either_side_of_subcommand(argv: tuple[str, ...]) -> None:
    args = parse(*argv)

    assert args.broker == "redis://a/0"


@pytest.mark.parametrize(
    "argv",
    [
        ("campaign", "run", "c.toml"),
        ("campaign", "check", "c.toml"),
        ("campaign", "status", "c.toml"),
        ("campaign", "report", "c.toml", "--out", "r.html"),
    ],
)
def test_every_campaign_command_takes_plugins(argv: tuple[str, ...]) -> None:
    args = parse(*argv, "--plugin", "extra.trainers", "--plugin", "more")

    assert args.plugins == ["extra.trainers", "more"]


def test_nested_options_keep_parent_values() -> None:
    args = parse("sites", "--log-level", "DEBUG", "--config", "s.toml", "wait")

    assert args.log_level == "DEBUG"
    assert args.config == Path("s.toml")
    assert args.broker is None


def test_nested_options_default_when_absent() -> None:
    args = parse("sites", "drain", "plant-h")

    assert args.broker is None
    assert args.config is None
    assert args.log_level == "INFO"


@pytest.mark.parametrize("command", ["worker --site plant-a", "hq-worker"])
@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_concurrency_rejects_non_positive(
    command: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*command.split(), "--concurrency", value)

    assert exit_info.value.code == 2
    assert "--concurrency" in capsys.readouterr().err


def test_concurrency_accepts_positive() -> None:
    assert parse("hq-worker", "--concurrency", "3").concurrency == 3


@pytest.mark.parametrize("value", ["0", "0s", "0m"])
def test_drain_rejects_zero_duration(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("sites", "drain", "plant-h", "--for", value)

    assert "must be longer than 0" in capsys.readouterr().err


def test_drain_accepts_positive_duration() -> None:
    assert parse("sites", "drain", "plant-h", "--for", "2h").for_s == 7200.0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("sites", "wait"), 2),
        (("sites", "wait", "--site", "plant-l"), 1),
        (("sites", "wait", "--site", "a", "--site", "b", "--site", "c"), 3),
        (("sites", "wait", "--site", "a", "--site", "a"), 1),
        (("sites", "wait", "--site", "a", "--min", "4"), 4),
    ],
)
def test_wait_min_defaults_to_listed_sites(argv: tuple[str, ...], expected: int) -> None:
    assert wait_min_sites(parse(*argv)) == expected


def test_wait_help_states_min_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("sites", "wait", "--help")

    help_text = " ".join(capsys.readouterr().out.split())
    assert "default: the number of --site given, else 2" in help_text


@pytest.mark.parametrize(
    ("interval_s", "expected_s"),
    [(0.5, 2.5), (1.0, 2.5), (1.5, 5.0), (2.0, 5.0), (5.0, 12.5)],
)
def test_sites_listen_window_spans_two_heartbeats(interval_s: float, expected_s: float) -> None:
    window_s = sites_listen_s(Settings(heartbeat_interval_s=interval_s))

    assert window_s == expected_s
    assert window_s >= 2 * max(1.0, interval_s)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@host:6380/0", "redis://host:6380/0"),
        ("redis://user:secret@host/1", "redis://user@host/1"),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_redact_url_drops_password(url: str, shown: str) -> None:
    assert cli.redact_url(url) == shown


@pytest.mark.usefixtures("quiet_main")
def test_unreachable_broker_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["sites", "drain", "plant-h", "--broker", "redis://:pw@127.0.0.1:1/0"])

    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("plantfed: error: cannot reach Redis at redis://127.0.0.1:1/0: ")
    assert "check PLANTFED_BROKER_URL" in err
    assert "pw" not in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.usefixtures("quiet_main")
def test_file_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(args: argparse.Namespace) -> int:
        raise FileNotFoundError(2, "No such file or directory", "/missing/dir/x.html")

    monkeypatch.setattr(cli, "_run", fail)

    status = cli.main(["campaign", "report", "c.toml", "--out", "/missing/dir/x.html"])

    err = capsys.readouterr().err
    assert status == 2
    assert err == "plantfed: error: No such file or directory: /missing/dir/x.html\n"


@pytest.mark.usefixtures("quiet_main")
def test_demo_data_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["demo", "--data", str(tmp_path)])

    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"plantfed: error: --data {tmp_path} is a directory")
    assert "--workload cmapss" in err
    assert len(err.strip().splitlines()) == 1
