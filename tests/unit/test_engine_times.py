"""The engine's container timestamps, read into a command's duration."""

from __future__ import annotations

import pytest
from anna_run.sandbox import container_runtime, parse_timestamp


def test_nanoseconds_and_zones() -> None:
    assert parse_timestamp("2026-11-25T10:40:55Z") == 1795603255.0
    assert parse_timestamp("2026-11-25T10:40:55.5Z") == 1795603255.5
    assert parse_timestamp("2026-11-25T10:40:55.123456789Z") == pytest.approx(1795603255.123456)
    assert parse_timestamp("2026-11-25T11:40:55.25+01:00") == 1795603255.25


def test_runtime_from_a_state() -> None:
    state = {"StartedAt": "2026-11-25T10:40:54.123456789Z", "FinishedAt": "2026-11-25T10:40:55.5Z"}
    assert container_runtime(state) == 1.377


@pytest.mark.parametrize(
    "state",
    [
        {},  # an engine that says nothing
        {"StartedAt": "yesterday", "FinishedAt": "2026-11-25T10:40:55Z"},
        {"StartedAt": None, "FinishedAt": "2026-11-25T10:40:55Z"},
        {"StartedAt": "2026-11-25T10:40:56Z", "FinishedAt": "2026-11-25T10:40:55Z"},  # backwards
    ],
)
def test_no_runtime_rather_than_a_wrong_one(state) -> None:
    assert container_runtime(state) is None
