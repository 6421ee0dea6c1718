"""Files replaced whole: a reader sees the old file or the new one, never a part of either.

Every such write in anna-run goes through here, with one policy:

* the bytes go to a temp file in the target's own folder (a rename is only atomic within one
  filesystem), named ``.tmp-<random>``: created exclusively, so it never clobbers anything;
* the temp file is flushed and fsynced, then renamed over the target (``os.replace``), then
  the folder is fsynced: the rename is only durable once the folder entry is on disk. After a
  crash at any point the target is the old file or the new one, whole;
* on any error (or Ctrl-C) before the rename, the temp file is removed and the target is
  untouched.

``perms``: the new file's permission bits, exactly; None gives what ``open()`` would (0o666
less the umask).

``durable=False`` keeps the atomic rename and skips the two fsyncs: for the outputs collected
from a job's container, which may be 100,000 small files (two fsyncs each cost minutes). They
are named by the run's record, which is written after them and is durable.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

__all__ = ["TEMP_PREFIX", "AtomicFile", "atomic_copy", "atomic_write", "fsync_folder"]

TEMP_PREFIX = ".tmp-"  # readers of a folder being written skip these names
_COPY_CHUNK = 1 << 20


class AtomicFile:
    """A binary file that replaces ``path`` when the ``with`` block ends without an error.

    ``with AtomicFile(path) as f: f.write(...)``. ``buffering`` is passed to ``open()``.

    ``path`` may be changed inside the block, for a file named after its own content (known
    once it is written); ``discard()`` ends the block without touching any target (the same
    content is there already). Raises OSError as the underlying calls do.
    """

    def __init__(
        self, path: Path | str, *, perms: int | None = None, buffering: int = -1, durable: bool = True
    ) -> None:
        self.path = Path(path)
        self.durable = durable
        self.perms = perms
        self.buffering = buffering
        self.tmp: Path | None = None  # the temp file, while the block runs
        self._file: BinaryIO | None = None
        self._discard = False

    def __enter__(self) -> BinaryIO:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        mode = 0o666 if self.perms is None else 0o600

        def opener(path: str, flags: int) -> int:
            return os.open(path, flags | os.O_CLOEXEC, mode)

        # The file object owns the descriptor from its creation: an interrupt (Ctrl-C) at any
        # instant leaves one owner to close it, never a second close of a number that may
        # already be gone (that was "Bad file descriptor" in place of "cancelled").
        while True:
            self.tmp = folder / f"{TEMP_PREFIX}{secrets.token_hex(6)}"
            try:
                self._file = open(self.tmp, "xb", buffering=self.buffering, opener=opener)
                break
            except FileExistsError:
                self.tmp = None  # another's file: never removed
            except BaseException:
                self._remove_tmp()
                raise
        try:
            if self.perms is not None:
                os.fchmod(self._file.fileno(), self.perms)
        except BaseException:
            self._file.close()
            self._file = None
            self._remove_tmp()
            raise
        return self._file

    def discard(self) -> None:
        """Drop what was written: the block's end removes the temp file and leaves every target."""
        self._discard = True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._file is not None and self.tmp is not None
        try:
            if exc_type is None and not self._discard:
                self._file.flush()
                if self.durable:
                    os.fsync(self._file.fileno())
            self._file.close()
            if exc_type is None and not self._discard:
                os.replace(self.tmp, self.path)
                self.tmp = None
                if self.durable:
                    fsync_folder(self.path.parent)
        finally:
            self._file = None
            self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = None


def atomic_write(path: Path | str, data: bytes | str, *, perms: int | None = None) -> None:
    """Replace ``path`` with ``data`` (a str is written as UTF-8), as described above."""
    with AtomicFile(path, perms=perms) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def atomic_copy(src: Path | str, dst: Path | str, *, perms: int | None = None) -> None:
    """Replace ``dst`` with a copy of the file ``src`` (symlinks followed), as described above."""
    with open(src, "rb") as inp, AtomicFile(dst, perms=perms) as out:
        shutil.copyfileobj(inp, out, _COPY_CHUNK)


def fsync_folder(folder: Path | str) -> None:
    """Make the entries of ``folder`` (a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
