"""Result and artifacts out of the stopped container, through the archive API, streamed,
and never along a path that leaves the workspace.

Each declared path is resolved one component at a time with the engine's stat: a symlink is
followed only while its target stays inside ``/code``; anything else is refused, never read.
Inside a collected folder, a symlink is kept as a link when it points inside the folder's
workspace and refused otherwise; hard links are copied; devices and FIFOs are skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import StoreError
from .fsio import AtomicFile
from .record import FileInfo
from .sandbox import IterStream, Sandbox, is_dir, is_symlink
from .script import WORKDIR

if TYPE_CHECKING:
    from .store.base import RunFiles

MAX_LINK_HOPS = 40
CHUNK = 1 << 20
BACKGROUND_MIN = 8 * CHUNK  # files from this size are written while the next chunk arrives
QUEUED = 8
GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass
class Collected:
    result: FileInfo | None = None
    result_missing: bool = False
    result_problem: str | None = None
    artifacts: list[FileInfo] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class Refused(Exception):
    """A declared path that would leave the workspace."""


def collect(
    sandbox: Sandbox,
    files: RunFiles,
    *,
    result: str | None,
    artifacts: tuple[str, ...],
    progress: Callable[[int], None] | None = None,
) -> Collected:
    """Copy the declared outputs into the run's files (its ``result`` and ``artifacts``).

    All or nothing: when the copy cannot finish (the store is full or read-only, the engine
    went away, Ctrl-C), what was written is removed again and the error raised, so the store
    never holds outputs its record does not list. Raises StoreError for a local write that
    failed, EngineError for the engine."""
    out = Collected()
    try:
        if result:
            _collect_result(sandbox, files.output_folder("result"), result, out, progress)
        for pattern in artifacts:
            if GLOB_CHARS.search(pattern):
                _collect_glob(sandbox, files.output_folder("artifacts"), pattern, out, progress)
            else:
                _collect_path(sandbox, files.output_folder("artifacts"), pattern, out, progress)
    except BaseException as exc:
        files.discard_outputs()
        if isinstance(exc, OSError):  # the engine's read errors arrive as EngineError, so this is ours
            raise StoreError(f"cannot write the run's outputs into {files.where}: {exc.strerror or exc}") from None
        raise
    out.artifacts.sort(key=lambda f: f.path)
    return out


def resolve(sandbox: Sandbox, relpath: str) -> tuple[list[str], dict] | None:
    """The workspace-relative components ``relpath`` leads to, and the final stat; None when
    it does not exist. Raises Refused when a step (``..`` or a symlink) leaves the workspace."""
    queue = [p for p in relpath.split("/") if p not in ("", ".")]
    current: list[str] = []
    hops = 0
    stat: dict = {"mode": 1 << 31}
    while queue:
        part = queue.pop(0)
        if part == "..":
            if not current:
                raise Refused(f"{relpath}: leaves the workspace")
            current.pop()
            continue
        stat = sandbox.stat(posixpath.join(WORKDIR, *current, part))
        if stat is None:
            return None
        if "error" in stat:
            raise Refused(f"{relpath}: cannot be resolved safely (symlink loop?)")
        if is_symlink(stat):
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise Refused(f"{relpath}: too many symlinks (a loop?)")
            target = stat.get("linkTarget") or ""
            if target.startswith("/"):
                if target != WORKDIR and not target.startswith(WORKDIR + "/"):
                    raise Refused(f"{relpath}: a symlink points out of the workspace ({target})")
                current = []
                target = target[len(WORKDIR) :]
            queue = [p for p in target.split("/") if p not in ("", ".")] + queue
            continue
        current.append(part)
    return current, stat


def _collect_result(sandbox: Sandbox, dest_root: Path, relpath: str, out: Collected, progress) -> None:
    try:
        found = resolve(sandbox, relpath)
    except Refused as exc:
        out.refused.append(str(exc))
        out.result_problem = f"result refused: {exc}"
        return
    if found is None:
        out.result_missing = True
        return
    parts, stat = found
    if is_dir(stat):
        out.result_problem = f"result is a folder, not a file: {relpath}"
        return
    files = _extract(sandbox, "/".join(parts), dest_root, clean_relpath(relpath), out, progress)
    if files:
        out.result = files[0]


def _collect_path(sandbox: Sandbox, dest_root: Path, relpath: str, out: Collected, progress) -> None:
    try:
        found = resolve(sandbox, relpath)
    except Refused as exc:
        out.refused.append(str(exc))
        return
    if found is None:
        out.missing.append(relpath)
        return
    parts, _ = found
    out.artifacts.extend(_extract(sandbox, "/".join(parts), dest_root, clean_relpath(relpath), out, progress))


def _collect_glob(sandbox: Sandbox, dest_root: Path, pattern: str, out: Collected, progress) -> None:
    pattern = clean_relpath(pattern)
    parts = pattern.split("/")
    static = []
    for part in parts:
        if GLOB_CHARS.search(part):
            break
        static.append(part)
    base = "/".join(static)
    try:
        found = resolve(sandbox, base) if base else ([], {"mode": 1 << 31})
    except Refused as exc:
        out.refused.append(str(exc))
        return
    if found is None or not is_dir(found[1]):
        out.missing.append(pattern)
        return
    matcher = re.compile(glob_to_regex(pattern))
    resolved = "/".join(found[0])
    files = _extract(sandbox, resolved, dest_root, base, out, progress, select=matcher.fullmatch)
    if not files:
        out.missing.append(pattern)
    out.artifacts.extend(files)


def glob_to_regex(pattern: str) -> str:
    """``*`` and ``?`` stay within one path component, ``**`` spans any; a match of a folder
    takes everything under it."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            bracket, i = _bracket(pattern, i)
            out.append(bracket)
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out) + "(?:/.*)?"


