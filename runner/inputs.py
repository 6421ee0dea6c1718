"""Lineage: earlier runs whose outputs a job reads (``input: {runs: [...]}``, ``--input-run``).

Each input run's result and artifacts are put read-only at ``/input/runs/<RUN>/result/...`` and
``/input/runs/<RUN>/artifacts/...`` before the job starts: streamed from the store (local or
S3) through the archive API into the run's read-only input volume, beside the payload. The
record lists the inputs, and ``rerun`` repeats them.
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from .errors import AnnaRunError, ConfigError, NotFound
from .record import FileInfo, InputRun, RunRecord

if TYPE_CHECKING:
    from .store.base import Store

MTIME = 946684800
# What a run reference may look like: an id or an id prefix (no paths, no spaces).
RUN_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


def check_refs(refs: Iterable[str], *, where: str) -> tuple[str, ...]:
    """The input run references, checked for their shape (the store is asked later)."""
    checked = []
    for ref in refs:
        if not RUN_REF.fullmatch(ref):
            raise ConfigError(f"{where}: input run {ref!r} is not a run id")
        checked.append(ref)
    return tuple(dict.fromkeys(checked))


def resolve_inputs(store: Store, refs: tuple[str, ...]) -> tuple[RunRecord, ...]:
    """The records of the input runs; ConfigError (exit 2) for a run the store does not have,
    cannot read, or that has not finished."""
    found: dict[str, RunRecord] = {}
    for ref in refs:
        try:
            record = store.get(ref)
        except NotFound:
            raise ConfigError(f"input run {ref!r}: no such run in the store {store.location}") from None
        except AnnaRunError as exc:
            raise ConfigError(f"input run {ref!r} cannot be read: {exc.message}") from None
        if not record.is_final:
            raise ConfigError(f"input run {record.id} has not finished yet (it is {record.status})")
        found.setdefault(record.id, record)
    return tuple(found.values())


def input_refs(records: tuple[RunRecord, ...]) -> tuple[InputRun, ...]:
    return tuple(InputRun(run=r.id, job=r.job, status=r.status) for r in records)


def input_members(store: Store, records: tuple[RunRecord, ...]) -> Iterator[bytes]:
    """Tar members (no end blocks) of each run's result and artifacts under ``runs/<id>/``,
    read-only, streamed from the store a chunk at a time."""
    made: set[str] = set()
    for record in records:
        files = [("result", record.result)] if record.result else []
        files += [("artifacts", info) for info in record.artifacts]
        yield from _folder(f"runs/{record.id}", made)
        for kind, info in files:
            yield from _file(store, record, kind, info, made)


def _folder(path: str, made: set[str]) -> Iterator[bytes]:
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        name = "/".join(parts[:i])
        if name in made:
            continue
        made.add(name)
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o555, MTIME
        yield info.tobuf(format=tarfile.PAX_FORMAT)


def _file(store: Store, record: RunRecord, kind: str, info: FileInfo, made: set[str]) -> Iterator[bytes]:
    name = f"runs/{record.id}/{kind}/{info.path}"
    yield from _folder(posixpath.dirname(name), made)
    header = tarfile.TarInfo(name)
    header.size, header.mode, header.mtime = info.size, 0o444, MTIME
    yield header.tobuf(format=tarfile.PAX_FORMAT)
    sent = 0
    try:
        for chunk in store.iter_file(record.id, f"{kind}/{info.path}"):
            sent += len(chunk)
            if sent > info.size:
                break
            yield chunk
    except NotFound:
        raise ConfigError(f"input run {record.id}: its {kind} file {info.path} is not in the store") from None
    if sent != info.size:
        raise ConfigError(f"input run {record.id}: its {kind} file {info.path} is not the size its record says")
    yield b"\0" * ((512 - info.size % 512) % 512)
