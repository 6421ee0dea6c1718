"""Turn a project directory into a content-addressed code package.

The package is a canonical tar: the same tree gives the same bytes, hence the same
sha256, on every machine, whoever owns the files and whenever they were touched. The
sha256 is the package's identity (``<packages_dir>/<sha256>.tar``).

Two paths:

* cold: walk the tree, stream the tar into a temporary file while hashing it, rename
  it to its sha. Memory stays bounded (one 1 MiB buffer), whatever the file sizes.
* warm: walk the tree (``os.scandir`` + ``lstat``, no content read), hash the stat
  results into a *tree key*, look the key up in a small JSON cache. A hit whose tar
  still exists returns without opening a single packaged file.

Selection: ``.askannaignore`` at the root when it exists, else ``.gitignore`` files
(the root's and nested ones, each applying to its own folder as git does). ``.git``
is never packed, nor anything under an ``exclude`` path (the run store may live in
the project). Symlinks are packed as links, never followed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from .errors import ConfigError, StoreError
from .fsio import AtomicFile, atomic_write

if TYPE_CHECKING:
    import pathspec

__all__ = ["Entry", "Package", "build_package", "select_files"]

Kind = Literal["file", "dir", "symlink"]
Progress = Callable[[int, int], None]

CHUNK = 1 << 20  # read size, and how often progress is reported
FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z, in every header
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_ZEROS = bytes(_RECORD)

_CACHE_VERSION = 1
_CACHE_KEEP = 20
# Bump when the tar layout or the tree key changes: old cache entries must stop matching.
_TREE_KEY_TAG = b"anna-run package v1\0"
# A file modified within this window before the walk may be modified again within the
# same timestamp tick without its stat changing (git's "racy" entries; FAT has 2 s ticks,
# and network filesystems stamp with a server clock). Such a tree is packed but its key
# is not cached, so the next build looks again.
_RACY_WINDOW_NS = 2_000_000_000

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_ASKANNAIGNORE = ".askannaignore"
_GITIGNORE = ".gitignore"


@dataclass(frozen=True, slots=True)
class Entry:
    """One member of a package, with the stat fields the tree key is made of."""

    relpath: str  # posix, relative to the root, no leading "./"; surrogateescape'd if not UTF-8
    kind: Kind
    size: int  # bytes of a regular file; 0 otherwise
    mtime_ns: int
    ctime_ns: int
    inode: int
    mode: int  # st_mode as stat'ed (the tar normalises it)
    target: str | None = None  # a symlink's target, verbatim


@dataclass(frozen=True)
class Package:
    """A code package in ``packages_dir``."""

    sha256: str  # hex digest of the tar: the package's identity
    size: int  # bytes of the tar
    files: int  # regular files + symlinks in it
    path: Path  # <packages_dir>/<sha256>.tar
    reused: bool  # the stat cache proved the tree unchanged and its tar existed: nothing read
    skipped: tuple[str, ...] = ()  # left out: sockets, FIFOs, devices, symlinks out of the project
    warnings: tuple[str, ...] = ()  # for the user: what was left out, a cache that could not be saved


# --------------------------------------------------------------------------- selection


def select_files(
    root: Path | str,
    *,
    exclude: Iterable[Path | str] = (),
    skipped: list[str] | None = None,
) -> list[Entry]:
    """List what goes into the package of ``root``, sorted by the bytes of each relpath.

    ``exclude``: paths never packed (and not descended), e.g. a run store inside the
    project; paths outside ``root`` are ignored. ``skipped``: when given, receives the
    relpaths of sockets, FIFOs, devices and symlinks out of the root, which are left out.

    Raises ConfigError when ``root`` is not a directory, a folder cannot be listed, or
    an ignore file cannot be read.
    """
    entries, left_out = _select(root, exclude)
    if skipped is not None:
        skipped.extend(rel for rel, _ in left_out)
    return entries


def _select(root: Path | str, exclude: Iterable[Path | str]) -> tuple[list[Entry], list[tuple[str, str]]]:
    """``select_files``, with each left-out relpath and why."""
    top = os.fspath(root)
    if not os.path.isdir(top):
        raise ConfigError(f"project directory not found: {top}")
    walker = _Walker(top, _excluded_relpaths(top, exclude))
    walker.walk()
    # Byte order of the encoded name, not str order, so every platform agrees; a folder
    # sorts before its contents because it is their prefix.
    walker.entries.sort(key=lambda e: e.relpath.encode("utf-8", "surrogateescape"))
    return walker.entries, sorted(walker.left_out)


def _excluded_relpaths(top: str, exclude: Iterable[Path | str]) -> frozenset[str]:
    real_top = os.path.realpath(top)
    relpaths = set()
    for path in exclude:
        rel = os.path.relpath(os.path.realpath(path), real_top)
        if rel == os.curdir:
            raise ConfigError(f"cannot package {top}: it is also excluded (the run store?)")
        if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            relpaths.add(rel.replace(os.sep, "/"))
    return frozenset(relpaths)


class _Matcher:
    """One ignore file's patterns, relative to the folder that holds it."""

    def __init__(self, lines: list[str]) -> None:
        import pathspec  # only for a tree with ignore files: ~10 ms of a trivial run's start

        self._spec = pathspec.GitIgnoreSpec.from_lines(lines)
        self.active = any(p.include is not None for p in self._spec.patterns)
        self._quick = _quick_regex(self._spec)

    def verdict(self, path: str) -> bool | None:
        """True: ignored; False: re-included by a ``!`` pattern; None: no pattern matched."""
        # Most paths match nothing: one combined regex rules them out ~15x faster than
        # asking every pattern in turn (a 76-line Python .gitignore: 7 ms vs 110 ms for
        # 10,000 paths), which keeps the warm path within its budget.
        if self._quick is not None and self._quick.search(path) is None:
            return None
        return self._spec.check_file(path).include


