"""Tracking: the metrics and variables a job reports while it runs (SPEC §7).

The job appends JSON lines to ``$ANNA_RUN_METRICS`` and ``$ANNA_RUN_VARIABLES``. A line is one
entry, ``{"name": "accuracy", "value": 0.93, "label": {"fold": 1}}`` (``label`` optional: an object
of scalars; ``value`` any JSON), or an object of several ``name: value`` entries (``{"loss": 0.2,
"accuracy": 0.9}``). After the run each file is read as a stream, line by line, so memory stays
flat whatever its size: every line is stored (masked) and summed up for the record: per metric
``last``, ``min``, ``max`` (over its numbers) and ``count``, per variable its last value. A bad
line is a warning naming its line number, never a failed run. Bounded per file: lines, bytes,
the length of a line, distinct names (``Limits``); what is cut is said in the warnings.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .variables import Masker

SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")  # a tracked variable named so is stored as ***
HIDDEN = "***"
MAX_WARNINGS = 20  # bad lines named per file; past this, how many more


@dataclass(frozen=True)
class Limits:
    """The bounds of one tracking file."""

    lines: int = 100_000
    bytes: int = 64 << 20
    line_bytes: int = 1 << 20
    names: int = 1_000


def limits_from_env(environ: dict[str, str] | None = None) -> Limits:
    """The bounds, with ``ANNA_RUN_TRACKING_MAX_LINES``, ``..._MAX_BYTES``, ``..._MAX_LINE_BYTES``
    and ``..._MAX_NAMES`` taking precedence when set to a positive integer."""
    environ = os.environ if environ is None else environ
    default = Limits()

    def get(name: str, fallback: int) -> int:
        try:
            value = int(environ.get(f"ANNA_RUN_TRACKING_MAX_{name}", fallback))
        except ValueError:
            return fallback
        return value if value > 0 else fallback

    return Limits(
        lines=get("LINES", default.lines),
        bytes=get("BYTES", default.bytes),
        line_bytes=get("LINE_BYTES", default.line_bytes),
        names=get("NAMES", default.names),
    )


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def parse_line(text: str) -> list[tuple[str, Any]]:
    """The (name, value) entries of one line; ValueError saying why when the line is bad.
    ``NaN`` and ``Infinity`` are kept as text (they are no JSON numbers)."""
    try:
        obj = json.loads(text, parse_constant=str)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    label = obj.get("label")
    if label is not None and not (isinstance(label, dict) and all(_is_scalar(v) for v in label.values())):
        raise ValueError("label is not an object of scalars")
    if "name" in obj:
        name = obj["name"]
        if not isinstance(name, str) or not name:
            raise ValueError("name is not a non-empty string")
        if "value" not in obj:
            raise ValueError(f"{name!r} has no value")
        return [(name, obj["value"])]
    entries = [(name, value) for name, value in obj.items() if name != "label"]
    if not entries:
        raise ValueError("no name and value")
    if any(not name for name, _ in entries):
        raise ValueError("an empty name")
    return entries


def hide_secret_names(text: str) -> str:
    """A variables line with the value of every secret-named entry replaced by ``***`` (the line
    unchanged when it has none, or is no object)."""
    try:
        obj = json.loads(text, parse_constant=str)
    except ValueError:
        return text
    if not isinstance(obj, dict):
        return text
    if isinstance(obj.get("name"), str):
        if not is_secret_name(obj["name"]) or "value" not in obj:
            return text
        obj["value"] = HIDDEN
    elif any(is_secret_name(k) for k in obj if k != "label"):
        obj = {k: HIDDEN if k != "label" and is_secret_name(k) else v for k, v in obj.items()}
    else:
        return text
    return json.dumps(obj, ensure_ascii=False)


def stored_line(text: str, kind: str, masker: Masker) -> str:
    """A line as it is stored with the run: the run's secrets masked, and a variable named like a
    secret (KEY, TOKEN, SECRET, PASSWORD) stored as ``***``. The one place tracking masks."""
    if kind == "variables":
        text = hide_secret_names(text)
    return masker.mask(text)


@dataclass
class Summary:
    """What one tracking file says, summed up as it is read."""

    kind: str  # "metrics" or "variables"
    file: str  # its name, for the warnings
    limits: Limits
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # metrics: last, min, max, count
    last: dict[str, Any] = field(default_factory=dict)  # variables: last value
    warnings: list[str] = field(default_factory=list)
    bad: int = 0
    dropped_names: int = 0

    def bad_line(self, number: int, why: str) -> None:
        self.bad += 1
        if self.bad <= MAX_WARNINGS:
            self.warnings.append(f"{self.file} line {number}: {why}; ignored")

    def add(self, name: str, value: Any) -> None:
        known = self.stats if self.kind == "metrics" else self.last
        if name not in known and len(known) >= self.limits.names:
            self.dropped_names += 1
            return
        if self.kind == "variables":
            self.last[name] = HIDDEN if is_secret_name(name) else value
            return
        stat = self.stats.setdefault(name, {"last": None, "count": 0})
        stat["last"] = value
        stat["count"] += 1
        if _is_number(value):
            stat["min"] = value if "min" not in stat else min(stat["min"], value)
            stat["max"] = value if "max" not in stat else max(stat["max"], value)

    def finish(self) -> None:
        if self.bad > MAX_WARNINGS:
            self.warnings.append(f"{self.file}: {self.bad - MAX_WARNINGS} more bad line(s) not listed")
        if self.dropped_names:
            self.warnings.append(
                f"{self.file}: more than {self.limits.names:,} names; {self.dropped_names} value(s) of the others "
                "left out of the summary (the stored lines keep them)"
            )
        # The summary's keys in a fixed order: last, min, max, count.
        order = ("last", "min", "max", "count")
        self.stats = {n: {k: s[k] for k in order if k in s} for n, s in self.stats.items()}


def read_tracking(
    stream: IO[bytes],
    kind: str,
    file: str,
    limits: Limits,
    store: Callable[[str], None],
    masker: Masker,
) -> Summary:
    """Read one tracking file from ``stream`` (binary, read line by line), hand each line to
    ``store`` as it is kept (masked, newline-terminated) and return its summary."""
    summary = Summary(kind, file, limits)
    size = 0
    number = 0
    while True:
        line = stream.readline(limits.line_bytes + 1)
        if not line:
            break
        number += 1
        size += len(line)
        if number > limits.lines or size > limits.bytes:
            bound = f"{limits.lines:,} lines" if number > limits.lines else f"{limits.bytes:,} bytes"
            summary.warnings.append(f"{file} cut at {bound}: line {number} and after not kept")
            break
        if len(line) > limits.line_bytes:
            size += _skip_line(stream, limits.bytes - size)
            summary.bad_line(number, f"longer than {limits.line_bytes:,} bytes")
            if size > limits.bytes:
                summary.warnings.append(f"{file} cut at {limits.bytes:,} bytes: line {number} and after not kept")
                break
            continue
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            summary.bad_line(number, "not UTF-8")
            continue
        if not text:
            continue
        try:
            entries = parse_line(text)
        except ValueError as exc:
            summary.bad_line(number, str(exc))
            store(stored_line(text, kind, masker) + "\n")
            continue
        store(stored_line(text, kind, masker) + "\n")
        for name, value in entries:
            summary.add(name, value)
    summary.finish()
    return summary


def _skip_line(stream: IO[bytes], budget: int) -> int:
    """Read past the rest of an over-long line (at most ``budget`` bytes and a chunk); the bytes read."""
    skipped = 0
    while skipped <= budget:
        chunk = stream.readline(1 << 16)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            break
    return skipped


@dataclass(frozen=True)
class Tracked:
    """A run's tracking, for its record."""

    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    tracked: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
