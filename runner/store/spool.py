"""The local side of a remote store: where a run writes before anything is uploaded.

Layout under ``${XDG_CACHE_HOME:-~/.cache}/anna-run/s3/<bucket>-<hash>/``:

    runs/<id>/run.json ...   runs not uploaded yet: going on, or waiting for `anna-run sync`
    packages/<sha256>.tar    packages built here (also the packaging cache)
    payloads/<sha256>.json   payloads seen here
    cache/                   packaging's stat cache
    locks/<id>.lock          one uploader per run at a time (flock)
    index.sqlite             a cache of the remote index objects (key, etag -> record)

A run's folder leaves the spool only after its record is in the remote store, so a crash,
an outage or a wrong password at any point leaves everything here for ``sync``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from ..fsio import TEMP_PREFIX, atomic_write
from ..record import RunRecord


@dataclass(frozen=True)
class SpoolFile:
    """One file of a spooled run, by its path under the run's folder."""

    relpath: str  # posix: "log.txt", "result/out/r.json", "artifacts/models/m.pkl"
    path: Path
    size: int
    link: str | None = None  # the target, for a symlink kept among the artifacts


def spool_root(endpoint: str, bucket: str, prefix: str, cache_home: Path | None = None) -> Path:
    """One spool per endpoint, bucket and prefix, in the user's cache folder."""
    base = cache_home or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(f"{endpoint}\0{bucket}\0{prefix}".encode()).hexdigest()[:16]
    return base / "anna-run" / "s3" / f"{bucket}-{digest}"


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            for sub in ("runs", "packages", "payloads", "cache", "locks"):
                (root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the local spool at {root}: {exc.strerror or exc}") from exc
        self._db: sqlite3.Connection | None = None

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    # -- records -------------------------------------------------------------------------------
    def write_record(self, record: RunRecord) -> None:
        try:
            atomic_write(self.run_dir(record.id) / "run.json", record.to_json(), perms=0o600)
        except OSError as exc:
            raise StoreError(f"cannot write the run record to {self.root}: {exc.strerror or exc}") from exc

    def read_record(self, run_id: str) -> RunRecord | None:
        path = self.run_dir(run_id) / "run.json"
        try:
            return RunRecord.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise StoreError(f"run record {path} is damaged: {exc}") from exc

    def run_ids(self) -> list[str]:
        try:
            return sorted(p.name for p in (self.root / "runs").iterdir() if (p / "run.json").is_file())
        except OSError:
            return []

    def records(self) -> list[RunRecord]:
        """Every run still here; a damaged or vanishing record is skipped."""
        out = []
        for run_id in self.run_ids():
            with contextlib.suppress(StoreError):
                record = self.read_record(run_id)
                if record is not None:
                    out.append(record)
        return out

    def files(self, run_id: str) -> list[SpoolFile]:
        """The run's files but its record, sorted; symlinks as links, never followed."""
        top = self.run_dir(run_id)
        found = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            here = Path(dirpath)
            names = list(filenames) + [d for d in dirnames if (here / d).is_symlink()]
            for name in sorted(names):
                path = here / name
                relpath = path.relative_to(top).as_posix()
                if here == top and (name == "run.json" or name.startswith(TEMP_PREFIX)):
                    continue  # the record goes last, on its own; temp files are half-written
                st = path.lstat()
                if path.is_symlink():
                    found.append(SpoolFile(relpath, path, 0, link=os.readlink(path)))
                elif path.is_file():
                    found.append(SpoolFile(relpath, path, st.st_size))
        return sorted(found, key=lambda f: f.relpath)

    def discard(self, run_id: str) -> None:
        """The run is uploaded: its local copy goes (the record first, so it is never half there)."""
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir(run_id) / "run.json").unlink()
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[None]:
        """One uploader per run, across processes. Callers check the run is still here after."""
        path = self.root / "locks" / f"{run_id}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            if not self.run_dir(run_id).exists():
                # Safe to remove while holding it: whoever opened it before re-checks the run.
                with contextlib.suppress(OSError):
                    os.unlink(path)
            os.close(fd)

    # -- the cache of the remote index ---------------------------------------------------------
    def cached(self, prefix: str) -> dict[str, tuple[str, str]]:
        """key -> (etag, record json) for the cached index objects under ``prefix``."""
        rows = self._query("SELECT key, etag, record FROM remote WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
        return {key: (etag, record) for key, etag, record in rows}

    def cache_put(self, rows: list[tuple[str, str, str]]) -> None:
        if rows:
            self._write("INSERT OR REPLACE INTO remote (key, etag, record) VALUES (?, ?, ?)", rows)

    def cache_drop(self, keys: list[str]) -> None:
        if keys:
            self._write("DELETE FROM remote WHERE key = ?", [(k,) for k in keys])

    def cache_clear(self) -> None:
        self._write("DELETE FROM remote", [()])

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            path = self.root / "index.sqlite"
            try:
                db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("CREATE TABLE IF NOT EXISTS remote (key TEXT PRIMARY KEY, etag TEXT, record TEXT)")
            except sqlite3.DatabaseError as exc:
                raise StoreError(
                    f"the index cache {path} cannot be opened ({exc})", hint="it is only a cache: delete it"
                ) from exc
            self._db = db
        return self._db

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the index cache in {self.root} is damaged ({exc})", hint="delete index.sqlite") from exc

    def _write(self, sql: str, rows: list[tuple]) -> None:
        db = self._conn()
        try:
            with db:
                db.executemany(sql, rows)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot update the index cache in {self.root}: {exc}") from exc


def read_local(path: Path, offset: int = 0) -> Iterator[bytes] | None:
    """The chunks of a local file from ``offset``, or None when it is not there (opened now, so a
    file removed later is still read whole)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the generator
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def chunks() -> Iterator[bytes]:
        with f:
            f.seek(offset)
            while chunk := f.read(1 << 16):
                yield chunk

    return chunks()


__all__ = ["Spool", "SpoolFile", "read_local", "spool_root"]