def _bracket(pattern: str, start: int) -> tuple[str, int]:
    """A ``[...]`` class at ``start`` as a regex that never matches ``/``, and the index after it;
    an unusable bracket (unclosed, empty, a reversed range) is a literal ``[``, as in fnmatch."""
    end = pattern.find("]", start + 2 if pattern[start + 1 : start + 2] in ("!", "^") else start + 1)
    if end == -1 or end == start + 1:
        return re.escape("["), start + 1
    body = pattern[start + 1 : end]
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    if not body:
        return re.escape("["), start + 1
    body = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
    regex = f"[^/{body}]" if negate else f"(?!/)[{body}]"
    try:
        re.compile(regex)
    except re.error:
        return re.escape("["), start + 1
    return regex, end + 1


def clean_relpath(relpath: str) -> str:
    clean = posixpath.normpath(relpath.strip("/") or ".")
    return "" if clean == "." else clean


def _extract(
    sandbox: Sandbox,
    source: str,
    dest_root: Path,
    declared: str,
    out: Collected,
    progress,
    select: Callable[[str], object] | None = None,
) -> list[FileInfo]:
    """Stream the archive of ``/code/<source>`` and write its members under
    ``dest_root/<declared>``; returns the files written (workspace-relative declared paths)."""
    files: list[FileInfo] = []
    place = _Place(dest_root)
    stream = sandbox.get_archive(posixpath.join(WORKDIR, source) if source else WORKDIR)
    with _closing(stream), tarfile.open(fileobj=IterStream(stream), mode="r|", errorlevel=1, bufsize=CHUNK) as tar:
        while (member := tar.next()) is not None:
            # Stream mode keeps every header it read (100,000 files: ~100 MB); hard links are
            # resolved from what was written, so nothing needs them.
            tar.members.clear()
            rel = member_path(member.name, declared)
            if rel is None and not declared and member.isdir() and "/" not in member.name.strip("/"):
                continue  # the workspace folder itself, when a glob starts at the top
            if rel is None:
                out.refused.append(f"{member.name}: unsafe name in the container's archive")
                continue
            if select is not None and not select(rel):
                continue  # a folder that does not match is not made; what it holds may match
            target = dest_root / rel
            if not place.direct(target.parent):
                out.refused.append(f"{rel}: its folder in the store is a symlink, not written through")
                continue
            if member.isdir():
                if not target.is_symlink():
                    target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                files.append(_write_file(tar, member, target, rel, progress))
            elif member.issym():
                _link(member, target, rel, member_path(member.name, source) or "", out, place)
            elif member.islnk():
                _hardlink(member, target, rel, dest_root, declared, files, out, place)
    return files


@contextlib.contextmanager
def _closing(chunks: object) -> Iterator[None]:
    """Close the engine's archive stream however the reading ends (Ctrl-C, a full store): the
    engine does not remove a container while a copy out of it is open, and would wait forever."""
    try:
        yield
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def member_path(name: str, declared: str) -> str | None:
    """Map an archive member ``base/sub/file`` to ``<declared>/sub/file``."""
    if name.startswith("/") or "\x00" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    rest = parts[1:]
    rel = "/".join(([declared] if declared else []) + rest)
    return rel or None


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, rel: str, progress) -> FileInfo:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or (target.exists() and not target.is_file()):
        _remove(target)
    digest = hashlib.sha256()
    size = 0
    src = tar.extractfile(member)
    # Not fsynced file by file (durable=False): a job may leave 100,000 outputs; see fsio.
    with AtomicFile(target, perms=0o755 if member.mode & 0o111 else 0o644, durable=False) as f:
        if src is not None and member.size >= BACKGROUND_MIN:
            size = copy_overlapped(src, f, digest, progress)
        else:
            while src is not None and (chunk := src.read(CHUNK)):
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                if progress:
                    progress(len(chunk))
    return FileInfo(path=rel, size=size, sha256=digest.hexdigest())


