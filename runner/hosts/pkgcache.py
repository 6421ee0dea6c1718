"""A runner host's copies of code packages and their extracted trees, by sha256, bounded in size.

A package comes from the shared store once per host. The cache is kept under
``ANNA_RUN_WORKER_CACHE_MB`` (default 4096) by dropping the least recently used packages (the tar
and its tree together). A run holds its package *in use* (a shared ``flock`` on its lock file,
whose mtime is the last use) from its preparation to its end; trimming takes the lock
exclusively, without waiting, and skips what it cannot take: a run never loses its code, whether
the trimming is done by another run of the worker or by `anna-run gc --blobs`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, NotFound, StoreError
from ..fsio import atomic_copy, atomic_write

if TYPE_CHECKING:
    from ..store.base import Store

DEFAULT_MB = 4096
_SHA = re.compile(r"^[0-9a-f]{64}$")


def default_cache() -> Path:
    env = os.environ.get("ANNA_RUN_WORKER_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "anna-run" / "worker"


def cache_bound() -> int:
    """The cache's bound in bytes (``ANNA_RUN_WORKER_CACHE_MB``)."""
    raw = os.environ.get("ANNA_RUN_WORKER_CACHE_MB", "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_MB
    except ValueError:
        mb = -1
    if mb < 0:
        raise ConfigError(f"ANNA_RUN_WORKER_CACHE_MB={raw!r}: give a number of MB, 0 or more")
    return int(mb * 1024 * 1024)


@dataclass(frozen=True)
class Entry:
    sha256: str
    size: int  # the tar and its tree
    used: float  # last use, seconds since the epoch


class PackageCache:
    """This host's copies of code packages (and their extracted trees), by sha256."""

    def __init__(self, root: Path, bound: int | None = None) -> None:
        self.root = root
        self.bound = cache_bound() if bound is None else bound

    @contextlib.contextmanager
    def in_use(self, sha256: str) -> Iterator[None]:
        """Hold the package: no trimming removes it meanwhile; marks it as just used."""
        lock = self._lock_file(sha256)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a trim removes it (then it is fetched again)
            os.utime(fd)
            yield
        finally:
            os.close(fd)  # releases the lock

    def package(self, store: Store, sha256: str) -> Path:
        dest = self.root / "packages" / f"{sha256}.tar"
        if dest.is_file():
            return dest
        src = store.package_path(sha256)  # S3: downloaded (and checked) first
        if not src.is_file():
            raise NotFound(f"code package {sha256[:12]} is not in the store {store.location}")
        _copy_verified(src, dest, sha256)
        return dest

    def tree(self, sha256: str, package: Path) -> Path:
        """The package extracted (once): the project root of the run on this host, so a job that
        builds its image from the project has its build context."""
        dest = self.root / "trees" / sha256
        if dest.is_dir():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
        try:
            with tarfile.open(package) as tar:
                tar.extractall(tmp, filter="data")  # nothing outside tmp, no devices
                size = sum(m.size for m in tar.getmembers() if m.isfile())
            atomic_write(dest.parent / f"{sha256}.size", str(size))
            os.replace(tmp, dest)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not dest.is_dir():  # another process of this worker won the race: fine
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest

    # -- the bound -------------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """What the cache holds, least recently used first."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root / "packages"):
                sha = entry.name.removesuffix(".tar")
                if not entry.name.endswith(".tar") or not _SHA.match(sha):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    tar_size = entry.stat().st_size
                    found.append(Entry(sha, tar_size + self._tree_size(sha, tar_size), self._last_use(sha)))
        return sorted(found, key=lambda e: e.used)

    def trim(self, *, dry_run: bool = False) -> list[dict]:
        """Drop least recently used packages not in use until the cache fits its bound; returns
        what went (or would go)."""
        entries = self.entries()
        total = sum(e.size for e in entries)
        removed = []
        for entry in entries:
            if total <= self.bound:
                break
            if dry_run or self._remove(entry.sha256):
                total -= entry.size
                where = str(self.root / "packages" / f"{entry.sha256}.tar")
                item = {"kind": "cached package", "name": entry.sha256[:12], "sha256": entry.sha256}
                removed.append({**item, "size": entry.size, "where": where})
        return removed

    def _remove(self, sha256: str) -> bool:
        """Remove one package and its tree unless a run holds it; True when removed."""
        fd = os.open(self._lock_file(sha256), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # in use
            with contextlib.suppress(FileNotFoundError):
                (self.root / "packages" / f"{sha256}.tar").unlink()
            tree = self.root / "trees" / sha256
            if tree.is_dir():
                gone = tree.with_name(f".gone-{sha256}-{os.getpid()}")
                os.replace(tree, gone)  # at once: a reader sees the whole tree or none
                shutil.rmtree(gone, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (self.root / "trees" / f"{sha256}.size").unlink()
            return True
        except OSError as exc:
            raise StoreError(f"cannot trim the worker cache {self.root}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)

    def _lock_file(self, sha256: str) -> Path:
        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{sha256}.lock"

    def _last_use(self, sha256: str) -> float:
        for path in (self.root / "locks" / f"{sha256}.lock", self.root / "packages" / f"{sha256}.tar"):
            with contextlib.suppress(FileNotFoundError):
                return path.stat().st_mtime
        return 0.0

    def _tree_size(self, sha256: str, tar_size: int) -> int:
        try:
            return int((self.root / "trees" / f"{sha256}.size").read_text())
        except (OSError, ValueError):
            return tar_size if (self.root / "trees" / sha256).is_dir() else 0


def trim_default_cache(*, dry_run: bool = False) -> list[dict]:
    """`gc --blobs` on a runner host: its worker cache (if any) trimmed to its bound."""
    root = default_cache()
    if not (root / "packages").is_dir():
        return []
    return PackageCache(root).trim(dry_run=dry_run)


def _copy_verified(src: Path, dest: Path, sha256: str) -> None:
    if _sha256(src) != sha256:
        raise StoreError(f"code package {sha256[:12]} in the store is damaged (its sha256 differs)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)  # the same filesystem (an S3 store's spool, a local folder): no copy
        return
    except FileExistsError:
        return
    except OSError:
        pass
    atomic_copy(src, dest, perms=0o600)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
