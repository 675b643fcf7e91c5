"""Deployment settings, loaded once at each entry point.

Sources, later ones winning: built-in defaults, the ``[plantfed]`` table of a TOML
file (``--config`` or ``PLANTFED_CONFIG``), then ``PLANTFED_*`` environment variables.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from plantfed.errors import ConfigError

#: Margin by which the broker's visibility timeout and result expiry must exceed
#: the longest round, so a slow but live task is never redelivered or forgotten.
TIMEOUT_MARGIN_S = 60.0


@dataclass(frozen=True)
class Settings:
    """Where the broker is and how long things live.

    Attributes
    ----------
    broker_url
        Redis URL of the Celery broker; ``None`` means "start an embedded Redis"
        for the commands that can (``plantfed demo``).
    result_backend
        Redis URL of the Celery result backend; defaults to ``broker_url``.
    key_prefix
        Namespace of every Redis key plantfed writes.
    hq_queue
        Queue served by the HQ worker, which runs the round-closing task.
    max_round_s
        Maximum round deadline any campaign may request.
    visibility_timeout_s
        Redis transport visibility timeout; must exceed ``max_round_s``.
    result_expires_s
        Celery result expiry; must exceed ``max_round_s``.
    heartbeat_interval_s
        Celery worker heartbeat interval on plant workers.
    liveness_interval_s, liveness_ttl_s
        How often a plant worker rewrites its liveness key, and the key's TTL.
    model_ttl_s, update_ttl_s
        Lifetime of global-model blobs and of plant update blobs.
    """

    broker_url: str | None = None
    result_backend: str | None = None
    key_prefix: str = "plantfed"
    hq_queue: str = "hq"
    max_round_s: float = 3600.0
    visibility_timeout_s: float = 7200.0
    result_expires_s: float = 86400.0
    heartbeat_interval_s: float = 1.0
    liveness_interval_s: float = 2.0
    liveness_ttl_s: float = 10.0
    model_ttl_s: float = 7 * 86400.0
    update_ttl_s: float = 86400.0

    @property
    def backend_url(self) -> str | None:
        """Result backend URL, falling back to the broker URL."""
        return self.result_backend or self.broker_url

    def with_broker(self, url: str) -> Settings:
        """Return a copy that uses ``url`` as broker and result backend."""
        return replace(self, broker_url=url, result_backend=self.result_backend or url)

    def to_env(self) -> dict[str, str]:
        """Return the ``PLANTFED_*`` variables that reproduce these settings in a child process."""
        env = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                env["PLANTFED_" + field.name.upper()] = str(value)
        return env

    def validate(self) -> None:
        """Raise ``ConfigError`` when timeouts could redeliver or forget a running round."""
        problems: list[str] = []
        longest_s = self.max_round_s + TIMEOUT_MARGIN_S
        if self.max_round_s <= 0:
            problems.append(f"max_round_s must be positive, found {self.max_round_s}")
        if self.visibility_timeout_s < longest_s:
            problems.append(
                f"visibility_timeout_s={self.visibility_timeout_s:g} is below max_round_s "
                f"({self.max_round_s:g}) plus {TIMEOUT_MARGIN_S:g} s: Redis would redeliver "
                f"a task that is still running; raise visibility_timeout_s to at least "
                f"{longest_s:g} or lower max_round_s"
            )
        if self.result_expires_s < longest_s:
            problems.append(
                f"result_expires_s={self.result_expires_s:g} is below max_round_s "
                f"({self.max_round_s:g}) plus {TIMEOUT_MARGIN_S:g} s: results could expire "
                f"mid-round; raise result_expires_s to at least {longest_s:g}"
            )
        if self.liveness_ttl_s <= self.liveness_interval_s:
            problems.append(
                f"liveness_ttl_s={self.liveness_ttl_s:g} must exceed liveness_interval_s="
                f"{self.liveness_interval_s:g}, or liveness keys expire between refreshes"
            )
        if problems:
            raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))


def load_settings(config_path: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Load settings from defaults, an optional TOML file and the environment."""
    environ = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    path = config_path or (
        Path(environ["PLANTFED_CONFIG"]) if "PLANTFED_CONFIG" in environ else None
    )
    if path is not None:
        values.update(_read_file(path))
    for field in fields(Settings):
        raw = environ.get("PLANTFED_" + field.name.upper())
        if raw is not None and raw != "":
            values[field.name] = raw
    settings = Settings(**{name: _coerce(name, value) for name, value in values.items()})
    settings.validate()
    return settings


def _read_file(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"settings file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"settings file {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"settings file {path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"settings file {path} cannot be read: {exc}") from exc
    table = document.get("plantfed", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [plantfed] must be a table")
    known = {field.name for field in fields(Settings)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown settings {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return table


def _coerce(name: str, value: Any) -> Any:
    default = getattr(Settings(), name)
    if isinstance(default, float) or name.endswith("_s"):
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"setting {name} must be a number of seconds, found {value!r}"
            ) from exc
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"setting {name} must be a string, found {value!r}")
    return value