_ANY_DEPTH = "^(?:.+/)?"  # how pathspec starts the regex of a pattern without a slash


def _quick_regex(spec: pathspec.GitIgnoreSpec) -> re.Pattern[str] | None:
    """A regex that matches wherever some pattern of ``spec`` matches, or None.

    Only a pre-filter: when it does not match, no pattern does (it is their alternation);
    when it does, the spec decides. Anything unexpected in pathspec's regexes disables it.
    """
    any_depth, other = [], []
    for pattern in spec.patterns:
        regex = getattr(pattern, "regex", None)
        if pattern.include is None or regex is None:
            continue
        text = regex.pattern
        if not isinstance(text, str) or regex.flags & ~re.UNICODE or re.search(r"\\\d|\(\?P=", text):
            return None  # back-references would be renumbered in the alternation
        text = re.sub(r"\(\?P<\w+>", "(?:", text)  # the same group name appears in many
        if text.startswith(_ANY_DEPTH):
            any_depth.append(text[len(_ANY_DEPTH) :])
        else:
            other.append(f"(?:{text})")
    if any_depth:
        # Sharing the "any folder" prefix is what makes it fast: the backtracking over
        # the path's folders then happens once, not once per pattern.
        other.append(f"{_ANY_DEPTH}(?:{'|'.join(any_depth)})")
    if not other:
        return None
    try:
        return re.compile("|".join(other))
    except re.error:
        return None


_Chain = tuple[tuple[str, _Matcher], ...]  # (folder prefix, matcher), root first


def _ignored(chain: _Chain, rel: str, is_dir: bool) -> bool:
    # The deepest ignore file with an opinion wins, as in git.
    for prefix, matcher in reversed(chain):
        path = rel[len(prefix) :] + "/" if is_dir else rel[len(prefix) :]
        verdict = matcher.verdict(path)
        if verdict is not None:
            return verdict
    return False


def _read_ignore_file(path: str) -> _Matcher:
    try:
        # surrogateescape: patterns must compare equal to names decoded the same way.
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return _Matcher(f.read().splitlines())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e


