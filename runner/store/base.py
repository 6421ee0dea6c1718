"""The Store protocol: where packages, payloads and runs live, whatever the backend.

Two implementations share the layout (SPEC §4): ``LocalStore`` (a directory with an SQLite
index) and ``S3Store`` (a bucket and prefix, with a local spool). Every writer goes through
the same calls, so a run does not know which one it writes to:

* ``run_files(id)`` gives the writers of a run's files (its logs, result and artifacts): they
  land in the final place for a directory store, in the spool for S3;
* ``pack(root, ...)`` builds a project's code package into the store (``cache_file`` keeps the
  stat and build caches);
* ``save_record`` publishes: for a final record, S3 uploads the run's files, then the record
  (last, so a reader never sees a record naming files that are not there yet);
* content-addressed blobs: ``pack`` / ``publish_package`` and ``add_payload``.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from ..errors import ConfigError
from ..record import RunRecord

if TYPE_CHECKING:
    from ..package import Package
    from .schedules import ScheduleBook

LOG_FILES = {"log": "log.txt", "stdout": "stdout.log", "stderr": "stderr.log"}


@dataclass(frozen=True)
class SyncReport:
    """What ``sync`` did: runs uploaded, runs whose upload still cannot finish (and why), and
    runs still going on (they upload themselves when they end)."""

    uploaded: tuple[str, ...] = ()
    pending: tuple[tuple[str, str], ...] = ()
    running: tuple[str, ...] = ()


OUTPUT_FOLDERS = ("result", "artifacts")
TRACKING_FILES = {"metrics": "metrics.jsonl", "variables": "variables.jsonl"}  # SPEC §7
RUNNER_LOG = "runner.log"  # a detached run's own output (`run --detach`)


class RunFiles:
    """The files of one run, as the steps write them: the logs, the outputs, a detached run's
    own log. The folder is the store's business (its final place, or the S3 spool that
    ``save_record`` uploads from); no step builds a path into it."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    @property
    def where(self) -> str:
        """The folder, for messages."""
        return str(self._folder)

    def open_log(self, stream: str) -> IO[str]:
        """A text writer for ``stream`` (log, stdout or stderr), truncated."""
        self._folder.mkdir(parents=True, exist_ok=True)
        return open(self._folder / LOG_FILES[stream], "w", encoding="utf-8", errors="replace")

    def append_log(self, line: str) -> None:
        """Add ``line`` (already masked) to the end of the run's log.txt: what happened after
        the job's output ended, e.g. a notification mail that could not be sent."""
        self._folder.mkdir(parents=True, exist_ok=True)
        with open(self._folder / LOG_FILES["log"], "a", encoding="utf-8", errors="replace") as f:
            f.write(line.rstrip("\n") + "\n")

    def output_folder(self, kind: str) -> Path:
        """Where ``collect`` extracts the run's ``result`` or ``artifacts`` (its own safe writer)."""
        if kind not in OUTPUT_FOLDERS:
            raise ValueError(f"no output folder {kind!r}")
        return self._folder / kind

    def open_tracking(self, kind: str) -> IO[str]:
        """A text writer for the run's tracked ``metrics`` or ``variables`` (JSON lines), truncated."""
        self._folder.mkdir(parents=True, exist_ok=True)
        return open(self._folder / TRACKING_FILES[kind], "w", encoding="utf-8")

    def discard_outputs(self) -> None:
        """Remove what collecting wrote (the store could not take it all)."""
        for kind in OUTPUT_FOLDERS:
            shutil.rmtree(self._folder / kind, ignore_errors=True)

    def drop_log_copies(self) -> bool:
        """Remove stdout.log and stderr.log (log.txt holds both): room for the final record in a
        full store. True when something was removed."""
        dropped = False
        for stream in ("stdout", "stderr"):
            with contextlib.suppress(OSError):
                (self._folder / LOG_FILES[stream]).unlink()
                dropped = True
        return dropped

    def open_runner_log(self) -> IO[bytes]:
        """A detached run's own output, appended."""
        self._folder.mkdir(parents=True, exist_ok=True)
        return open(self._folder / RUNNER_LOG, "ab")


