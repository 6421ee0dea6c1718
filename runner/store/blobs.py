"""`anna-run gc --blobs`: which packages and payloads a store may drop.

A blob (a code package or a payload, by content) is kept while any run record in the store names
it, and while it is younger than the grace period, referenced or not: a run being staged right
now has put its package in the store but not yet written the record that names it (the stores
touch a blob they reuse, so an old package that a new run picks up is young again). The blobs
are listed *before* the records are read, so a record written meanwhile is seen.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from ..record import RunRecord

BLOB_NAME = re.compile(r"^(?P<sha>[0-9a-f]{64})\.(?P<ext>tar|json)$")
KINDS = {"tar": "package", "json": "payload"}


@dataclass(frozen=True)
class Blob:
    kind: str  # package or payload
    sha256: str
    size: int
    modified: float  # seconds since the epoch
    where: str  # a path or an object key, for messages

    def item(self) -> dict[str, object]:
        """What `gc` lists for it."""
        return {"kind": self.kind, "name": self.sha256[:12], "sha256": self.sha256, "size": self.size}


def parse_blob_name(name: str) -> tuple[str, str] | None:
    """(kind, sha256) of a blob's file or key name; None for anything else (a temporary file)."""
    m = BLOB_NAME.match(name)
    return (KINDS[m["ext"]], m["sha"]) if m else None


def referenced(records: Iterable[RunRecord]) -> set[tuple[str, str]]:
    """(kind, sha256) of every package and payload the records name."""
    refs: set[tuple[str, str]] = set()
    for record in records:
        if record.package is not None:
            refs.add(("package", record.package.sha256))
        if record.payload is not None:
            refs.add(("payload", record.payload.sha256))
    return refs


def unused(blobs: Iterable[Blob], refs: set[tuple[str, str]], cutoff: float) -> list[Blob]:
    """The blobs no record names and older than ``cutoff`` (seconds since the epoch)."""
    return [b for b in blobs if (b.kind, b.sha256) not in refs and b.modified < cutoff]


def touch(path: Path) -> None:
    """Mark a blob as just used (its mtime), so `gc --blobs` keeps it for the grace period."""
    with contextlib.suppress(OSError):
        os.utime(path)


def local_blobs(*folders: Path) -> list[Blob]:
    """The packages and payloads in ``folders`` (what is named like one; temporary files aside)."""
    blobs = []
    for folder in folders:
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(folder):
                parsed = parse_blob_name(entry.name)
                if parsed is None or not entry.is_file(follow_symlinks=False):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat(follow_symlinks=False)
                    blobs.append(Blob(parsed[0], parsed[1], st.st_size, st.st_mtime, entry.path))
    return blobs


def remove_local(blobs: list[Blob], cutoff: float, dry_run: bool) -> list[dict]:
    """Remove the blob files, each only if it was not used since it was listed."""
    removed = []
    for blob in blobs:
        path = Path(blob.where)
        if not dry_run:
            try:
                if path.stat().st_mtime >= cutoff:  # a run picked it up meanwhile
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot remove {path}: {exc.strerror or exc}") from exc
        removed.append({**blob.item(), "where": str(path)})
    return removed