class _Walker:
    """Walks the tree once, keeping the stat results os.scandir already fetched."""

    def __init__(self, top: str, excluded: frozenset[str]) -> None:
        self.top = top
        self.entries: list[Entry] = []
        self.left_out: list[tuple[str, str]] = []  # (relpath, why)
        self._excluded = excluded
        askannaignore = os.path.join(top, _ASKANNAIGNORE)
        self._nested = not os.path.isfile(askannaignore)  # .gitignore files in every folder
        self._root_chain: _Chain = ()
        if not self._nested:
            matcher = _read_ignore_file(askannaignore)
            self._root_chain = (("", matcher),) if matcher.active else ()

    def walk(self) -> None:
        # A stack, not recursion: a deep tree must not hit the recursion limit.
        stack: list[tuple[str, _Chain]] = [("", self._root_chain)]
        while stack:
            reldir, chain = stack.pop()
            stack.extend(self._scan(reldir, chain))

    def _list(self, reldir: str) -> list[os.DirEntry[str]]:
        path = os.path.join(self.top, reldir) if reldir else self.top
        try:
            with os.scandir(path) as it:
                return list(it)
        except OSError as e:
            raise ConfigError(f"cannot list {path}: {e.strerror or e}") from e

    def _scan(self, reldir: str, chain: _Chain) -> list[tuple[str, _Chain]]:
        listing = self._list(reldir)
        if self._nested:
            chain = self._with_gitignore(reldir, listing, chain)
        subdirs = []
        for de in listing:
            name = de.name
            rel = reldir + name
            if name == ".git" or rel in self._excluded:
                continue
            if chain and _ignored(chain, rel, de.is_dir(follow_symlinks=False)):
                continue  # an ignored folder is not descended: git cannot re-include below it
            entry = self._entry(de, rel)
            if entry is not None:
                self.entries.append(entry)
                if entry.kind == "dir":
                    subdirs.append((rel + "/", chain))
        return subdirs

    def _with_gitignore(self, reldir: str, listing: list[os.DirEntry[str]], chain: _Chain) -> _Chain:
        for de in listing:
            # Not followed when it is a symlink: git does not follow one either.
            if de.name == _GITIGNORE and de.is_file(follow_symlinks=False):
                matcher = _read_ignore_file(de.path)
                return (*chain, (reldir, matcher)) if matcher.active else chain
        return chain

    def _entry(self, de: os.DirEntry[str], rel: str) -> Entry | None:
        try:
            st = de.stat(follow_symlinks=False)
            mode = st.st_mode
            target = os.readlink(de.path) if stat.S_ISLNK(mode) else None
        except FileNotFoundError:
            return None  # deleted while we walked: it is simply not part of this tree
        except OSError as e:
            raise ConfigError(f"cannot stat {de.path}: {e.strerror or e}") from e
        if stat.S_ISREG(mode):
            kind: Kind = "file"
        elif stat.S_ISDIR(mode):
            kind = "dir"
        elif target is not None:
            kind = "symlink"
            if _climbs_out(rel, target):
                # Followed it would read the host's files; packed, the engine refuses the whole
                # archive ("invalid symlink"). An absolute target is kept: it means a path in the
                # container, as anywhere in the package.
                self.left_out.append((rel, f"a symlink out of the project, to {target}"))
                return None
        else:
            self.left_out.append((rel, "not a file, folder or symlink: a socket, FIFO or device"))
            return None
        size = st.st_size if kind == "file" else 0
        return Entry(rel, kind, size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, mode, target)


def _climbs_out(rel: str, target: str) -> bool:
    """Whether the relative symlink at ``rel`` leads out of the project root."""
    if target.startswith("/"):
        return False
    resolved = os.path.normpath(os.path.join(os.path.dirname(rel), target))
    return resolved == os.pardir or resolved.startswith(os.pardir + os.sep)


# --------------------------------------------------------------------------- tree key


def _tree_key(entries: Iterable[Entry]) -> str:
    """Hash of everything the package depends on, as far as stat can tell.

    Folders count by name only: their mtime changes whenever an ignored file comes or
    goes (``__pycache__``, editor swap files), which must not force a repack. Every field
    ends with a NUL, which no name or link target can contain, so the encoding is
    unambiguous even for names with newlines.
    """
    parts = []
    for e in entries:
        if e.kind == "file":
            # ctime too: a content change with the mtime put back (cp -p, touch -d) still moves it.
            parts.append(f"{e.relpath}\0f\0{e.size}\0{e.mtime_ns}\0{e.ctime_ns}\0{e.inode}\0{e.mode}\0")
        elif e.kind == "symlink":
            parts.append(f"{e.relpath}\0l\0{e.target}\0")
        else:
            parts.append(f"{e.relpath}\0d\0")
    digest = hashlib.sha256(_TREE_KEY_TAG)
    digest.update("".join(parts).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _racy(entries: Iterable[Entry], started_ns: int) -> bool:
    limit = started_ns - _RACY_WINDOW_NS
    return any(e.mtime_ns >= limit or e.ctime_ns >= limit for e in entries if e.kind != "dir")


# --------------------------------------------------------------------------- canonical tar


def _header(e: Entry) -> bytes:
    info = tarfile.TarInfo(e.relpath)
    info.mtime = FIXED_MTIME  # an int: a float would add a pax "mtime" record
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if e.kind == "dir":
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    elif e.kind == "symlink":
        info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, e.target or ""
    else:
        info.size = e.size
        info.mode = 0o755 if e.mode & 0o111 else 0o644
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _header_len(e: Entry) -> int:
    # tarfile needs a pax header only for long or non-ASCII names/targets or sizes of 8 GiB
    # and more; building just those headers keeps the size estimate cheap.
    name_len = len(e.relpath) + (e.kind == "dir")
    target = e.target or ""
    plain = (e.relpath.isascii() and name_len <= 100 and target.isascii() and len(target) <= 100) and e.size < 8**11
    return _BLOCK if plain else len(_header(e))


def _padding(size: int) -> int:
    return -size % _BLOCK


def _tar_size(entries: Iterable[Entry]) -> int:
    """Bytes of the canonical tar of ``entries`` (what progress counts towards)."""
    total = sum(_header_len(e) + e.size + _padding(e.size) for e in entries) + 2 * _BLOCK
    return total + (-total % _RECORD)


def _open_member(path: str) -> int:
    # O_NOFOLLOW: a file swapped for a symlink since the walk must not be followed (to
    # /etc/passwd, say). O_NONBLOCK: one swapped for a FIFO must not hang the open.
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


_UNREADABLE_HINT = "make it readable, or list it in .askannaignore / .gitignore"


def _copy_member(path: str, size: int, out: _HashingWriter, buf: memoryview) -> None:
    """Write exactly ``size`` bytes of the file at ``path``, as stat'ed during the walk.

    A file that shrank since is an error (its header already promised ``size`` bytes).
    One that grew is packed as it was, its first ``size`` bytes: a log being appended
    to still packs, and its new stat makes the next build repack it.
    """
    fd = _open_regular(path)
    try:
        remaining = size
        while remaining:
            n = _read_into(fd, buf[: min(remaining, len(buf))], path)
            if n == 0:
                raise ConfigError(f"file changed while packaging: {path}")
            # Outside the read's try: a full disk is the store's failure, not the project's.
            out.write(buf[:n])
            remaining -= n
    finally:
        os.close(fd)


def _open_regular(path: str) -> int:
    try:
        fd = _open_member(path)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}", hint=_UNREADABLE_HINT) from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"file changed while packaging: {path}")
    return fd


