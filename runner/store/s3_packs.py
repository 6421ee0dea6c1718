"""Index packs: one object holding many ``index/`` records, so that a listing with a cold cache
reads a few objects instead of one per run.

    index-packs/<13 digits>-<sha256, 16 hex>.jsonl.gz      the digits count down: newest first

Each line is ``{"key": ..., "etag": ..., "text": ...}``: an index object's key, the ETag it had
when it was packed, and its text. A pack is a cache, never the truth: a listing takes a line
only when the LIST it has just made shows that key with that same ETag, and reads every other
run's index object on its own. A pack can therefore be stale, vanish under a reader, or be
written twice by two hosts at once without a single run listed wrong.

Who writes one (``S3Store.pack_index``): a whole-store listing that had to read at least
``REPACK_AFTER`` index objects one by one, ``runs --reindex``, and about one finished run in
``PACK_EVERY``, so that a store written by anna-run lists fast on a new machine even when
nobody listed it before. The writer keeps the newest ``KEPT`` packs and removes the rest.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from typing import BinaryIO

from ..errors import StoreError
from .s3_bucket import Bucket

PACK_EVERY = 50  # about one finished run in this many packs the index
REPACK_AFTER = 100  # a whole listing that read this many index objects one by one packs them
USE_FROM = 20  # fewer index objects to read than this: read them, a pack would not pay
KEPT = 2  # packs kept: a reader that listed the one before the newest can still read it
_SUFFIX = ".jsonl.gz"


def pack_turn(run_id: str) -> bool:
    """Whether the run ``run_id`` packs the index when it ends (about one in PACK_EVERY)."""
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16) % PACK_EVERY == 0


def read_pack(bucket: Bucket, folder: str, wanted: dict[str, str]) -> dict[str, tuple[str, str]]:
    """key -> (etag, text) for the keys of ``wanted`` (key -> ETag just listed) that the newest
    readable pack under ``folder`` holds with the same ETag. A pack that vanished or is damaged
    is passed over for the one before it; no pack at all gives ``{}``."""
    for key in sorted(bucket.list_keys(folder))[:KEPT]:
        if not key.endswith(_SUFFIX):
            continue
        with contextlib.suppress(StoreError, OSError, EOFError, ValueError):
            found = _entries(bucket, key, wanted)
            if found is not None:
                return found
    return {}


def _entries(bucket: Bucket, key: str, wanted: dict[str, str]) -> dict[str, tuple[str, str]] | None:
    chunks = bucket.stream(key)
    if chunks is None:  # removed by a newer writer since the LIST
        return None
    with tempfile.TemporaryFile() as raw:
        for chunk in chunks:  # checked against its sha256 at the end
            raw.write(chunk)
        raw.seek(0)
        found: dict[str, tuple[str, str]] = {}
        with gzip.GzipFile(fileobj=raw, mode="rb") as lines:
            for line in lines:
                entry = json.loads(line)
                name, etag, text = entry.get("key"), entry.get("etag"), entry.get("text")
                if isinstance(text, str) and name in wanted and wanted[name] == etag:
                    found[name] = (etag, text)
    return found


def write_pack(bucket: Bucket, folder: str, entries: Iterable[tuple[str, str, str]]) -> int:
    """Put one pack of ``entries`` (key, etag, text) under ``folder``, then remove all but the
    newest KEPT packs; returns the number of entries packed."""
    count = 0
    digest = hashlib.sha256()
    with tempfile.TemporaryFile() as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as out:
            for key, etag, text in entries:
                out.write(json.dumps({"key": key, "etag": etag, "text": text}, separators=(",", ":")).encode() + b"\n")
                count += 1
        size = raw.tell()
        raw.seek(0)
        for block in iter(lambda: raw.read(1 << 16), b""):
            digest.update(block)
        sha = digest.hexdigest()
        stamp = 9_999_999_999_999 - int(time.time() * 1000)
        name = f"{folder}{stamp:013d}-{sha[:16]}{_SUFFIX}"

        def reopen() -> BinaryIO:  # a file of its own for each try, closed by ``put``
            again = os.fdopen(os.dup(raw.fileno()), "rb")
            again.seek(0)
            return again

        bucket.put(name, reopen, size, sha, None, "application/gzip")
    for old in sorted(bucket.list_keys(folder))[KEPT:]:
        with contextlib.suppress(StoreError):
            bucket.remove(old)
    return count
