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

A run writes into a local spool (``spool.py``) and uploads when it ends. Every object is
checked after its upload: size and ``x-amz-meta-sha256`` from a HEAD, and the ETag against
the MD5 (or multipart MD5) of the bytes sent, with a read-back when the server's ETag is no
MD5. Transient failures (connection, 5xx, a mismatch) are retried with exponential backoff;
an upload that still cannot finish leaves the spool and a record marked ``upload: pending``
for ``anna-run sync``. Files go up in parts, streamed: memory stays at a few parts.

Listing reads the ``index/`` objects, and keeps those it has read in a local SQLite cache by
ETag, so a listing of runs already seen costs one LIST request per 1,000 runs.

Nothing here touches the network before it is needed (``minio`` is imported on first use).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import posixpath
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from ..errors import ConfigError, NotFound, StoreError
from ..fsio import AtomicFile, atomic_copy
from ..record import RunRecord, parse_iso
from .base import LOG_FILES, SyncReport, check_relpath
from .spool import Spool, SpoolFile, read_local, spool_root

if TYPE_CHECKING:
    from ..progress import Reporter

MiB = 1 << 20
PART_SIZE = 16 * MiB  # multipart above this; minio keeps about (parallel + 1) parts in memory
MAX_PARTS = 10_000  # S3's limit
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RUN_REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_SAFE_KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "BadDigest",
        "XAmzContentSHA256Mismatch",
        "IncompleteBody",
        "OperationAborted",
    }
)
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed"}
)
_CRED_HINT = "check ANNA_RUN_S3_ACCESS_KEY and ANNA_RUN_S3_SECRET_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"


class Unreachable(StoreError):
    """The S3 endpoint could not be reached (or kept failing) after every retry: worth trying later."""


class _Mismatch(Exception):
    """What the server holds is not what was sent: retried like a transient error."""


class _LocalChanged(StoreError):
    """A spooled file no longer has the size or digest it had: uploading again will not help."""


class _BlobMissing(StoreError):
    """A package or payload a run names is neither in the local cache nor in S3."""