def _read_into(fd: int, view: memoryview, path: str) -> int:
    try:
        return os.readv(fd, [view])
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}", hint=_UNREADABLE_HINT) from e


class _HashingWriter:
    """Hashes and counts exactly the bytes handed to the file, so the digest is the tar's."""

    def __init__(self, raw: BinaryIO, progress: Progress | None, total: int) -> None:
        self.sha256 = hashlib.sha256()
        self.count = 0
        self._raw = raw
        self._progress = progress
        self._total = total
        self._next_report = CHUNK

    def write(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        self._raw.write(data)
        self.count += len(data)
        if self._progress is not None and self.count >= self._next_report:
            self._progress(self.count, max(self.count, self._total))
            self._next_report = self.count + CHUNK


def _write_tar(entries: Iterable[Entry], root: Path | str, out: _HashingWriter) -> None:
    """Write the canonical tar of ``entries`` (from :func:`select_files`) to ``out``.

    tarfile builds each header; the rest is written here, the way TarFile.addfile and
    close do it, because TarFile's stream mode re-slices its buffer for every 10 KiB
    (quadratic on 1 MiB writes) and keeps every member in memory.
    """
    top = os.fspath(root)
    buf = memoryview(bytearray(CHUNK))
    for e in entries:
        out.write(_header(e))
        if e.kind == "file" and e.size:
            _copy_member(os.path.join(top, e.relpath), e.size, out, buf)
            out.write(_ZEROS[: _padding(e.size)])
    out.write(_ZEROS[: 2 * _BLOCK])  # end-of-archive
    out.write(_ZEROS[: -out.count % _RECORD])  # tarfile pads the archive to whole records


# --------------------------------------------------------------------------- packages


def build_package(
    root: Path | str,
    packages_dir: Path | str,
    *,
    cache_file: Path | str | None = None,
    exclude: Iterable[Path | str] = (),
    progress: Progress | None = None,
) -> Package:
    """Package ``root`` into ``packages_dir/<sha256>.tar`` and return it.

    ``cache_file``: JSON stat cache (tree key -> sha256); when it proves the tree
    unchanged and the tar exists, nothing is read (``reused=True``). A corrupt or
    unreadable cache is ignored. ``exclude``: paths never packed (``packages_dir`` and
    ``cache_file`` are always excluded). ``progress(done, total)``: tar bytes, called
    every MiB or so and once at the end with ``done == total == size``.

    Nothing is logged: what the user should hear (files left out, a cache that could not
    be saved) is in the returned package's ``warnings``, for the caller's reporter.

    Raises ConfigError for what is wrong with the project (unreadable file, file
    changed while packaging), StoreError when ``packages_dir`` cannot be written.
    """
    packages = Path(packages_dir)
    cache_path = Path(cache_file) if cache_file is not None else None
    excluded = [*exclude, packages, *([cache_path] if cache_path else [])]
    started_ns = time.time_ns()
    entries, left_out = _select(root, excluded)
    skipped = tuple(rel for rel, _ in left_out)
    warnings = [f"not in the code package: {rel} ({why})" for rel, why in left_out]
    key = _tree_key(entries)
    files = sum(e.kind != "dir" for e in entries)
    cache = _load_cache(cache_path) if cache_path else {}
    hit = _existing_package(packages, cache.get(key))
    if hit is not None:
        sha, size = hit
        if progress is not None:
            progress(size, size)
        return Package(sha, size, files, packages / f"{sha}.tar", True, skipped, tuple(warnings))
    sha, size = _write_package(entries, root, packages, progress)
    if cache_path is not None and not _racy(entries, started_ns):
        warning = _save_cache(cache_path, cache, key, sha)
        if warning is not None:
            warnings.append(warning)
    return Package(sha, size, files, packages / f"{sha}.tar", False, skipped, tuple(warnings))


def _existing_package(packages: Path, sha: str | None) -> tuple[str, int] | None:
    if sha is None:
        return None
    try:
        st = os.stat(packages / f"{sha}.tar")
    except OSError:
        return None
    return (sha, st.st_size) if stat.S_ISREG(st.st_mode) else None


def _write_package(
    entries: list[Entry], root: Path | str, packages: Path, progress: Progress | None
) -> tuple[str, int]:
    # Named after its sha256, known once written: the target is set at the end of the block.
    target = AtomicFile(packages / "package.tar", perms=0o600, buffering=CHUNK)
    try:
        with target as raw:
            out = _HashingWriter(raw, progress, _tar_size(entries))
            _write_tar(entries, root, out)
            sha = out.sha256.hexdigest()
            target.path = packages / f"{sha}.tar"
            if target.path.exists():
                target.discard()  # the same bytes are already there (content addressing)
    except OSError as e:
        raise StoreError(f"cannot write package to {packages}: {e.strerror or e}") from e
    if progress is not None:
        progress(out.count, out.count)
    return sha, out.count


# --------------------------------------------------------------------------- stat cache


def _load_cache(path: Path) -> dict[str, str]:
    """Tree key -> sha256, oldest first. Anything unreadable counts as an empty cache."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    trees = data.get("trees") if isinstance(data, dict) and data.get("version") == _CACHE_VERSION else None
    if not isinstance(trees, dict):
        return {}
    # A sha becomes a file name: never trust one that is not exactly hex.
    return {k: v for k, v in trees.items() if isinstance(v, str) and _SHA_RE.fullmatch(v)}


def _save_cache(path: Path, cache: dict[str, str], key: str, sha: str) -> str | None:
    """Save the cache with ``key`` newest; a warning for the user when it cannot be."""
    trees = {k: v for k, v in cache.items() if k != key}
    trees[key] = sha  # newest last; the oldest are dropped
    keep = dict(list(trees.items())[-_CACHE_KEEP:])
    text = json.dumps({"version": _CACHE_VERSION, "trees": keep}, indent=1)
    try:
        atomic_write(path, text, perms=0o600)
    except OSError as e:
        # Only an optimisation: the package itself is written, the next build walks again.
        return f"cannot update the package cache {path}: {e.strerror or e}"
    return None


def owned_copy(path: Path, *, uid: int, gid: int, prefix: str, before: bytes = b"") -> Iterator[bytes]:
    """The package at ``path`` as a tar stream whose members live under ``prefix/`` (a folder
    entry first) and belong to ``uid:gid``: the job's user owns its copy of the code, whoever it
    is, with no chown in the container. ``before``: tar members sent first (no end blocks).
    Streamed: headers are rewritten, contents copied in 1 MiB chunks."""
    yield before
    top = tarfile.TarInfo(prefix)
    top.type, top.mode, top.uid, top.gid, top.mtime = tarfile.DIRTYPE, 0o755, uid, gid, 946684800
    yield top.tobuf(format=tarfile.PAX_FORMAT)
    with tarfile.open(path) as tar:
        for member in tar:
            member.name = f"{prefix}/{member.name}"
            if member.islnk():  # a hard link names its target by its path in the archive
                member.linkname = f"{prefix}/{member.linkname}"
            member.uid, member.gid, member.uname, member.gname = uid, gid, "", ""
            yield member.tobuf(format=tarfile.PAX_FORMAT)
            if member.isreg() and member.size:
                source = tar.extractfile(member)
                assert source is not None
                while chunk := source.read(1 << 20):
                    yield chunk
                yield b"\0" * ((512 - member.size % 512) % 512)
    yield b"\0" * 1024
