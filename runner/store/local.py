"""The embedded local store: a directory of plain files plus an SQLite index of the runs.

Layout (the S3 store mirrors it):
    packages/<sha256>.tar        code packages, by content
    payloads/<sha256>.json       payloads, by content
    runs/<id>/run.json           the record (the truth; the index is rebuilt from these)
    runs/<id>/log.txt            stdout and stderr as they arrived (masked)
    runs/<id>/stdout.log, stderr.log
    runs/<id>/result/<path>      the result file
    runs/<id>/artifacts/<path>   the artifacts
    cache/                       stat cache of packaging
    index.sqlite                 WAL-mode index for listing
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, NotFound, StoreError
from ..fsio import atomic_copy, atomic_write
from ..record import RunRecord
from .base import LOG_FILES, FolderStore, SyncReport, check_relpath
from .blobs import local_blobs, referenced, remove_local, touch, unused
from .schedules import ScheduleBook

if TYPE_CHECKING:
    pass

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    job TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_project_created ON runs (project, created_at);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);
"""


class LocalStore(FolderStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)
        try:
            for sub in ("packages", "payloads", "runs", "cache"):
                (root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the run store at {root}: {exc.strerror or exc}") from exc
        self._db: sqlite3.Connection | None = None

    @property
    def local_root(self) -> Path:
        return self.root

    # -- content-addressed blobs -------------------------------------------------------------
    def packages_dir(self) -> Path:
        return self.root / "packages"

    def package_path(self, sha256: str) -> Path:
        return self.root / "packages" / f"{sha256}.tar"

    def publish_package(self, path: Path, sha256: str) -> None:
        """Nothing to do: ``build_package`` wrote it into the store already."""

    def cache_dir(self) -> Path:
        return self.root / "cache"

    def schedules(self) -> ScheduleBook:
        """The store's schedule registrations and fire decisions (``schedules/``)."""
        return ScheduleBook(self.root / "schedules")

    def payload_path(self, sha256: str) -> Path:
        return self.root / "payloads" / f"{sha256}.json"

    def add_payload(self, src: Path, sha256: str) -> Path:
        """Copy a payload in once; the same content is stored once."""
        dest = self.payload_path(sha256)
        if dest.exists():
            touch(dest)  # used again: young again for `gc --blobs`
            return dest
        try:
            atomic_copy(src, dest, perms=0o600)
        except OSError as exc:
            raise StoreError(f"cannot store the payload in {dest.parent}: {exc.strerror or exc}") from exc
        return dest

    # -- runs ---------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def collect_blobs(self, keep_s: float, *, dry_run: bool = False) -> list[dict]:
        """Remove the packages and payloads no run record names and older than ``keep_s``
        seconds (see blobs.py); returns what went (or would go)."""
        cutoff = time.time() - keep_s
        found = local_blobs(self.packages_dir(), self.root / "payloads")  # listed before the records
        refs = referenced(self._records_on_disk())
        refs |= {("package", entry.package_sha256) for entry in self.schedules().entries()}  # scheduled runs need it
        return remove_local(unused(found, refs, cutoff), cutoff, dry_run)

    def save_record(self, record: RunRecord) -> RunRecord:
        text = record.to_json()
        try:
            atomic_write(self.run_dir(record.id) / "run.json", text, perms=0o600)
            self._index_put(record, text)
        except OSError as exc:
            raise StoreError(f"cannot write the run record to {self.root}: {exc.strerror or exc}") from exc
        return record

    def get(self, run_ref: str) -> RunRecord:
        """A run by id or unique id prefix."""
        path = self.run_dir(run_ref) / "run.json"
        if "/" not in run_ref and run_ref not in ("", ".", "..") and path.is_file():
            return self._read_record(path)
        rows = self._query("SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' LIMIT 2", (_like_prefix(run_ref),))
        if len(rows) == 1:
            return self._read_record(self.run_dir(rows[0][0]) / "run.json")
        if len(rows) > 1:
            raise NotFound(f"run {run_ref!r} is ambiguous: give more of its id")
        raise NotFound(f"no run {run_ref!r} in the store {self.root}")

    def list_runs(
        self,
        *,
        project: str | None = None,
        job: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        where, args = [], []
        for column, value in (("project", project), ("job", job), ("status", status)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT record FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [RunRecord.from_json(row[0]) for row in self._query(sql, tuple(args))]

    def iter_log(self, run_id: str, stream: str = "log", offset: int = 0) -> Iterator[bytes]:
        path = self.run_dir(run_id) / LOG_FILES[stream]
        if not path.exists():
            return
        with open(path, "rb") as f:
            f.seek(offset)
            while chunk := f.read(1 << 16):
                yield chunk

    def iter_file(self, run_id: str, relpath: str) -> Iterator[bytes]:
        try:
            path = self.run_dir(run_id).joinpath(*check_relpath(relpath))
            f = open(path, "rb")  # noqa: SIM115 - closed by the generator below
        except (ConfigError, OSError) as exc:
            raise NotFound(f"run {run_id} has no {relpath} in the store {self.root}") from exc
        return _chunks(f)

    def fetch_artifacts(self, record: RunRecord, dest: Path) -> int:
        src = self.run_dir(record.id) / "artifacts"
        try:
            if src.exists():
                shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
            else:
                dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot copy the artifacts of run {record.id} into {dest}: {exc}") from exc
        return len(record.artifacts)

    def pending(self) -> list[RunRecord]:
        """Nothing is ever pending in a directory store: every write lands in place."""
        return []

    def sync(self) -> SyncReport:
        return SyncReport()

    def reindex(self) -> int:
        """Rebuild the index from the run records on disk; returns the number of runs."""
        db = self._conn()
        count = 0
        with db:
            db.execute("DELETE FROM runs")
            for path in (self.root / "runs").glob("*/run.json"):
                try:
                    record = self._read_record(path)
                except (NotFound, StoreError):
                    continue
                self._index_put(record, record.to_json(), commit=False)
                count += 1
        return count

    # -- internals ----------------------------------------------------------------------------
    def _records_on_disk(self) -> list[RunRecord]:
        """Every run record, read from its run.json (the truth, not the index)."""
        records = []
        for path in (self.root / "runs").glob("*/run.json"):
            with contextlib.suppress(NotFound, StoreError):  # a damaged record names nothing usable
                records.append(self._read_record(path))
        return records

    def _read_record(self, path: Path) -> RunRecord:
        try:
            return RunRecord.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise NotFound(f"no run record at {path}") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            raise StoreError(f"run record {path} is damaged: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            fresh = not (self.root / "index.sqlite").exists()
            self._db = self._open_index()
            if fresh and any((self.root / "runs").iterdir()):
                self.reindex()
        return self._db

    def _open_index(self) -> sqlite3.Connection:
        """The index in WAL mode. Switching a fresh file to WAL takes a lock that the busy timeout
        does not wait for, so processes opening a new store at once retry briefly."""
        path = self.root / "index.sqlite"
        for attempt in range(50):
            db = None
            try:
                db = sqlite3.connect(path, timeout=30, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
                return db
            except sqlite3.OperationalError as exc:
                if db is not None:
                    db.close()  # a half-opened connection must not hold a lock while we wait
                # "disk I/O error": another process is setting up the WAL's shared memory just now.
                transient = "locked" in str(exc) or "disk I/O error" in str(exc)
                if not transient or attempt == 49:
                    raise StoreError(f"the run index {path} cannot be opened: {exc}") from exc
                time.sleep(0.05 + 0.01 * attempt)
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"the run index {path} cannot be opened: {exc}") from exc
        raise AssertionError("unreachable")

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the run index in {self.root} is damaged ({exc}); run `anna-run runs --reindex`") from exc

    def _index_put(self, record: RunRecord, text: str, commit: bool = True) -> None:
        row = (record.id, record.project, record.job, record.status, record.created_at, text)
        sql = "INSERT OR REPLACE INTO runs (id, project, job, status, created_at, record) VALUES (?,?,?,?,?,?)"
        try:
            self._conn().execute(sql, row)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot update the run index in {self.root}: {exc}") from exc


def _chunks(f) -> Iterator[bytes]:
    with f:
        while chunk := f.read(1 << 16):
            yield chunk


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