class FolderStore:
    """What both stores give the steps from the local folder they keep files in (the store
    itself, or the S3 spool): packing into it, its cache files and a run's files. A subclass
    has ``local_root``, ``packages_dir()``, ``cache_dir()`` and ``run_dir(id)``."""

    local_root: Path
    # Runs a read answered as this machine last saw them (an S3 server that does not answer).
    stale_ids: Collection[str] = frozenset()

    def pack(self, root: Path, *, cache_key: str, progress: Callable[[int, int], None] | None = None) -> Package:
        from ..package import build_package
        from .blobs import touch

        package = build_package(
            root,
            self.packages_dir(),
            cache_file=self.cache_file(f"stat-{cache_key}.json"),
            exclude=[self.local_root],  # a store (or spool) inside the project is never packed
            progress=progress,
        )
        touch(package.path)  # reused: young again for `gc --blobs`
        return package

    def cache_file(self, name: str) -> Path:
        return self.cache_dir() / name

    def run_files(self, run_id: str) -> RunFiles:
        return RunFiles(self.run_dir(run_id))


class Store(Protocol):
    """A run store. A run writes into ``run_dir(id)`` (final place or spool) and publishes with
    ``save_record``; readers only see what a record names."""

    location: str  # as the user named it: a folder, or s3://bucket/prefix
    stale_ids: Collection[str]  # runs read answered as last seen here (S3 unreachable)

    @property
    def local_root(self) -> Path:
        """The local folder the store keeps files in (the store itself, or the S3 spool)."""
        ...

    # -- blobs, by content ---------------------------------------------------------------------
    def packages_dir(self) -> Path: ...
    def pack(self, root: Path, *, cache_key: str, progress: Callable[[int, int], None] | None = None) -> Package:
        """The code package of the project at ``root``, built into the store (an unchanged tree
        is recognised by its stat cache, ``cache_key``'s, and not read again)."""
        ...

    def cache_file(self, name: str) -> Path:
        """A cache file of the store's own (build and stat caches), by name."""
        ...

    def package_path(self, sha256: str) -> Path:
        """The local file of a package (fetched from a remote store when only it has it)."""
        ...

    def publish_package(self, path: Path, sha256: str) -> None:
        """Make a package built into ``packages_dir()`` available to every reader of the store
        (S3: upload unless already there; a directory store: nothing to do)."""
        ...

    def add_payload(self, src: Path, sha256: str) -> Path: ...
    def payload_path(self, sha256: str) -> Path: ...
    def cache_dir(self) -> Path: ...
    def schedules(self) -> ScheduleBook:
        """The schedule registrations and fire decisions (ConfigError where not supported)."""

    def collect_blobs(self, keep_s: float, *, dry_run: bool = False) -> list[dict]:
        """Remove the packages and payloads that no run record names and that are older than
        ``keep_s`` seconds (a run being staged is not recorded yet); returns what went, or with
        ``dry_run`` what would go: dicts with kind, name, sha256, size and where."""
        ...

    # -- runs ----------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path: ...
    def run_files(self, run_id: str) -> RunFiles:
        """The writers of the run's files (logs, outputs)."""
        ...

    def save_record(self, record: RunRecord) -> RunRecord:
        """Store ``record``; returns it as stored (``upload="pending"`` when S3 could not take it)."""
        ...

    def get(self, run_ref: str) -> RunRecord: ...
    def list_runs(
        self,
        *,
        project: str | None = None,
        job: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]: ...
    def reindex(self) -> int: ...

    # -- a run's files -------------------------------------------------------------------------
    def iter_log(self, run_id: str, stream: str = "log", offset: int = 0) -> Iterator[bytes]: ...
    def iter_file(self, run_id: str, relpath: str) -> Iterator[bytes]:
        """The bytes of ``relpath`` under the run (e.g. ``result/model.json``); NotFound if absent."""
        ...

    def fetch_artifacts(self, record: RunRecord, dest: Path) -> int:
        """Copy the run's artifacts into ``dest``; returns the number of files."""
        ...

    # -- uploads that could not finish ---------------------------------------------------------
    def pending(self) -> list[RunRecord]:
        """Runs kept only locally so far: going on, or waiting for ``sync``."""
        ...

    def sync(self) -> SyncReport:
        """Complete every pending upload; idempotent, safe while runs go on."""
        ...


def check_relpath(relpath: str) -> list[str]:
    """The parts of a path inside a run's folder; ConfigError when it could leave it."""
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise ConfigError(f"{relpath!r} is not a path inside a run")
    return parts
