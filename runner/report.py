"""What the steps of a run tell the person (or machine) watching: the ``Reporter`` protocol.

The steps only know this interface; how it looks (rich bars, plain lines, JSON lines) is a face
in ``progress.py`` that the CLI picks. ``SilentReporter`` keeps everything in memory (tests,
library use) and ``MaskedReporter`` puts a mask in front of any reporter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol


class Reporter(Protocol):
    """What a step may report. ``step`` names the step (``package``, ``pull``, ...), ``detail``
    says more about it; ``log_line`` carries the job's own output, ``stream`` being ``stdout`` or
    ``stderr``; ``bytes_done`` counts a byte-counted step (``total`` None when unknown)."""

    def step_started(self, step: str, detail: str = "") -> None: ...
    def step_done(self, step: str, detail: str = "") -> None: ...
    def bytes_done(self, step: str, done: int, total: int | None) -> None: ...
    def log_line(self, stream: str, text: str) -> None: ...
    def warning(self, message: str) -> None: ...
    def info(self, message: str) -> None: ...


class SilentReporter:
    """Collects warnings and logs in memory; prints nothing (tests, library use)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.logs: list[tuple[str, str]] = []
        self.steps: list[str] = []

    def step_started(self, step: str, detail: str = "") -> None:
        self.steps.append(step)

    def step_done(self, step: str, detail: str = "") -> None:
        pass

    def bytes_done(self, step: str, done: int, total: int | None) -> None:
        pass

    def log_line(self, stream: str, text: str) -> None:
        self.logs.append((stream, text))

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def info(self, message: str) -> None:
        pass


class MaskedReporter:
    """Passes everything on to ``inner`` with every text put through ``mask`` first (e.g. a
    ``Masker``'s, so no secret reaches the screen). Step names are masked too: a detail or a
    message may be built from a variable, and masking the name keeps a face's bookkeeping by
    name consistent, since the same name always masks the same way."""

    def __init__(self, inner: Reporter, mask: Callable[[str], str]) -> None:
        self.inner = inner
        self.mask = mask

    @property
    def quiet(self) -> bool:
        """The inner face's ``quiet`` (the CLI's ``--quiet``), for faces that have one."""
        return bool(getattr(self.inner, "quiet", False))

    @quiet.setter
    def quiet(self, value: bool) -> None:
        self.inner.quiet = value  # type: ignore[attr-defined]

    def step_started(self, step: str, detail: str = "") -> None:
        self.inner.step_started(self.mask(step), self.mask(detail))

    def step_done(self, step: str, detail: str = "") -> None:
        self.inner.step_done(self.mask(step), self.mask(detail))

    def bytes_done(self, step: str, done: int, total: int | None) -> None:
        self.inner.bytes_done(self.mask(step), done, total)

    def log_line(self, stream: str, text: str) -> None:
        self.inner.log_line(stream, self.mask(text))

    def warning(self, message: str) -> None:
        self.inner.warning(self.mask(message))

    def info(self, message: str) -> None:
        self.inner.info(self.mask(message))


def counted(chunks: Iterable[bytes], reporter: Reporter, step: str, total: int) -> Iterator[bytes]:
    """``chunks`` passed on as they are, with the bytes so far reported for ``step``."""
    done = 0
    for chunk in chunks:
        done += len(chunk)
        reporter.bytes_done(step, min(done, total), total)
        yield chunk
