"""Where a job's output goes: masked, live to the reporter and into the stored logs (capped)."""

from __future__ import annotations

import codecs
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import StoreError
from .report import Reporter
from .variables import Masker

if TYPE_CHECKING:
    from .store.base import RunFiles

DEFAULT_LOG_LIMIT = 64 << 20


def log_limit() -> int:
    try:
        return int(os.environ.get("ANNA_RUN_LOG_LIMIT", DEFAULT_LOG_LIMIT))
    except ValueError:
        return DEFAULT_LOG_LIMIT


class LogSink:
    """Receives raw bytes per stream; masks secrets (also split across reads) before anything
    is shown or written; keeps stdout and stderr apart and a combined log in arrival order."""

    def __init__(
        self, files: RunFiles, new_masker: Callable[[], Masker], reporter: Reporter, limit: int | None = None
    ) -> None:
        self.reporter = reporter
        self.where = files.where
        self.limit = log_limit() if limit is None else limit
        self.truncated = False
        self.error: OSError | None = None  # the first failure to write the stored log (store full, ...)
        self._silenced: set[str] = set()  # streams whose live output went away (`anna-run job | head`)
        self._written = 0
        self._lock = threading.Lock()
        # Open for the run's whole life, closed by close(); a `with` block cannot span that.
        try:
            self._files = {stream: files.open_log(stream) for stream in ("log", "stdout", "stderr")}
        except OSError as exc:
            raise StoreError(f"cannot write the run's log into {self.where}: {exc.strerror or exc}") from None
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in ("stdout", "stderr")}
        self._maskers = {s: new_masker() for s in ("stdout", "stderr")}  # one stream state each

    def write(self, stream: str, data: bytes) -> None:
        text = self._maskers[stream].feed(self._decoders[stream].decode(data))
        self._emit(stream, text)

    def note(self, text: str) -> None:
        """A line of anna-run's own in the stored log (e.g. why a run ended)."""
        self._emit("stderr", f"[anna-run] {text}\n", live=False)

    @property
    def closed(self) -> bool:
        return self._files["log"].closed

    def check(self) -> None:
        """Raise StoreError when the stored log could not be written (the live output went on)."""
        if self.error is not None:
            reason = self.error.strerror or self.error
            raise StoreError(f"cannot write the run's log into {self.where}: {reason}")

    def close(self) -> None:
        """Flush what the maskers hold back and close the files; safe to call twice."""
        if self.closed:
            return
        for stream in ("stdout", "stderr"):
            tail = self._decoders[stream].decode(b"", final=True)
            masker = self._maskers[stream]
            self._emit(stream, masker.feed(tail) + masker.flush())
        for f in self._files.values():
            try:
                f.close()
            except OSError as exc:  # the last buffered write
                self.error = self.error or exc

    def _emit(self, stream: str, text: str, live: bool = True) -> None:
        if not text:
            return
        if live and stream not in self._silenced:
            try:
                self.reporter.log_line(stream, text)
            except OSError:  # whoever read our output left: the run and its stored log go on
                self._silenced.add(stream)
        with self._lock:
            if self.truncated or self.error is not None:
                return
            try:
                self._store(stream, text)
            except OSError as exc:  # the store is full or went read-only: the run reports it at the end
                self.error = exc
                self.truncated = True

    def _store(self, stream: str, text: str) -> None:
        """Append ``text`` to the stored logs, up to the limit (called under the lock)."""
        size = len(text.encode("utf-8", "replace"))
        if self._written + size > self.limit:
            # Cut by bytes, as the limit and the note say, never inside a character.
            room = max(0, self.limit - self._written)
            text = text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
            size = len(text.encode("utf-8", "replace"))
            self.truncated = True
        self._written += size
        self._files["log"].write(text)
        self._files[stream].write(text)
        self._files["log"].flush()  # `logs -f` reads the file while the run goes on
        if self.truncated:
            note = f"\n[anna-run] log truncated: the stored log keeps the first {self.limit} bytes\n"
            self._files["log"].write(note)
            self._files[stream].write(note)
