"""The Reporter protocol the steps of a run talk to, and the wrappers that need no face.

The faces (rich bars, plain lines, JSON lines) live in ``progress.py``; steps import only this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Reporter(Protocol):
    def step_started(self, step: str, detail: str = "") -> None: ...
    def step_done(self, step: str, detail: str = "") -> None: ...
    def bytes_done(self, step: str, done: int, total: int | None) -> None: ...
    def log_line(self, stream: str, text: str) -> None: ...
    def warning(self, message: str) -> None: ...
    def info(self, message: str) -> None: ...


class MaskedReporter:
    """Any reporter, with every text masked before it is passed on: where a run's text leaves
    the process, its secrets are ``***`` (the steps never mask by hand)."""

    def __init__(self, inner: Reporter, mask: Callable[[str], str]) -> None:
        self.inner = inner
        self.mask = mask

    def step_started(self, step: str, detail: str = "") -> None:
        self.inner.step_started(step, self.mask(detail))

    def step_done(self, step: str, detail: str = "") -> None:
        self.inner.step_done(step, self.mask(detail))

    def bytes_done(self, step: str, done: int, total: int | None) -> None:
        self.inner.bytes_done(step, done, total)

    def log_line(self, stream: str, text: str) -> None:
        self.inner.log_line(stream, self.mask(text))

    def warning(self, message: str) -> None:
        self.inner.warning(self.mask(message))

    def info(self, message: str) -> None:
        self.inner.info(self.mask(message))
