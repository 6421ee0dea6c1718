"""Units written by people: durations and memory sizes, as --timeout and --memory take them."""

from __future__ import annotations

import pytest
from anna_run.errors import ConfigError
from anna_run.units import parse_duration, parse_memory


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30m", 1800),
        ("1h30m", 5400),
        ("90s", 90),
        ("2h", 7200),
        ("1d", 86400),
        ("1.5h", 5400),
        (45, 45),
        (45.0, 45),
        ("45", 45),
        ("1 hour 30 minutes", 5400),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value, where="--timeout") == seconds


@pytest.mark.parametrize("value", ["", "abc", "5x", "1h30", 0, -1, True, None, "0s", float("inf"), [1]])
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, where="--timeout")
    assert str(info.value).startswith("--timeout: ")


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("4g", 4 * 1024**3),
        ("512m", 512 * 1024**2),
        ("1.5g", int(1.5 * 1024**3)),
        ("100000k", 100000 * 1024),
        ("2GiB", 2 * 1024**3),
        ("2GB", 2 * 1024**3),
        ("2 Gi", 2 * 1024**3),
        (10_000_000, 10_000_000),
        ("10000000", 10_000_000),
        ("6m", 6 * 1024**2),
    ],
)
def test_parse_memory(value: object, size: int) -> None:
    assert parse_memory(value, where="--memory") == size


@pytest.mark.parametrize("value", ["100k", "5m", 1024, "lots", "4x", "", True, None, 1.5, "-4g"])
def test_parse_memory_refuses(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_memory(value, where="--memory")
    assert str(info.value).startswith("--memory: ")


def test_parse_memory_minimum_message() -> None:
    with pytest.raises(ConfigError, match="minimum memory limit of 6m"):
        parse_memory("100k", where="--memory")


@pytest.mark.parametrize("value", [10**400, "9" * 500, "9" * 400 + "s", 1e308 * 10])
def test_a_duration_past_floats_range_is_refused_not_a_crash(value: object) -> None:
    """Found by the generated project files (GN-02): an int past float's range raised OverflowError."""
    with pytest.raises(ConfigError, match="finite duration above zero"):
        parse_duration(value, where="timeout")


@pytest.mark.parametrize("value", [10**400, "9" * 500 + "g", 2**63])
def test_a_memory_limit_past_the_engines_range_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="largest memory limit") as info:
        parse_memory(value, where="--memory")
    assert len(str(info.value)) < 200  # a 400-digit number is shortened in the message