# -- configuration --------------------------------------------------------------------------------
@dataclass(frozen=True)
class S3Config:
    endpoint: str  # host[:port], as minio wants it
    secure: bool
    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    attempts: int = 5  # per request, the first included

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at its ends); ConfigError if malformed."""
    hint = "write it s3://bucket or s3://bucket/some/prefix"
    if not url.startswith("s3://"):
        raise ConfigError(f"store {url!r}: an S3 store is named s3://bucket/prefix", hint=hint)
    rest = url[len("s3://") :]
    bad = next((c for c in rest if c in "?#\\@ " or ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ConfigError(f"store {url!r}: {bad!r} has no place in an s3:// URL", hint=hint)
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ConfigError(f"store {url!r}: no bucket", hint=hint)
    if (
        not _BUCKET_RE.fullmatch(bucket)
        or ".." in bucket
        or ".-" in bucket
        or "-." in bucket
        or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket)
    ):
        raise ConfigError(
            f"store {url!r}: {bucket!r} is not a valid bucket name",
            hint="3 to 63 characters: lower-case letters, digits, dots and hyphens",
        )
    prefix = prefix[:-1] if prefix.endswith("/") else prefix
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ConfigError(f"store {url!r}: the prefix {prefix!r} has an empty, '.' or '..' part", hint=hint)
    return bucket, prefix


def s3_config(environ: dict[str, str] | os._Environ[str] | None = None) -> S3Config:
    """Endpoint and credentials: ANNA_RUN_S3_* first, else the standard AWS_* variables."""
    env = os.environ if environ is None else environ
    raw = env.get("ANNA_RUN_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    endpoint, secure = _parse_endpoint(raw or "https://s3.amazonaws.com")
    ours = (env.get("ANNA_RUN_S3_ACCESS_KEY"), env.get("ANNA_RUN_S3_SECRET_KEY"))
    theirs = (env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY"))
    token = None
    if any(ours):
        if not all(ours):
            raise ConfigError("set both ANNA_RUN_S3_ACCESS_KEY and ANNA_RUN_S3_SECRET_KEY, or neither")
        access, secret = ours
    elif any(theirs):
        if not all(theirs):
            raise ConfigError("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither")
        access, secret = theirs
        token = env.get("AWS_SESSION_TOKEN") or None
    else:
        raise ConfigError(
            "S3 credentials are needed",
            hint=_CRED_HINT.replace("check", "set", 1),
        )
    attempts_text = env.get("ANNA_RUN_S3_RETRIES") or "5"
    try:
        attempts = int(attempts_text)
    except ValueError:
        attempts = 0
    if not 1 <= attempts <= 100:
        raise ConfigError(f"ANNA_RUN_S3_RETRIES={attempts_text!r}: a whole number of attempts from 1 to 100")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    return S3Config(endpoint, secure, str(access), str(secret), token, region, attempts)


def _parse_endpoint(raw: str) -> tuple[str, bool]:
    text = raw.strip()
    where = f"S3 endpoint {raw!r}"
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}", hint="e.g. http://127.0.0.1:9000 or https://s3.example.com") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{where}: use http:// or https://")
    if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(f"{where}: only a scheme, a host and a port", hint="e.g. http://127.0.0.1:9000")
    if parts.path not in ("", "/"):
        raise ConfigError(f"{where}: a path on the endpoint is not supported", hint="name the bucket in s3://bucket")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return (f"{host}:{port}" if port else host), parts.scheme == "https"


def open_s3_store(location: str, *, reporter: Reporter | None = None) -> S3Store:
    bucket, prefix = parse_s3_url(location)
    try:
        config = s3_config()
    except ConfigError as exc:
        raise ConfigError(f"store {location}: {exc.message}", hint=exc.hint) from None
    return S3Store(bucket, prefix, config, spool_root(config.url, bucket, prefix), reporter=reporter)


# -- the store ------------------------------------------------------------------------------------
class S3Store:
    """Runs, packages and payloads in ``s3://bucket/prefix``; a local spool for what is not up yet.

    ``part_size``, ``parallel`` (parts in flight per file) and ``backoff`` (first wait, seconds)
    are attributes so tests and benchmarks can change them.
    """

    part_size = PART_SIZE
    parallel = 3
    backoff = 0.5
    list_workers = 16

    def __init__(
        self, bucket: str, prefix: str, config: S3Config, spool_dir: Path, *, reporter: Reporter | None = None
    ) -> None:
        from ..progress import SilentReporter

        self.bucket = bucket
        self.prefix = prefix
        self.config = config
        self.location = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.spool = Spool(spool_dir)
        self.reporter: Reporter = reporter or SilentReporter()
        self.bytes_sent = 0  # bytes handed to the network for uploads, retries included
        self._client: Any = None
        self._present: set[str] = set()  # blob keys verified present by this process
        self._offline = False  # set when a blob upload found the endpoint unreachable

    def __repr__(self) -> str:
        return f"S3Store({self.location!r}, endpoint={self.config.url!r})"

    @property
    def local_root(self) -> Path:
        return self.spool.root

    # -- blobs ---------------------------------------------------------------------------------
    def packages_dir(self) -> Path:
        return self.spool.root / "packages"

    def cache_dir(self) -> Path:
        return self.spool.root / "cache"

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
        if not dest.exists():
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
            if self._verified_stat(key, None, sha256):
                self._present.add(key)
                return
            raise _BlobMissing(f"{what} {sha256[:12]} is neither in {path.parent} nor in {self.location}") from None
        if not self._verified_stat(key, size, sha256):
            self.reporter.step_started(f"upload {what}", f"{sha256[:12]} ({_human(size)})")
            progress = _Progress(self.reporter, f"upload {what}", size)
            self._upload(key, functools.partial(open, path, "rb"), size, sha256, progress)
            self.reporter.step_done(f"upload {what}", f"{_human(size)} sent")
        self._present.add(key)

    def _fetch_blob(self, key: str, dest: Path, sha256: str) -> Path:
        if dest.is_file() or not _SAFE_KEY_PART.fullmatch(sha256):
            return dest
        with contextlib.suppress(NotFound):
            self._download(key, dest, sha256)
        return dest

    # -- runs ----------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.spool.run_dir(run_id)

    def save_record(self, record: RunRecord) -> RunRecord:
        """A live record stays in the spool; a final one is uploaded with its run's files."""
        if not record.is_final and record.queue is not None:
            # A submitted run (`anna-run submit`) is queued here and runs on a runner host: every
            # host must see it queued or running, so its live record goes up at once (record and
            # index; its files go up with the final record, from the host that ran it).
            published = record.to_json().encode()
            self._put_bytes(self._key("runs", record.id, "run.json"), published, "application/json")
            self._put_bytes(self._index_key(record), published, "application/json")
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
        text = self._get_small(self._key("runs", run_ref, "run.json"))
        if text is not None:
            return _parse_record(text, f"{self.location}/runs/{run_ref}/run.json")
        base = self._key("runs", "")
        remote = self._call(
            "look up runs",
            lambda: [
                o.object_name[len(base) :].rstrip("/")
                for o in self._mc().list_objects(self.bucket, prefix=base + run_ref)
                if o.is_dir
            ],
        )
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
        merged = {r.id: r for r in self.spool.records() if wanted(r)}
        merged.update({r.id: r for r in self._indexed(project, first) if wanted(r)})
        runs = sorted(merged.values(), key=lambda r: (r.created_at, r.id), reverse=True)
        return runs if limit is None else runs[: max(0, int(limit))]

    def reindex(self) -> int:
        """Rebuild the index objects from the run records in S3; returns the number of runs."""
        base = self._key("runs", "")
        ids = self._call(
            "list runs",
            lambda: [
                o.object_name[len(base) :].rstrip("/")
                for o in self._mc().list_objects(self.bucket, prefix=base)
                if o.is_dir
            ],
        )
        texts = self._get_many([self._key("runs", i, "run.json") for i in ids])
        records = []
        for key, (_, text) in texts.items():
            with contextlib.suppress(StoreError):
                records.append(_parse_record(text, key))
        wanted = {self._index_key(r): r for r in records}
        existing = set(self._list_keys(self._key("index", "")))
        for key, record in wanted.items():
            if key not in existing:
                self._put_bytes(key, record.evolve(upload=None).to_json().encode(), "application/json")
        for key in existing - set(wanted):
            self._call(f"remove {key}", lambda key=key: self._mc().remove_object(self.bucket, key))
        self.spool.cache_clear()
        return len(records)

    # -- a run's files -------------------------------------------------------------------------
    def iter_log(self, run_id: str, stream: str = "log", offset: int = 0) -> Iterator[bytes]:
        name = LOG_FILES[stream]
        local = read_local(self.spool.run_dir(run_id) / name, offset)
        if local is None:
            local = self._stream(self._key("runs", run_id, name), offset)
        if local is not None:
            yield from local

    def iter_file(self, run_id: str, relpath: str) -> Iterator[bytes]:
        try:
            parts = check_relpath(relpath)
        except ConfigError:
            raise NotFound(f"run {run_id} has no {relpath!r}") from None
        chunks = read_local(self.spool.run_dir(run_id).joinpath(*parts))
        if chunks is None:
            chunks = self._stream(self._key("runs", run_id, relpath))
        if chunks is None:
            raise NotFound(f"run {run_id} has no {relpath} in the store {self.location}")
        return chunks

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
        for key in self._list_keys(base):
            rel = key[len(base) :]
            try:
                parts = check_relpath(rel)
            except ConfigError:
                raise StoreError(f"{self.location}: refusing the artifact key {key!r} (it leaves the folder)") from None
            target = dest.joinpath(*parts)
            if self._download(key, target, known.get(rel), link_base=rel) == "file":
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
            sent_before = self.bytes_sent
            self.reporter.step_started("upload", f"run {run_id} to {self.location}")
            for key, path, sha, what in self._blobs_of(record):
                try:
                    self._ensure_blob(key, path, sha, what)
                except _BlobMissing as exc:
                    # Lost before it was ever uploaded: holding the run's own files back won't bring it back.
                    self.reporter.warning(f"run {run_id}: {exc.message}")
            known = {f"artifacts/{a.path}": a.sha256 for a in record.artifacts}
            if record.result is not None:
                known[f"result/{record.result.path}"] = record.result.sha256
            progress = _Progress(self.reporter, "upload", total)
            for f in files:
                self._ensure_file(self._key("runs", run_id, f.relpath), f, known.get(f.relpath), progress)
            published = record.evolve(upload=None).to_json().encode()
            self._put_bytes(self._key("runs", run_id, "run.json"), published, "application/json")
            self._put_bytes(self._index_key(record), published, "application/json")
            self.spool.discard(run_id)
            sent = self.bytes_sent - sent_before
            self.reporter.step_done("upload", f"run {run_id}: {len(files)} file(s), {_human(sent)} sent")
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

    def _ensure_file(self, key: str, f: SpoolFile, sha256: str | None, progress: _Progress) -> None:
        if f.link is not None:
            st = self._stat(key)
            if st is None or _meta(st, "symlink") != f.link:
                self._upload(key, lambda: io.BytesIO(b""), 0, _EMPTY_SHA, None, extra={"symlink": f.link})
            return
        if sha256 is None:
            sha256 = _file_sha256(f.path, f.size)
        if self._verified_stat(key, f.size, sha256):
            progress.add(f.size)
            return
        content_type = "text/plain; charset=utf-8" if f.relpath.endswith((".log", ".txt")) else None
        opener = functools.partial(open, f.path, "rb")
        self._upload(key, opener, f.size, sha256, progress, content_type=content_type)

    def _index_key(self, record: RunRecord) -> str:
        try:
            ms = int(parse_iso(record.created_at).timestamp() * 1000)
        except (ValueError, TypeError):
            ms = 0
        project = record.project if _SAFE_KEY_PART.fullmatch(record.project or "") else "_"
        return self._key("index", project, f"{9_999_999_999_999 - max(0, ms):013d}-{record.id}.json")

    # -- listing -------------------------------------------------------------------------------
    def _indexed(self, project: str | None, first: int | None) -> list[RunRecord]:
        if project is not None and not _SAFE_KEY_PART.fullmatch(project):
            return []
        prefix = self._key("index", project, "") if project else self._key("index", "")
        listed = self._call(
            "list runs",
            lambda: {
                o.object_name: (o.etag or "").strip('"')
                for o in self._mc().list_objects(self.bucket, prefix=prefix, recursive=True)
                if not o.is_dir
            },
        )
        keys = sorted(listed, key=lambda k: k.rsplit("/", 1)[-1])
        if first is not None:
            keys = keys[: max(0, first)]
        cached = self.spool.cached(prefix)
        stale = [k for k in cached if k not in listed]
        missing = [k for k in keys if k not in cached or cached[k][0] != listed[k]]
        fetched = self._get_many(missing)
        self.spool.cache_put([(k, etag, text) for k, (etag, text) in fetched.items()])
        self.spool.cache_drop(stale)
        texts = {k: cached[k][1] for k in keys if k in cached and k not in missing}
        texts.update({k: text for k, (_, text) in fetched.items()})
        records = []
        for key in keys:
            if key in texts:
                with contextlib.suppress(StoreError):  # a damaged index object hides one run, not all
                    records.append(_parse_record(texts[key], key))
        return records

    def _list_keys(self, prefix: str) -> list[str]:
        return self._call(
            "list",
            lambda: [
                o.object_name
                for o in self._mc().list_objects(self.bucket, prefix=prefix, recursive=True)
                if not o.is_dir
            ],
        )

    def _get_many(self, keys: list[str]) -> dict[str, tuple[str, str]]:
        """key -> (etag, text) of small objects, read in parallel; vanished keys are left out."""

        def one(key: str) -> tuple[str, tuple[str, str] | None]:
            return key, self._get_small(key, with_etag=True)

        if not keys:
            return {}
        with ThreadPoolExecutor(min(self.list_workers, len(keys))) as pool:
            return {k: v for k, v in pool.map(one, keys) if v is not None}

    # -- requests ------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p) + ("/" if parts and parts[-1] == "" else "")

    def _mc(self) -> Any:
        """The minio client, made on first use. urllib3's own retries are off: ours (tenacity,
        with backoff) decide, so an outage costs a bounded, known time."""
        if self._client is None:
            import certifi
            import urllib3
            from minio import Minio

            http = urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=10, read=120),
                maxsize=max(self.list_workers, self.parallel + 1),
                cert_reqs="CERT_REQUIRED",
                ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
                retries=False,
            )
            c = self.config
            self._client = Minio(
                c.endpoint,
                access_key=c.access_key,
                secret_key=c.secret_key,
                session_token=c.session_token,
                secure=c.secure,
                region=c.region,
                http_client=http,
            )
        return self._client

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` with retries on transient failures; every failure leaves as a StoreError."""
        import tenacity

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.config.attempts),
            wait=tenacity.wait_exponential(multiplier=self.backoff, min=self.backoff, max=10),
            retry=tenacity.retry_if_exception(_transient),
            reraise=True,
        )
        try:
            return retrying(fn)
        except StoreError:
            raise
        except Exception as exc:
            error = self._error(exc, what)
            if error is None:
                raise
            raise error from exc

    def _error(self, exc: BaseException, what: str) -> StoreError | None:
        """One clear message for what went wrong talking to S3; None for what is not S3's (a bug)."""
        from minio.error import InvalidResponseError, S3Error, ServerError

        where, tries = self.config.url, self.config.attempts
        if isinstance(exc, _Mismatch):
            return StoreError(f"{what}: the upload could not be verified after {tries} tries: {exc}")
        if isinstance(exc, S3Error):
            code = exc.code or "?"
            if code == "NoSuchBucket":
                return StoreError(
                    f"the bucket {self.bucket!r} does not exist at {where}",
                    hint=f"create it, or fix the bucket in --store / ANNA_RUN_STORE ({self.location})",
                )
            if code in _CREDENTIAL_CODES:
                return StoreError(f"S3 at {where} refused the credentials ({code})", hint=_CRED_HINT)
            if code == "AccessDenied":
                return StoreError(
                    f"S3 at {where} denied access to the bucket {self.bucket!r} ({what})",
                    hint=_CRED_HINT + ", and the bucket's policy",
                )
            if code in _TRANSIENT_CODES:
                return Unreachable(f"S3 at {where} kept failing ({code}: {exc.message}) after {tries} tries")
            return StoreError(f"S3 at {where}: {what}: {code}: {exc.message}")
        if isinstance(exc, ServerError):
            return Unreachable(f"S3 at {where} kept failing (HTTP {exc.status_code}) after {tries} tries")
        if isinstance(exc, InvalidResponseError):
            return StoreError(f"{where} does not answer like an S3 server ({what}): {str(exc)[:200]}")
        if _is_network(exc):
            return Unreachable(f"the S3 endpoint {where} is unreachable ({_reason(exc)})")
        if isinstance(exc, ValueError):  # minio's own checks (object name, sizes)
            return StoreError(f"S3 {what}: {exc}")
        return None

    def _stat(self, key: str) -> Any:
        """The object's stat, or None when there is no such object."""
        from minio.error import S3Error

        def stat() -> Any:
            try:
                return self._mc().stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    return None
                raise

        return self._call(f"look up {key}", stat)

    def _verified_stat(self, key: str, size: int | None, sha256: str) -> bool:
        """Whether ``key`` holds exactly this content (size and the sha256 we stored with it)."""
        st = self._stat(key)
        return st is not None and _meta(st, "sha256") == sha256 and (size is None or st.size == size)

    def _get_small(self, key: str, with_etag: bool = False) -> Any:
        """The text of a small object (a record), or None when there is none."""
        from minio.error import S3Error

        def get() -> Any:
            try:
                response = self._mc().get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    return None
                raise
            try:
                data = response.read()
                etag = (response.headers.get("ETag") or "").strip('"')
            finally:
                response.close()
                response.release_conn()
            text = data.decode("utf-8", errors="replace")
            return (etag, text) if with_etag else text

        return self._call(f"read {key}", get)

    def _put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._upload(key, lambda: io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest(), None, content_type)

    def _upload(
        self,
        key: str,
        opener: Callable[[], BinaryIO],
        size: int,
        sha256: str,
        progress: _Progress | None,
        content_type: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        """Stream ``size`` bytes to ``key`` in parts and check what the server holds; retried."""
        part_size = _part_size(size, self.part_size)
        metadata = {"sha256": sha256, **(extra or {})}

        def attempt() -> None:
            start = progress.done if progress else 0
            try:
                source = opener()
            except OSError as exc:
                raise _LocalChanged(f"cannot read {key} from the spool: {exc.strerror or exc}") from exc
            with source:
                reader = _HashingReader(source, size, part_size, self._counter(progress), key)
                try:
                    self._mc().put_object(
                        self.bucket,
                        key,
                        reader,
                        size,
                        content_type=content_type or "application/octet-stream",
                        metadata=metadata,
                        part_size=part_size,
                        num_parallel_uploads=self.parallel,
                    )
                except BaseException:
                    if progress:
                        progress.rewind(start)
                    raise
                finally:
                    reader.close()
            if reader.sha256() != sha256:
                raise _LocalChanged(f"{key}: the local copy changed since it was recorded (sha256 differs)")
            self._verify(key, size, sha256, reader.etag())

        self._call(f"upload {key}", attempt)

    def _counter(self, progress: _Progress | None) -> Callable[[int], None]:
        def count(n: int) -> None:
            self.bytes_sent += n
            if progress:
                progress.add(n)

        return count

    def _verify(self, key: str, size: int, sha256: str, etag: str) -> None:
        st = self._mc().stat_object(self.bucket, key)
        if st.size != size:
            raise _Mismatch(f"{key}: the server holds {st.size} bytes, {size} were sent")
        if _meta(st, "sha256") != sha256:
            raise _Mismatch(f"{key}: the server lost its sha256 metadata")
        # Not every S3 puts an MD5 in its ETag (SSE-KMS, some gateways): then read back to know.
        if (st.etag or "").strip('"') != etag and self._read_back_sha256(key) != sha256:
            raise _Mismatch(f"{key}: the bytes read back differ from those sent")

    def _read_back_sha256(self, key: str) -> str:
        response = self._mc().get_object(self.bucket, key)
        digest = hashlib.sha256()
        try:
            for chunk in response.stream(MiB):
                digest.update(chunk)
        finally:
            response.close()
            response.release_conn()
        return digest.hexdigest()

    # -- downloads -----------------------------------------------------------------------------
    def _open(self, key: str, offset: int = 0) -> Any:
        """A streaming GET response, or None when there is no such object (or nothing past offset)."""
        from minio.error import S3Error

        def get() -> Any:
            try:
                return self._mc().get_object(self.bucket, key, offset=offset)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound", "InvalidRange"):
                    return None
                raise

        return self._call(f"read {key}", get)

    def _stream(self, key: str, offset: int = 0) -> Iterator[bytes] | None:
        """The bytes of ``key`` as they arrive, checked against its sha256 at the end (when read
        whole); None when there is no such object."""
        response = self._open(key, offset)
        if response is None:
            return None
        expected = response.headers.get("x-amz-meta-sha256") if offset == 0 else None

        def chunks() -> Iterator[bytes]:
            digest = hashlib.sha256()
            try:
                for chunk in response.stream(1 << 16):
                    digest.update(chunk)
                    yield chunk
            except Exception as exc:
                if not _is_network(exc):
                    raise
                raise Unreachable(f"reading {key} from {self.config.url} broke off ({_reason(exc)})") from exc
            finally:
                response.close()
                response.release_conn()
            if expected and digest.hexdigest() != expected:
                raise StoreError(f"{self.location}: {key} does not match its sha256: the stored copy is damaged")

        return chunks()

    def _download(self, key: str, dest: Path, sha256: str | None, link_base: str | None = None) -> str:
        """Download ``key`` into ``dest`` (replaced whole, see fsio), checked; ``link_base``: the
        object may be a symlink, relative to that path. Returns "file" or "link"; NotFound."""

        def attempt() -> str:
            response = self._open(key)
            if response is None:
                raise NotFound(f"{key} is not in {self.location}")
            try:
                link = response.headers.get("x-amz-meta-symlink")
                if link is not None and link_base is not None:
                    _make_link(dest, link, link_base, key)
                    return "link"
                expected = sha256 or response.headers.get("x-amz-meta-sha256")
                digest = hashlib.sha256()
                try:
                    with AtomicFile(dest) as out:
                        for chunk in response.stream(MiB):
                            out.write(chunk)
                            digest.update(chunk)
                        if expected and digest.hexdigest() != expected:
                            raise _Mismatch(f"{key}: the bytes read do not match its sha256")
                except OSError as exc:
                    if _is_network(exc):
                        raise
                    raise StoreError(f"cannot write {dest}: {exc.strerror or exc}") from exc
            finally:
                response.close()
                response.release_conn()
            return "file"

        return self._call(f"download {key}", attempt)


# -- helpers --------------------------------------------------------------------------------------
_EMPTY_SHA = hashlib.sha256(b"").hexdigest()


class _Progress:
    """Bytes of one transfer step, for the reporter's progress bar."""

    def __init__(self, reporter: Reporter, step: str, total: int) -> None:
        self.reporter, self.step, self.total, self.done = reporter, step, total, 0

    def add(self, n: int) -> None:
        self.done += n
        self.reporter.bytes_done(self.step, self.done, self.total)

    def rewind(self, done: int) -> None:
        self.done = done


class _HashingReader:
    """A file-like of exactly ``size`` bytes that hashes what it hands out: the sha256 of the
    whole, and the MD5 of each ``part_size`` part, from which the S3 ETag follows.

    The hashing runs in a thread of its own, on the same bytes objects the client sends (no
    copy), while the client signs and sends: MD5 alone runs at ~900 MB/s here, in line it cost
    a 500 MB upload ~0.5 s. At most two parts wait for it. ``close`` ends the thread."""

    def __init__(self, raw: BinaryIO, size: int, part_size: int, on_bytes: Callable[[int], None], key: str) -> None:
        import queue
        import threading

        self._raw, self._left, self._part_size, self._on_bytes, self._key = raw, size, part_size, on_bytes, key
        self._sha = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._in_part = 0
        self._parts: list[bytes] = []
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._hash_all, name="anna-run-s3-hash", daemon=True)
        self._thread.start()

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._raw.read(n)
        if not data:
            raise _LocalChanged(f"{self._key}: the local copy is shorter than when it was recorded")
        self._left -= len(data)
        self._queue.put(data)
        self._on_bytes(len(data))
        return data

    def _hash_all(self) -> None:
        while (data := self._queue.get()) is not None:
            self._sha.update(data)
            view = memoryview(data)
            while view:
                take = min(len(view), self._part_size - self._in_part)
                self._md5.update(view[:take])
                self._in_part += take
                view = view[take:]
                if self._in_part == self._part_size:
                    self._parts.append(self._md5.digest())
                    self._md5 = hashlib.md5(usedforsecurity=False)
                    self._in_part = 0

    def close(self) -> None:
        """Wait for the hashing of what was read; idempotent."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def sha256(self) -> str:
        self.close()
        return self._sha.hexdigest()

    def etag(self) -> str:
        """The ETag S3 gives: the MD5 of a single part, else the MD5 of the parts' MD5s, "-N"."""
        self.close()
        parts = self._parts + ([self._md5.digest()] if self._in_part or not self._parts else [])
        if len(parts) == 1:
            return parts[0].hex()
        return hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest() + f"-{len(parts)}"


def _part_size(size: int, preferred: int) -> int:
    """``preferred``, grown in whole MiB when the file would need more than S3's 10,000 parts."""
    need = -(-size // MAX_PARTS)
    return max(preferred, -(-need // MiB) * MiB, 5 * MiB)


def _meta(st: Any, name: str) -> str | None:
    return (st.metadata or {}).get(f"x-amz-meta-{name}")


def _transient(exc: BaseException) -> bool:
    from minio.error import S3Error, ServerError

    if isinstance(exc, _Mismatch):
        return True
    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT_CODES
    if isinstance(exc, ServerError):
        return exc.status_code >= 500 or exc.status_code == 429
    return _is_network(exc)


def _is_network(exc: BaseException) -> bool:
    import urllib3

    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for needle, reason in (
        ("refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("Temporary failure in name resolution", "unknown host"),
        ("reset by peer", "connection reset"),
        ("Connection aborted", "connection aborted"),
        ("IncompleteRead", "connection broken"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__


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
        raise _LocalChanged(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def _make_link(dest: Path, link: str, rel: str, key: str) -> None:
    """Recreate an artifact symlink, only when it stays among the artifacts (as collected)."""
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), link))
    if link.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise StoreError(f"refusing {key}: a symlink to {link} would leave the artifacts folder")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        os.symlink(link, dest)
    except OSError as exc:
        raise StoreError(f"cannot create the link {dest}: {exc.strerror or exc}") from exc


def _human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
