"""Image references: what the engine accepts, and nothing a value could bend (IN-05)."""

from __future__ import annotations

import pytest
from anna_run.image import valid_reference

GOOD = [
    "python:3.11-slim",
    "anna-run/busybox:latest",
    "localhost:5000/team/model:v1.2",
    "registry.example.com/a/b/c@sha256:" + "a" * 64,
    "sha256:" + "b" * 64,
    "f0893ebfad90",
    "a__b/c.d-e",
    "[::1]:5000/x",
    "a" * 255 + ":tag",
]
BAD = ["busybox;id", "$(id)", "--privileged", "Busybox", "a b", "a\nb", "", "a:", "a/", "/a", "a//b", "a@sha256:zz"]
BAD += ["a:tag:x", "a:-tag", "a" * 256, "-v=/:/host"]


@pytest.mark.parametrize("name", GOOD)
def test_valid_references(name: str) -> None:
    assert valid_reference(name)


@pytest.mark.parametrize("name", BAD)
def test_invalid_references(name: str) -> None:
    assert not valid_reference(name)
