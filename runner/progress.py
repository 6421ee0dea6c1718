"""The faces of the Reporter (``report.py``) the steps of a run talk to. The CLI picks one: rich
bars on a terminal, plain lines when piped, JSON lines for a worker."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO


class PlainReporter:
    """Plain lines on stderr; the job's own stdout and stderr go to ours, apart."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None, quiet: bool = False) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.quiet = quiet
        self._lock = threading.Lock()

    def _say(self, text: str) -> None:
        if not self.quiet:
            with self._lock:
                self.err.write(f"anna-run: {text}\n")
                self.err.flush()

    def step_started(self, step: str, detail: str = "") -> None:
        self._say(f"{step}{': ' + detail if detail else ''}")

    def step_done(self, step: str, detail: str = "") -> None:
        if detail:
            self._say(f"{step}: {detail}")

    def bytes_done(self, step: str, done: int, total: int | None) -> None:
        pass

    def log_line(self, stream: str, text: str) -> None:
        target = self.err if stream == "stderr" else self.out
        with self._lock:
            target.write(text)
            target.flush()

    def warning(self, message: str) -> None:
        with self._lock:
            self.err.write(f"anna-run: warning: {message}\n")
            self.err.flush()

    def info(self, message: str) -> None:
        self._say(message)


class RichReporter(PlainReporter):
    """A progress bar for byte-counted steps (packaging, copying) on a terminal."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=self.console,
            transient=True,
        )
        self._tasks: dict[str, int] = {}

    def _say(self, text: str) -> None:
        self.console.print(f"[dim]anna-run:[/dim] {text}", highlight=False, markup=False)

    def bytes_done(self, step: str, done: int, total: int | None) -> None:
        if step not in self._tasks:
            if total is not None and total < (8 << 20):
                return  # a bar for a few MB only flickers
            self._progress.start()
            self._tasks[step] = self._progress.add_task(step, total=total)
        self._progress.update(self._tasks[step], completed=done, total=total)

    def step_done(self, step: str, detail: str = "") -> None:
        task = self._tasks.pop(step, None)
        if task is not None:
            self._progress.remove_task(task)
            if not self._tasks:
                self._progress.stop()
        super().step_done(step, detail)


class JsonReporter:
    """JSON lines on a stream: for workers and machines."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stderr
        self._lock = threading.Lock()

    def _emit(self, **event: object) -> None:
        event["t"] = round(time.time(), 3)
        with self._lock:
            self.out.write(json.dumps(event, ensure_ascii=False) + "\n")
            self.out.flush()

    def step_started(self, step: str, detail: str = "") -> None:
        self._emit(event="step_started", step=step, detail=detail)

    def step_done(self, step: str, detail: str = "") -> None:
        self._emit(event="step_done", step=step, detail=detail)

    def bytes_done(self, step: str, done: int, total: int | None) -> None:
        pass

    def log_line(self, stream: str, text: str) -> None:
        self._emit(event="log_line", stream=stream, text=text)

    def warning(self, message: str) -> None:
        self._emit(event="warning", message=message)

    def info(self, message: str) -> None:
        self._emit(event="info", message=message)
