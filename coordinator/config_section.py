"""Reading one table of a TOML document, collecting every problem instead of the first.

Each reader checks one key's type and range. An invalid value is recorded as a
message naming the dotted key, the value found and the fix, and the reader returns
the default, so reading goes on and every problem is reported together.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, TypeVar

_E = TypeVar("_E", bound=StrEnum)


class Section:
    """One table of the document; its readers record problems instead of raising."""

    def __init__(self, data: Mapping[str, Any], prefix: str, problems: list[str]) -> None:
        self._data = data
        self._prefix = prefix
        self._problems = problems

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def items(self) -> Iterable[tuple[str, Any]]:
        return self._data.items()

    def get(self, key: str, default: Any) -> Any:
        return self._data.get(key, default)

    def problem_count(self) -> int:
        return len(self._problems)

    def path(self, key: str) -> str:
        return f"{self._prefix}.{key}" if self._prefix else key

    def problem(self, key: str, value: Any, fix: str) -> None:
        self._problems.append(f"{self.path(key)} = {_show(value)}: {fix}")

    def missing(self, key: str, example: str) -> None:
        self._problems.append(f"{self.path(key)} is missing: add {key} = {example}")

    def reject_unknown(self, known: Iterable[str], context: str = "") -> None:
        known_keys = sorted(known)
        for key in self._data:
            if key in known_keys:
                continue
            close = difflib.get_close_matches(key, known_keys, n=1)
            hint = f"did you mean {self.path(close[0])}?" if close else "remove it"
            where = f" {context}" if context else ""
            self._problems.append(
                f"{self.path(key)} is not a known key{where}: {hint} "
                f"(known: {', '.join(known_keys) or 'none'})"
            )

    def table(self, key: str, required: bool = False) -> Section:
        raw = self._data.get(key)
        if raw is None:
            if required:
                self._problems.append(f"[{self.path(key)}] table is missing: add it")
            raw = {}
        elif not isinstance(raw, dict):
            self.problem(key, raw, f"must be a table, written [{self.path(key)}]")
            raw = {}
        return Section(raw, self.path(key), self._problems)

    def text(
        self,
        key: str,
        default: str | None = None,
        *,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        example: str = '"..."',
    ) -> str | None:
        if key not in self._data:
            if required:
                self.missing(key, example)
            return default
        value = self._data[key]
        if not isinstance(value, str) or not value:
            self.problem(key, value, f"must be a non-empty string, e.g. {key} = {example}")
            return default
        if pattern is not None and not pattern.match(value):
            self.problem(key, value, "use letters, digits, '.', '-' or '_' (at most 64)")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._data.get(key, default)
        if not isinstance(value, bool):
            self.problem(key, value, f"must be true or false, e.g. {key} = true")
            return default
        return value

    def integer(
        self, key: str, default: int | None, *, minimum: int, required: bool = False
    ) -> int | None:
        if key not in self._data:
            if required:
                self.missing(key, str(max(minimum, 10)))
            return default
        value = self._data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, value, f"must be a whole number, e.g. {key} = {max(minimum, 3)}")
            return default
        if value < minimum:
            self.problem(key, value, f"must be at least {minimum}; set {key} = {minimum} or more")
            return default
        return value

    def number(
        self,
        key: str,
        default: float | None,
        *,
        low: float,
        low_inclusive: bool = False,
        high: float | None = None,
        high_inclusive: bool = True,
    ) -> float | None:
        if key not in self._data:
            return default
        value = self._data[key]
        example = f"e.g. {key} = {default:g}" if default is not None else f"e.g. {key} = 1.0"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(key, value, f"must be a number, {example}")
            return default
        above = value >= low if low_inclusive else value > low
        below = high is None or (value <= high if high_inclusive else value < high)
        if not (above and below):
            interval = _interval(low, low_inclusive, high, high_inclusive)
            self.problem(key, value, f"must be in {interval}; set a value in that range, {example}")
            return default
        return float(value)

    def seconds(self, key: str, default: float, *, allow_zero: bool) -> float | None:
        if key not in self._data:
            return default
        value = self._data[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(key, value, f"must be a number of seconds, e.g. {key} = {default:g}")
            return None
        if value < 0 or (value == 0 and not allow_zero):
            bound = "0 or more" if allow_zero else "above 0"
            self.problem(
                key, value, f"a duration must be {bound} seconds, e.g. {key} = {default:g}"
            )
            return None
        return float(value)

    def choice(self, key: str, enum: type[_E], default: _E) -> _E:
        value = self._data.get(key, default.value)
        names = [member.value for member in enum]
        if isinstance(value, str) and value in names:
            return enum(value)
        close = difflib.get_close_matches(str(value), names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        self.problem(key, value, f"{hint}use one of {', '.join(names)}")
        return default


def _interval(low: float, low_inclusive: bool, high: float | None, high_inclusive: bool) -> str:
    left = "[" if low_inclusive else "("
    if high is None:
        return f"{left}{low:g}, inf)"
    return f"{left}{low:g}, {high:g}{']' if high_inclusive else ')'}"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)
