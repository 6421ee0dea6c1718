"""Live logs of submitted runs: one capped Redis stream per run, ``anna-run:run:<id>:log``.

The worker's :class:`LivePublisher` is the run's Reporter: the run's LogSink hands it lines
that are already masked, so nothing unmasked leaves the worker. It batches them (a run that
prints fast costs one round trip per tenth of a second, never one per line), caps the stream
at ``ANNA_RUN_LIVELOG_MAXLEN`` entries and lets it expire ``ANNA_RUN_LIVELOG_TTL`` seconds
after the run. :func:`follow` reads it for `logs -f` and `submit --wait`.

Entries are ``{"k": kind, "t": text}``: kind ``stdout`` / ``stderr`` (the job's output),
``note`` (a step of the runner), ``attempt`` (a new attempt starts: the log starts over),
``end`` (``t`` is the final status).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .celery_app import HostSettings, redis_errors, run_key

if TYPE_CHECKING:
    import redis

log = logging.getLogger("anna_run.hosts")

ENTRY_LIMIT = 64 << 10  # characters per stream entry: a flood is cut into entries this big
RUNNING_TTL = 24 * 3600  # a stream whose worker died without ending it goes away in the end


class LivePublisher:
    """A Reporter (see progress.py) that publishes a run's log to its Redis stream."""

    def __init__(self, r: redis.Redis, run_id: str, settings: HostSettings, interval: float = 0.1) -> None:
        self.r = r
        self.run_id = run_id
        self.key = run_key(run_id, "log")
        self.settings = settings
        self.interval = interval
        self._pending: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._failed = False
        self._thread = threading.Thread(target=self._loop, name="anna-run-livelog", daemon=True)
        self._thread.start()

    # -- the Reporter protocol ----------------------------------------------------------------
    def step_started(self, step: str, detail: str = "") -> None:
        text = f"{step}{': ' + detail if detail else ''}"
        log.info("run %s: %s", self.run_id, text)
        self._add("note", text)

    def step_done(self, step: str, detail: str = "") -> None:
        if detail:
            log.info("run %s: %s: %s", self.run_id, step, detail)
            self._add("note", f"{step}: {detail}")

    def bytes_done(self, step: str, done: int, total: int | None) -> None:
        pass

    def log_line(self, stream: str, text: str) -> None:
        self._add(stream, text)

    def warning(self, message: str) -> None:
        log.warning("run %s: %s", self.run_id, message)
        self._add("note", f"warning: {message}")

    def info(self, message: str) -> None:
        log.info("run %s: %s", self.run_id, message)
        self._add("note", message)

    # -- publishing ---------------------------------------------------------------------------
    def attempt(self, number: int, host: str) -> None:
        """A new attempt starts: followers learn that the log starts over."""
        self._add("attempt", f"attempt {number} on {host}")

    def close(self, status: str | None) -> None:
        """Flush, mark the end (when the run ended here) and let the stream expire."""
        if self._closed:
            return
        if status is not None:
            self._add("end", status)
        self._closed = True
        self._wake.set()
        self._thread.join(30)
        if status is not None:
            try:
                self.r.expire(self.key, self.settings.livelog_ttl)
            except redis_errors() as exc:
                log.warning("run %s: live log not closed: %s", self.run_id, exc)

    def _add(self, kind: str, text: str) -> None:
        if not text:
            return
        with self._lock:
            self._pending.append((kind, text))
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait(1.0)
            if not self._closed:
                time.sleep(self.interval)  # gather a batch
            self._wake.clear()
            with self._lock:
                batch, self._pending = self._pending, []
            if batch:
                self._send(batch)
            if self._closed and not self._pending:
                return

    def _send(self, batch: list[tuple[str, str]]) -> None:
        if self._failed:
            return
        try:
            pipe = self.r.pipeline(transaction=False)
            for kind, text in _merged(batch):
                pipe.xadd(self.key, {"k": kind, "t": text}, maxlen=self.settings.livelog_maxlen, approximate=True)
            pipe.expire(self.key, RUNNING_TTL)
            pipe.execute()
        except redis_errors() as exc:
            # Live logs are a view; the stored log is the truth. Do not hold up the run.
            self._failed = True
            log.warning("run %s: live log stopped: %s", self.run_id, exc)


def _merged(batch: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Neighbouring pieces of one stream as one entry (up to ENTRY_LIMIT characters)."""
    out: list[tuple[str, str]] = []
    for kind, text in batch:
        while text:
            piece, text = text[:ENTRY_LIMIT], text[ENTRY_LIMIT:]
            if (
                out
                and out[-1][0] == kind
                and kind in ("stdout", "stderr")
                and len(out[-1][1]) + len(piece) <= ENTRY_LIMIT
            ):
                out[-1] = (kind, out[-1][1] + piece)
            else:
                out.append((kind, piece))
    return out


def follow(
    r: redis.Redis,
    run_id: str,
    emit: Callable[[str, str], None],
    is_final: Callable[[], bool],
    *,
    check_every: float = 2.0,
) -> str | None:
    """Pass the run's live log to ``emit(kind, text)`` until the run ends; returns the final
    status from the end marker, or None when the run ended without one (cancelled while queued,
    the stream expired, its host died on its last attempt): the caller reads the stored log."""
    key = run_key(run_id, "log")
    last = "0-0"
    next_check = time.monotonic() + check_every
    final = False
    while True:
        found = r.xread({key: last}, count=1000, block=None if final else 1000)
        for _stream, entries in found or []:
            for entry_id, fields in entries:
                last = entry_id
                kind, text = fields.get("k", ""), fields.get("t", "")
                if kind == "end":
                    return text
                emit(kind, text)
        if final and not found:
            return None  # the record is final and the stream holds nothing more
        if not final and time.monotonic() >= next_check:
            next_check = time.monotonic() + check_every
            final = is_final()  # then: read what is left, and stop even without an end marker
