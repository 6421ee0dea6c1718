"""The S3 run store: MinIO or any S3 API through the ``minio`` client, the local store's layout.

    s3://bucket/prefix
      packages/<sha256>.tar          code packages, by content: uploaded once
      payloads/<sha256>.json         payloads, by content
      runs/<id>/run.json             the record, uploaded after every file it names
      runs/<id>/log.txt, stdout.log, stderr.log, result/..., artifacts/...
      index/<project>/<13 digits>-<id>.json
                                     a copy of each record for listing; the digits are
                                     9999999999999 minus its creation time in ms, so one
                                     LIST returns a project's runs newest first
      index-packs/<13 digits>-<sha>.jsonl.gz
                                     many index objects in one (``s3_packs.py``)

A run writes into a local spool (``spool.py``) and uploads when it ends, through a ``Bucket``
(``s3_bucket.py``: every request retried, every upload verified). An upload that still cannot
finish leaves the spool and a record marked ``upload: pending`` for ``anna-run sync``. The
endpoint and credentials come from the environment (``s3_config.py``).

Listing reads the ``index/`` objects, and keeps those it has read in a local SQLite cache by
ETag, so a listing of runs already seen costs one LIST request per 1,000 runs. What the cache
lacks comes from the newest index pack where it holds the same ETag, and one by one otherwise.

Nothing here touches the network before it is needed (``minio`` is imported on first use).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

from ..errors import ConfigError, NotFound, StoreError
from ..fsio import atomic_copy
from ..record import RunRecord, parse_iso
from .base import LOG_FILES, FolderStore, SyncReport, check_relpath
from .blobs import Blob, local_blobs, parse_blob_name, referenced, remove_local, touch, unused
from .s3_bucket import Bucket, LocalChanged, MiB, Progress, Unreachable, meta
from .s3_config import S3Config, parse_s3_url, s3_config
from .s3_packs import REPACK_AFTER, USE_FROM, pack_turn, read_pack, write_pack
from .spool import Spool, SpoolFile, read_local, spool_root

if TYPE_CHECKING:
    from ..report import Reporter

_T = TypeVar("_T")
_RUN_REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_SAFE_KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class _BlobMissing(StoreError):
    """A package or payload a run names is neither in the local cache nor in S3."""


def open_s3_store(location: str, *, reporter: Reporter | None = None) -> S3Store:
    """The store at ``s3://bucket/prefix``, configured from the environment; ConfigError."""
    bucket, prefix = parse_s3_url(location)
    try:
        config = s3_config()
    except ConfigError as exc:
        raise ConfigError(f"store {location}: {exc.message}", hint=exc.hint) from None
    return S3Store(bucket, prefix, config, spool_root(config.url, bucket, prefix), reporter=reporter)


