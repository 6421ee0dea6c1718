"""Units written by people, in askanna.yml and on the command line: durations ("1h30m") and
memory sizes ("4g", Docker's units: k = 1024).

:func:`duration_seconds` and :func:`memory_bytes` raise ValueError saying what is wrong, so a
caller can place the error (file:line:col); :func:`parse_duration` and :func:`parse_memory`
raise ConfigError prefixed with where the value came from.
"""

from __future__ import annotations

import math
import re

from .errors import ConfigError

MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses a memory limit below 6 MiB
MAX_MEMORY = 2**63 - 1  # the engine's limits are int64

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*[a-z]+\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_SECONDS = {"s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "mins": 60}
_SECONDS |= {"minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600}
_SECONDS |= {"hours": 3600, "d": 86400, "day": 86400, "days": 86400}
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])i?b?|b)?", re.IGNORECASE)
_MEMORY_UNITS = {None: 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def duration_seconds(value: object) -> float:
    """Seconds in `value`; ValueError saying why not."""
    example = "use e.g. 90s, 30m, 1h30m, 1.5h or 1d"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number or (isinstance(value, str) and re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", value)):
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except OverflowError:  # an int past float's range: not finite either
            seconds = math.inf
    elif isinstance(value, str) and _DURATION.fullmatch(text := value.strip().lower()):
        seconds = 0.0
        for number, unit in _DURATION_PART.findall(text):
            if unit not in _SECONDS:
                raise ValueError(f"{value!r} has an unknown unit {unit!r}; {example}")
            seconds += float(number) * _SECONDS[unit]
    else:
        raise ValueError(f"{value!r} is not a duration; {example}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{_short(value)} is not a finite duration above zero; {example}")
    return seconds


def memory_bytes(value: object) -> int:
    """Bytes in `value` (Docker's units: k = 1024); ValueError saying why not."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _MEMORY.fullmatch(value.strip())):
        unit = match[2].lower() if match[2] else None
        number = float(match[1]) * _MEMORY_UNITS[unit]
        size = int(number) if math.isfinite(number) else MAX_MEMORY + 1
    else:
        raise ValueError(f"{value!r} is not a memory size; use e.g. 512m, 4g or 2GiB")
    if size < MIN_MEMORY:
        raise ValueError(f"{value!r} is below Docker's minimum memory limit of 6m (6 MiB)")
    if size > MAX_MEMORY:
        raise ValueError(f"{_short(value)} is above the largest memory limit the engine takes (8 EiB)")
    return size


def parse_duration(value: object, *, where: str) -> float:
    """Seconds (> 0) from 45, 45.0, "90s", "30m", "1h30m", "1.5h", "1d"; `where` prefixes the error."""
    try:
        return duration_seconds(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_memory(value: object, *, where: str) -> int:
    """Bytes (>= 6 MiB) from an int or "512m", "4g", "1.5g", "2GiB", "2GB"; `where` prefixes the error."""
    try:
        return memory_bytes(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} characters)"