def copy_overlapped(src, f, digest, progress) -> int:
    """Copy ``src`` to ``f`` and hash it, the disk write and the hash in a thread of their own
    while the next chunk arrives from the engine (both sides release the GIL): a large file
    costs about the slower of the two, not their sum. At most QUEUED chunks wait in memory."""
    import queue
    import threading

    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUED)
    failed: list[BaseException] = []

    def write() -> None:
        try:
            while (chunk := chunks.get()) is not None:
                f.write(chunk)
                digest.update(chunk)
        except BaseException as exc:  # a full disk: told to the reader, which stops
            failed.append(exc)
            while chunks.get() is not None:  # never leave the reader blocked on a full queue
                pass

    writer = threading.Thread(target=write, name="anna-run-collect-write", daemon=True)
    writer.start()
    size = 0
    try:
        while not failed and (chunk := src.read(CHUNK)):
            chunks.put(chunk)
            size += len(chunk)
            if progress:
                progress(len(chunk))
    finally:
        chunks.put(None)
        writer.join()
    if failed:
        raise failed[0]
    return size


class _Place:
    """The store folder members are written into, as it is on disk with the links already kept
    there. Lexical checks are not enough: a kept link ``d/a -> .`` makes the stored
    ``d/a/a/a/b`` the folder ``d/b``, from which a link that climbs four levels leaves the store.
    So nothing is written through a stored link, and a link is kept only if it resolves inside."""

    def __init__(self, root: Path) -> None:
        self.base = os.path.abspath(root)
        self.root = os.path.realpath(root)
        self._direct: dict[str, bool] = {}  # per folder: most members share one

    def direct(self, path: Path) -> bool:
        """Whether ``path`` is reached without following a symlink in the store."""
        key = str(path)
        if key not in self._direct:
            rel = os.path.relpath(os.path.abspath(path), self.base)
            expected = os.path.normpath(os.path.join(self.root, rel))
            self._direct[key] = not rel.startswith("..") and os.path.realpath(path) == expected
        return self._direct[key]

    def inside(self, path: Path) -> bool:
        """Whether ``path``, following the links in the store, stays inside it."""
        real = os.path.realpath(path)
        return real == self.root or real.startswith(self.root + os.sep)

    def changed(self) -> None:
        """A link was written: folders seen before may be reached through it now."""
        self._direct.clear()


def _leaves(link: str, location: str) -> bool:
    """Whether ``link``, a symlink in the workspace folder ``location``, points out of the workspace."""
    if link.startswith("/"):
        return link != WORKDIR and not link.startswith(WORKDIR + "/")
    resolved = posixpath.normpath(posixpath.join(location, link))
    return resolved == ".." or resolved.startswith("../")


def _link(member: tarfile.TarInfo, target: Path, rel: str, origin: str, out: Collected, place: _Place) -> None:
    """Keep a symlink only when it stays inside the workspace, as a relative link: judged where
    it was made in the container (``origin``), where it is written (``rel``), and in the store."""
    link = member.linkname
    location = posixpath.dirname(rel)
    if _leaves(link, posixpath.dirname(origin)):
        out.refused.append(f"{rel}: a symlink to {link} (outside the workspace), not collected")
        return
    if link.startswith("/"):
        if not link.startswith(WORKDIR + "/"):
            out.refused.append(f"{rel}: a symlink to {link} (outside the workspace), not collected")
            return
        resolved = posixpath.normpath(link[len(WORKDIR) + 1 :])
    else:
        resolved = posixpath.normpath(posixpath.join(location, link))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        out.refused.append(f"{rel}: a symlink to {link} (outside the workspace), not collected")
        return
    text = posixpath.relpath(resolved, location or ".")
    if not place.inside(target.parent / text):
        out.refused.append(f"{rel}: a symlink to {link} that would lead out of the run's folder, not collected")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove(target)
    os.symlink(text, target)
    place.changed()


def _hardlink(
    member, target: Path, rel: str, dest_root: Path, declared: str, files, out: Collected, place: _Place
) -> None:
    source_rel = member_path(member.linkname, declared)
    source = dest_root / source_rel if source_rel else None
    if source is None or not place.direct(source.parent) or not source.is_file() or source.is_symlink():
        out.refused.append(f"{rel}: a hard link to {member.linkname}, not collected")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove(target)
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
    twin = next((f for f in files if f.path == source_rel), None)
    if twin is not None:
        files.append(FileInfo(path=rel, size=twin.size, sha256=twin.sha256))


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink()