# -- the store ------------------------------------------------------------------------------------
class S3Store(FolderStore):
    """Runs, packages and payloads in ``s3://bucket/prefix``; a local spool for what is not up yet.

    ``bucket`` is the ``Bucket`` the objects go through (its transfer settings and byte count).
    """

    def __init__(
        self, bucket: str, prefix: str, config: S3Config, spool_dir: Path, *, reporter: Reporter | None = None
    ) -> None:
        from ..report import SilentReporter

        self.bucket = Bucket(bucket, config)
        self.prefix = prefix
        self.location = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.spool = Spool(spool_dir)
        self.reporter: Reporter = reporter or SilentReporter()
        self._present: set[str] = set()  # blob keys verified present by this process
        self._offline = False  # set when a blob upload found the endpoint unreachable
        self.unreachable: str | None = None  # why a read answered from this machine only
        self.stale_ids: set[str] = set()  # runs shown as this machine last saw them

    def __repr__(self) -> str:
        return f"S3Store({self.location!r}, endpoint={self.bucket.config.url!r})"

    @property
    def local_root(self) -> Path:
        return self.spool.root

    # -- blobs ---------------------------------------------------------------------------------
    def packages_dir(self) -> Path:
        return self.spool.root / "packages"

    def cache_dir(self) -> Path:
        return self.spool.root / "cache"

    def schedules(self) -> NoReturn:
        """Not yet: registrations must be seen by every host, and the one-fire lock needs an
        atomic create the bucket does not give as the local O_EXCL does."""
        raise ConfigError(
            f"schedules are kept in a directory store for now, not in {self.location}",
            hint="use --store DIR (or ANNA_RUN_STORE=DIR) for `schedules` and `scheduler`",
        )

    def package_file(self, sha256: str) -> Path:
        return self.packages_dir() / f"{sha256}.tar"

    def package_path(self, sha256: str) -> Path:
        return self._fetch_blob(self._key("packages", f"{sha256}.tar"), self.package_file(sha256), sha256)

    def payload_path(self, sha256: str) -> Path:
        return self._fetch_blob(self._key("payloads", f"{sha256}.json"), self._payload_file(sha256), sha256)

    def publish_package(self, path: Path, sha256: str) -> None:
        self._publish_blob(self._key("packages", f"{sha256}.tar"), path, sha256, "package")

    def add_payload(self, src: Path, sha256: str) -> Path:
        dest = self._payload_file(sha256)
        if dest.exists():
            touch(dest)
        else:
            try:
                atomic_copy(src, dest, perms=0o600)
            except OSError as exc:
                raise StoreError(f"cannot keep the payload in {dest.parent}: {exc.strerror or exc}") from exc
        self._publish_blob(self._key("payloads", f"{sha256}.json"), dest, sha256, "payload")
        return dest

    def _payload_file(self, sha256: str) -> Path:
        return self.spool.root / "payloads" / f"{sha256}.json"

    def _publish_blob(self, key: str, path: Path, sha256: str, what: str) -> None:
        """Upload unless there. Unreachable: say so and go on (the run's upload tries again);
        any other failure (credentials, bucket) is raised: nothing should run against it."""
        if self._offline:
            return
        try:
            self._ensure_blob(key, path, sha256, what)
        except Unreachable as exc:
            self._offline = True
            self.reporter.warning(
                f"{exc.message}; the run goes on, and its uploads wait in {self.spool.root} for `anna-run sync`"
            )

    def _ensure_blob(self, key: str, path: Path, sha256: str, what: str) -> None:
        if key in self._present:
            return
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            # Built or fetched elsewhere (a rerun on another host): it must be in the store already.
            if self.bucket.holds(key, None, sha256):
                self._present.add(key)
                return
            raise _BlobMissing(f"{what} {sha256[:12]} is neither in {path.parent} nor in {self.location}") from None
        if not self.bucket.holds(key, size, sha256):
            self.reporter.step_started(f"upload {what}", f"{sha256[:12]} ({_human(size)})")
            progress = self._progress(f"upload {what}", size)
            self.bucket.put(key, functools.partial(open, path, "rb"), size, sha256, progress)
            self.reporter.step_done(f"upload {what}", f"{_human(size)} sent")
        self._present.add(key)

    def _fetch_blob(self, key: str, dest: Path, sha256: str) -> Path:
        if dest.is_file() or not _SAFE_KEY_PART.fullmatch(sha256):
            return dest
        with contextlib.suppress(NotFound):
            self.bucket.download(key, dest, sha256)
        return dest

    # -- runs ----------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.spool.run_dir(run_id)

    def collect_blobs(self, keep_s: float, *, dry_run: bool = False) -> list[dict]:
        """Remove the packages and payloads no run record names (in the bucket or the spool) and
        older than ``keep_s`` seconds, from the bucket and from this machine's spool. A bucket's
        object cannot be touched: a run that reuses an old package is protected by its record,
        written right after the package is published, and its final upload puts the package
        back from the spool should a `gc` have taken it in between."""
        cutoff = time.time() - keep_s
        remote = self._remote_blobs()  # listed before the records
        spooled = local_blobs(self.packages_dir(), self.spool.root / "payloads")
        refs = referenced([*self._all_records(), *self.spool.records()])
        removed = []
        for blob in unused(remote, refs, cutoff):
            if not dry_run:
                self.bucket.remove(blob.where)
                self._present.discard(blob.where)
            removed.append({**blob.item(), "where": f"s3://{self.bucket.name}/{blob.where}"})
        return removed + remove_local(unused(spooled, refs, cutoff), cutoff, dry_run)

    def _remote_blobs(self) -> list[Blob]:
        blobs = []
        for folder in ("packages", "payloads"):
            listed = self.bucket.list_modified(self._key(folder, ""), what=f"list {folder}")
            for key, (size, modified) in listed.items():
                parsed = parse_blob_name(key.rsplit("/", 1)[-1])
                if parsed is not None:
                    blobs.append(Blob(parsed[0], parsed[1], size, modified, key))
        return blobs

    def _all_records(self) -> list[RunRecord]:
        """Every run record in the bucket (runs/<id>/run.json), read afresh."""
        base = self._key("runs", "")
        ids = [k[len(base) :] for k in self.bucket.list_folders(base, what="list runs")]
        texts = self.bucket.get_texts([self._key("runs", i, "run.json") for i in ids])
        records = []
        for key, (_, text) in texts.items():
            with contextlib.suppress(StoreError):
                records.append(_parse_record(text, key))
        return records

    def save_record(self, record: RunRecord) -> RunRecord:
        """A live record stays in the spool; a final one is uploaded with its run's files."""
        if not record.is_final and record.queue is not None:
            # A submitted run (`anna-run submit`) is queued here and runs on a runner host: every
            # host must see it queued or running, so its live record goes up at once (record and
            # index; its files go up with the final record, from the host that ran it).
            published = record.to_json().encode()
            self.bucket.put_bytes(self._key("runs", record.id, "run.json"), published, "application/json")
            self.bucket.put_bytes(self.index_key(record), published, "application/json")
            return record
        if not record.is_final:
            self.spool.write_record(record)
            return record
        # Marked pending before anything goes up: a crash or Ctrl-C mid-upload leaves it so.
        pending = record.evolve(upload="pending")
        self.spool.write_record(pending)
        try:
            self._upload_run(record.id)
        except StoreError as exc:
            self._kept(record.id, f"the upload to {self.location} could not finish ({exc.message})")
            return pending
        except KeyboardInterrupt:
            # Ctrl-C (or SIGTERM) while uploading stops the upload, not the run: it ended already,
            # and keeps its own status; what did not go up waits in the spool.
            self._kept(record.id, "the upload was interrupted")
            return pending
        return record.evolve(upload=None)

    def _kept(self, run_id: str, why: str) -> None:
        self.reporter.warning(
            f"run {run_id}: {why}. Nothing is lost: the run is kept in {self.spool.run_dir(run_id)}; "
            "run `anna-run sync` to complete the upload"
        )

    def get(self, run_ref: str) -> RunRecord:
        """A run by id or unique id prefix: the spool first (live or pending runs), then S3."""
        if not _RUN_REF_RE.fullmatch(run_ref):
            raise NotFound(f"no run {run_ref!r} in the store {self.location}")
        local = self.spool.read_record(run_ref)
        if local is not None:
            return local
        try:
            return self._remote_get(run_ref)
        except Unreachable as exc:
            seen = self._last_seen(None, None)
            matches = [r for r in seen if r.id == run_ref] or [r for r in seen if r.id.startswith(run_ref)]
            if len(matches) > 1:
                raise NotFound(f"run {run_ref!r} is ambiguous: give more of its id") from None
            if not matches:
                raise
            self._answered_offline(exc, matches)
            return matches[0]

    def _remote_get(self, run_ref: str) -> RunRecord:
        text = self.bucket.get_text(self._key("runs", run_ref, "run.json"))
        if text is not None:
            return _parse_record(text, f"{self.location}/runs/{run_ref}/run.json")
        base = self._key("runs", "")
        remote = [k[len(base) :] for k in self.bucket.list_folders(base + run_ref, what="look up runs")]
        ids = sorted(set(remote) | {i for i in self.spool.run_ids() if i.startswith(run_ref)})
        if len(ids) == 1 and ids[0] != run_ref:  # the exact id was looked up above
            return self.get(ids[0])
        if len(ids) > 1:
            raise NotFound(f"run {run_ref!r} is ambiguous: give more of its id")
        raise NotFound(f"no run {run_ref!r} in the store {self.location}")

    def list_runs(
        self,
        *,
        project: str | None = None,
        job: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        def wanted(r: RunRecord) -> bool:
            return all(v is None or getattr(r, k) == v for k, v in filters)

        filters = (("project", project), ("job", job), ("status", status))

        # With no filter but the project, the first keys are the newest: only those are read.
        first = limit if (job is None and status is None) else None
        spooled = {r.id: r for r in self.spool.records() if wanted(r)}
        try:
            merged = {r.id: r for r in self._indexed(project, first) if wanted(r)}
            merged = {**spooled, **merged}
        except Unreachable as exc:  # the runs of this machine, and the others as it last saw them
            known = self._last_seen(project, first)
            if not known and not spooled and not self.spool.cached(self._key("index", "")):
                raise  # this machine holds nothing of the store: nothing to show instead
            seen = [r for r in known if wanted(r) and r.id not in spooled]
            self._answered_offline(exc, seen)
            merged = {**{r.id: r for r in seen}, **spooled}
        runs = sorted(merged.values(), key=lambda r: (r.created_at, r.id), reverse=True)
        return runs if limit is None else runs[: max(0, int(limit))]

    def reindex(self) -> int:
        """Rebuild the index objects from the run records in S3; returns the number of runs."""
        records = self._all_records()
        wanted = {self.index_key(r): r for r in records}
        existing = set(self.bucket.list_keys(self._key("index", "")))
        for key, record in wanted.items():
            if key not in existing:
                self.bucket.put_bytes(key, record.evolve(upload=None).to_json().encode(), "application/json")
        for key in existing - set(wanted):
            self.bucket.remove(key)
        self.spool.cache_clear()
        self.pack_index()
        return len(records)

    def pack_index(self) -> None:
        """Write a pack of the whole index (see ``s3_packs``): a later listing on a machine
        that has not cached it reads a few objects, not one per run."""
        self._indexed(None, None, pack=True)

    # -- a run's files -------------------------------------------------------------------------
    def iter_log(self, run_id: str, stream: str = "log", offset: int = 0) -> Iterator[bytes]:
        name = LOG_FILES[stream]
        local = read_local(self.spool.run_dir(run_id) / name, offset)
        if local is None:
            local = self._only_there(run_id, "log", lambda: self.bucket.stream(self._key("runs", run_id, name), offset))
        if local is not None:
            yield from local

    def iter_file(self, run_id: str, relpath: str) -> Iterator[bytes]:
        try:
            parts = check_relpath(relpath)
        except ConfigError:
            raise NotFound(f"run {run_id} has no {relpath!r}") from None
        chunks = read_local(self.spool.run_dir(run_id).joinpath(*parts))
        if chunks is None:
            chunks = self._only_there(run_id, relpath, lambda: self.bucket.stream(self._key("runs", run_id, relpath)))
        if chunks is None:
            raise NotFound(f"run {run_id} has no {relpath} in the store {self.location}")
        return chunks

    def _only_there(self, run_id: str, what: str, read: Callable[[], _T]) -> _T:
        """``read()``; an unreachable server says that this machine does not hold ``what``."""
        try:
            return read()
        except Unreachable as exc:
            raise Unreachable(
                f"{exc.message}; the {what} of run {run_id} is kept there only, not on this machine",
                hint="try again when the server answers",
            ) from None

    def fetch_artifacts(self, record: RunRecord, dest: Path) -> int:
        """Copy the artifacts into ``dest``: from the spool when the run is still there, else
        downloaded and checked against their sha256; symlinks come back as links."""
        local = self.spool.run_dir(record.id) / "artifacts"
        try:
            dest.mkdir(parents=True, exist_ok=True)
            if self.spool.read_record(record.id) is not None:
                if local.is_dir():
                    shutil.copytree(local, dest, symlinks=True, dirs_exist_ok=True)
                return len(record.artifacts)
        except OSError as exc:
            raise StoreError(f"cannot copy the artifacts of run {record.id} into {dest}: {exc}") from exc
        base = self._key("runs", record.id, "artifacts", "")
        known = {a.path: a.sha256 for a in record.artifacts}
        count = 0
        for key in self._only_there(record.id, "artifacts", lambda: self.bucket.list_keys(base)):
            rel = key[len(base) :]
            try:
                parts = check_relpath(rel)
            except ConfigError:
                raise StoreError(f"{self.location}: refusing the artifact key {key!r} (it leaves the folder)") from None
            target = dest.joinpath(*parts)
            if self.bucket.download(key, target, known.get(rel), link_base=rel) == "file":
                count += 1
        return count

    # -- uploads that could not finish ---------------------------------------------------------
    def pending(self) -> list[RunRecord]:
        return self.spool.records()

    def sync(self) -> SyncReport:
        uploaded: list[str] = []
        pending: list[tuple[str, str]] = []
        running: list[str] = []
        unreachable: str | None = None
        for record in self.spool.records():
            if not record.is_final:
                running.append(record.id)
            elif unreachable is not None:
                pending.append((record.id, unreachable))  # no point waiting out the retries again
            else:
                try:
                    (uploaded if self._upload_run(record.id) else running).append(record.id)
                except Unreachable as exc:
                    unreachable = exc.message
                    pending.append((record.id, exc.message))
                except StoreError as exc:
                    pending.append((record.id, exc.message))
        return SyncReport(tuple(uploaded), tuple(pending), tuple(running))

    # -- upload of a run -----------------------------------------------------------------------
    def _upload_run(self, run_id: str) -> bool:
        """Upload a spooled final run: blobs, files, record, index; then forget the local copy.
        True once the run is in S3 (by this process or another), False while it is still live."""
        with self.spool.lock(run_id):
            record = self.spool.read_record(run_id)
            if record is None:
                return True  # another process uploaded it while we waited for the lock
            if not record.is_final:
                return False
            files = self.spool.files(run_id)
            total = sum(f.size for f in files)
            sent_before = self.bucket.bytes_sent
            self.reporter.step_started("upload", f"run {run_id} to {self.location}")
            for key, path, sha, what in self._blobs_of(record):
                # Looked up again, not trusted from the start of the run: a `gc --blobs` elsewhere,
                # which cannot see this run's record while it is live here, may have taken it.
                self._present.discard(key)
                try:
                    self._ensure_blob(key, path, sha, what)
                except _BlobMissing as exc:
                    # Lost before it was ever uploaded: holding the run's own files back won't bring it back.
                    self.reporter.warning(f"run {run_id}: {exc.message}")
            known = {f"artifacts/{a.path}": a.sha256 for a in record.artifacts}
            if record.result is not None:
                known[f"result/{record.result.path}"] = record.result.sha256
            progress = self._progress("upload", total)
            for f in files:
                self._ensure_file(self._key("runs", run_id, f.relpath), f, known.get(f.relpath), progress)
            published = record.evolve(upload=None).to_json().encode()
            self.bucket.put_bytes(self._key("runs", run_id, "run.json"), published, "application/json")
            self.bucket.put_bytes(self.index_key(record), published, "application/json")
            self.spool.discard(run_id)
            sent = self.bucket.bytes_sent - sent_before
            self.reporter.step_done("upload", f"run {run_id}: {len(files)} file(s), {_human(sent)} sent")
        if pack_turn(run_id):
            with contextlib.suppress(StoreError):  # the run is up; a pack only saves later listings time
                self.pack_index()
        return True

    def _blobs_of(self, record: RunRecord) -> list[tuple[str, Path, str, str]]:
        """(key, local file, sha256, what) of the package and payload a run names."""
        blobs = []
        if record.package is not None:
            sha = record.package.sha256
            blobs.append((self._key("packages", f"{sha}.tar"), self.package_file(sha), sha, "package"))
        if record.payload is not None:
            sha = record.payload.sha256
            blobs.append((self._key("payloads", f"{sha}.json"), self._payload_file(sha), sha, "payload"))
        return blobs

    def _ensure_file(self, key: str, f: SpoolFile, sha256: str | None, progress: Progress) -> None:
        if f.link is not None:
            st = self.bucket.stat(key)
            if st is None or meta(st, "symlink") != f.link:
                self.bucket.put_bytes(key, b"", extra={"symlink": f.link})
            return
        if sha256 is None:
            sha256 = _file_sha256(f.path, f.size)
        if self.bucket.holds(key, f.size, sha256):
            progress.add(f.size)
            return
        content_type = "text/plain; charset=utf-8" if f.relpath.endswith((".log", ".txt")) else None
        opener = functools.partial(open, f.path, "rb")
        self.bucket.put(key, opener, f.size, sha256, progress, content_type=content_type)

    def _progress(self, step: str, total: int) -> Progress:
        return Progress(total, lambda done, total: self.reporter.bytes_done(step, done, total))

    def index_key(self, record: RunRecord) -> str:
        """The key of the record's copy under ``index/``: a project's newest runs list first."""
        try:
            ms = int(parse_iso(record.created_at).timestamp() * 1000)
        except (ValueError, TypeError):
            ms = 0
        project = record.project if _SAFE_KEY_PART.fullmatch(record.project or "") else "_"
        return self._key("index", project, f"{9_999_999_999_999 - max(0, ms):013d}-{record.id}.json")

    # -- listing -------------------------------------------------------------------------------
    def _indexed(self, project: str | None, first: int | None, *, pack: bool = False) -> list[RunRecord]:
        """The index records under ``project`` (all when None), the ``first`` newest only when
        given. Read from the local cache by ETag, then the newest pack, then one by one; a
        whole-store listing that read many one by one, or ``pack=True``, packs them."""
        if project is not None and not _SAFE_KEY_PART.fullmatch(project):
            return []
        prefix = self._key("index", project, "") if project else self._key("index", "")
        listed = self.bucket.list_etags(prefix, what="list runs")
        keys = sorted(listed, key=lambda k: k.rsplit("/", 1)[-1])
        if first is not None:
            keys = keys[: max(0, first)]
        cached = self.spool.cached(prefix)
        stale = [k for k in cached if k not in listed]
        missing = [k for k in keys if k not in cached or cached[k][0] != listed[k]]
        found: dict[str, tuple[str, str]] = {}
        if len(missing) >= USE_FROM:
            found = read_pack(self.bucket, self._key("index-packs", ""), {k: listed[k] for k in missing})
        one_by_one = [k for k in missing if k not in found]
        found.update(self.bucket.get_texts(one_by_one))
        self.spool.cache_put([(k, etag, text) for k, (etag, text) in found.items()])
        self.spool.cache_drop(stale)
        texts = {k: cached[k] for k in keys if k in cached and k not in missing}
        texts.update(found)
        whole = project is None and first is None
        if whole and (pack or len(one_by_one) >= REPACK_AFTER):
            with contextlib.suppress(StoreError):  # a pack only saves later listings time
                entries = ((k, *texts[k]) for k in keys if k in texts)
                write_pack(self.bucket, self._key("index-packs", ""), entries)
        records = []
        for key in keys:
            if key in texts:
                with contextlib.suppress(StoreError):  # a damaged index object hides one run, not all
                    records.append(_parse_record(texts[key][1], key))
        return records

    # -- answers while the server is unreachable ----------------------------------------------
    def _last_seen(self, project: str | None, first: int | None) -> list[RunRecord]:
        """The index records this machine cached, newest first: what it last saw of the store."""
        if project is not None and not _SAFE_KEY_PART.fullmatch(project):
            return []
        prefix = self._key("index", project, "") if project else self._key("index", "")
        cached = self.spool.cached(prefix)
        keys = sorted(cached, key=lambda k: k.rsplit("/", 1)[-1])
        records = []
        for key in keys if first is None else keys[: max(0, first)]:
            with contextlib.suppress(StoreError):
                records.append(_parse_record(cached[key][1], key))
        return records

    def _answered_offline(self, exc: Unreachable, records: list[RunRecord]) -> None:
        """Say once that the server is unreachable; note the runs shown as last seen."""
        self.stale_ids.update(r.id for r in records)
        if self.unreachable is None:
            self.unreachable = exc.message
            self.reporter.warning(
                f"{exc.message}: showing what this machine holds, its own runs and the others "
                "as it last saw them (may be stale)"
            )

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p) + ("/" if parts and parts[-1] == "" else "")


# -- helpers --------------------------------------------------------------------------------------
def _parse_record(text: str, where: str) -> RunRecord:
    try:
        return RunRecord.from_json(text)
    except (ValueError, TypeError, AttributeError) as exc:
        raise StoreError(f"run record {where} is damaged: {exc}") from exc


def _file_sha256(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    left = size
    try:
        with open(path, "rb") as f:
            while left > 0 and (chunk := f.read(min(MiB, left))):
                digest.update(chunk)
                left -= len(chunk)
    except OSError as exc:
        raise LocalChanged(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def _human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
