"""The Store protocol: where packages, payloads and runs live, whatever the backend.

Two implementations share the layout (SPEC §4): ``LocalStore`` (a directory with an SQLite
index) and ``S3Store`` (a bucket and prefix, with a local spool). Every writer goes through
the same calls, so a run does not know which one it writes to:

* ``run_dir(id)`` is a local folder the run writes its log, result and artifacts into (the
  final place for a directory store, the spool for S3);
* ``save_record`` publishes: for a final record, S3 uploads the run's files, then the record
  (last, so a reader never sees a record naming files that are not there yet);
* content-addressed blobs: ``packages_dir()`` / ``publish_package`` and ``add_payload``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import ConfigError
from ..record import RunRecord

LOG_FILES = {"log": "log.txt", "stdout": "stdout.log", "stderr": "stderr.log"}


@dataclass(frozen=True)
class SyncReport:
    """What ``sync`` did: runs uploaded, runs whose upload still cannot finish (and why), and
    runs still going on (they upload themselves when they end)."""

    uploaded: tuple[str, ...] = ()
    pending: tuple[tuple[str, str], ...] = ()
    running: tuple[str, ...] = ()


class Store(Protocol):
    """A run store. A run writes into ``run_dir(id)`` (final place or spool) and publishes with
    ``save_record``; readers only see what a record names."""

    location: str  # as the user named it: a folder, or s3://bucket/prefix

    @property
    def local_root(self) -> Path:
        """The local folder the store keeps files in (the store itself, or the S3 spool)."""
        ...

    # -- blobs, by content ---------------------------------------------------------------------
    def packages_dir(self) -> Path: ...
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

    # -- runs ----------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path: ...
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
