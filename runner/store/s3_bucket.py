"""One S3 bucket through the ``minio`` client, every request retried and every upload verified.

It knows objects, not runs: put (streamed in parts), get, stat, list, stream and download.
Every object is checked after its upload: size and ``x-amz-meta-sha256`` from a HEAD, and the
ETag against the MD5 (or multipart MD5) of the bytes sent, with a read-back when the server's
ETag is no MD5. Transient failures (connection, 5xx, a mismatch) are retried with exponential
backoff; what still fails leaves as a StoreError (``Unreachable`` when trying later may help).
Files go up in parts, streamed: memory stays at a few parts.

Nothing here touches the network before it is needed (``minio`` is imported on first use).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import NotFound, StoreError
from ..fsio import AtomicFile
from .s3_config import CREDENTIALS_HINT, S3Config

__all__ = [
    "MAX_PARTS",
    "PART_SIZE",
    "Bucket",
    "HashingReader",
    "LocalChanged",
    "MiB",
    "Progress",
    "Unreachable",
    "meta",
    "part_size_for",
]

MiB = 1 << 20
PART_SIZE = 16 * MiB  # multipart above this; minio keeps about (parallel + 1) parts in memory
MAX_PARTS = 10_000  # S3's limit
_MISSING_CODES = ("NoSuchKey", "NoSuchObject", "NotFound")
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


class Unreachable(StoreError):
    """The S3 endpoint could not be reached (or kept failing) after every retry: worth trying later."""


class LocalChanged(StoreError):
    """A local file no longer has the size or digest it had: uploading again will not help."""


class _Mismatch(Exception):
    """What the server holds is not what was sent: retried like a transient error."""


class Progress:
    """Bytes done of one transfer; ``report(done, total)`` hears every change (a progress bar)."""

    def __init__(self, total: int, report: Callable[[int, int], None]) -> None:
        self.total, self.done, self._report = total, 0, report

    def add(self, n: int) -> None:
        self.done += n
        self._report(self.done, self.total)

    def rewind(self, done: int) -> None:
        """Back to ``done`` bytes, for a transfer that starts again."""
        self.done = done


class Bucket:
    """The objects of one bucket. ``part_size``, ``parallel`` (parts in flight per file),
    ``backoff`` (first wait between tries, seconds) and ``list_workers`` (small objects read at
    once) are attributes so tests and benchmarks can change them; ``bytes_sent`` counts the bytes
    handed to the network for uploads, retries included.
    """

    part_size = PART_SIZE
    parallel = 3
    backoff = 0.5
    list_workers = 16

    def __init__(self, name: str, config: S3Config) -> None:
        self.name = name
        self.config = config
        self.location = f"s3://{name}"
        self.bytes_sent = 0
        self._client: Any = None

    def __repr__(self) -> str:
        return f"Bucket({self.name!r}, endpoint={self.config.url!r})"

    @property
    def connected(self) -> bool:
        """Whether a client was made (nothing touches the network before the first request)."""
        return self._client is not None

    # -- listing -------------------------------------------------------------------------------
    def list_keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix``, at any depth."""
        return list(self.list_etags(prefix, what="list"))

    def list_etags(self, prefix: str, what: str = "list") -> dict[str, str]:
        """key -> ETag of the objects under ``prefix``, at any depth."""
        return self._call(
            what,
            lambda: {
                o.object_name: (o.etag or "").strip('"')
                for o in self._mc().list_objects(self.name, prefix=prefix, recursive=True)
                if not o.is_dir
            },
        )

    def list_modified(self, prefix: str, what: str = "list") -> dict[str, tuple[int, float]]:
        """key -> (size, last modified in seconds since the epoch) of the objects under ``prefix``."""
        return self._call(
            what,
            lambda: {
                o.object_name: (o.size or 0, o.last_modified.timestamp() if o.last_modified else 0.0)
                for o in self._mc().list_objects(self.name, prefix=prefix, recursive=True)
                if not o.is_dir
            },
        )

    def list_folders(self, prefix: str, what: str = "list") -> list[str]:
        """The "folders" whose keys start with ``prefix``, one level deep: their keys up to the
        next slash, without it."""
        return self._call(
            what,
            lambda: [o.object_name.rstrip("/") for o in self._mc().list_objects(self.name, prefix=prefix) if o.is_dir],
        )

    def remove(self, key: str) -> None:
        self._call(f"remove {key}", lambda: self._mc().remove_object(self.name, key))

    # -- small objects -------------------------------------------------------------------------
    def get_text(self, key: str) -> str | None:
        """The text of a small object (a record), or None when there is none."""
        got = self._get_small(key)
        return None if got is None else got[1]

    def get_texts(self, keys: list[str]) -> dict[str, tuple[str, str]]:
        """key -> (etag, text) of small objects, read in parallel; vanished keys are left out."""

        def one(key: str) -> tuple[str, tuple[str, str] | None]:
            return key, self._get_small(key)

        if not keys:
            return {}
        with ThreadPoolExecutor(min(self.list_workers, len(keys))) as pool:
            return {k: v for k, v in pool.map(one, keys) if v is not None}

    # -- requests ------------------------------------------------------------------------------
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
                    f"the bucket {self.name!r} does not exist at {where}",
                    hint=f"create it, or fix the bucket in --store / ANNA_RUN_STORE ({self.location})",
                )
            if code in _CREDENTIAL_CODES:
                return StoreError(f"S3 at {where} refused the credentials ({code})", hint=CREDENTIALS_HINT)
            if code == "AccessDenied":
                return StoreError(
                    f"S3 at {where} denied access to the bucket {self.name!r} ({what})",
                    hint=CREDENTIALS_HINT + ", and the bucket's policy",
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

    def stat(self, key: str) -> Any:
        """The object's stat, or None when there is no such object."""
        from minio.error import S3Error

        def stat() -> Any:
            try:
                return self._mc().stat_object(self.name, key)
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    return None
                raise

        return self._call(f"look up {key}", stat)

    def holds(self, key: str, size: int | None, sha256: str) -> bool:
        """Whether ``key`` holds exactly this content (size and the sha256 we stored with it)."""
        st = self.stat(key)
        return st is not None and meta(st, "sha256") == sha256 and (size is None or st.size == size)

    def _get_small(self, key: str) -> tuple[str, str] | None:
        """(etag, text) of a small object, or None when there is none."""
        from minio.error import S3Error

        def get() -> Any:
            try:
                response = self._mc().get_object(self.name, key)
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    return None
                raise
            try:
                data = response.read()
                etag = (response.headers.get("ETag") or "").strip('"')
            finally:
                response.close()
                response.release_conn()
            text = data.decode("utf-8", errors="replace")
            return etag, text

        return self._call(f"read {key}", get)

    def put_bytes(
        self, key: str, data: bytes, content_type: str | None = None, extra: dict[str, str] | None = None
    ) -> None:
        """``put`` of bytes in memory."""
        digest = hashlib.sha256(data).hexdigest()
        self.put(key, lambda: io.BytesIO(data), len(data), digest, None, content_type, extra)

    def put(
        self,
        key: str,
        opener: Callable[[], BinaryIO],
        size: int,
        sha256: str,
        progress: Progress | None,
        content_type: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        """Stream ``size`` bytes to ``key`` in parts and check what the server holds; retried."""
        part_size = part_size_for(size, self.part_size)
        metadata = {"sha256": sha256, **(extra or {})}

        def attempt() -> None:
            start = progress.done if progress else 0
            try:
                source = opener()
            except OSError as exc:
                raise LocalChanged(f"{key}: cannot read the local copy: {exc.strerror or exc}") from exc
            with source:
                reader = HashingReader(source, size, part_size, self._counter(progress), key)
                try:
                    self._mc().put_object(
                        self.name,
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
                raise LocalChanged(f"{key}: the local copy changed since it was recorded (sha256 differs)")
            self._verify(key, size, sha256, reader.etag())

        self._call(f"upload {key}", attempt)

    def _counter(self, progress: Progress | None) -> Callable[[int], None]:
        def count(n: int) -> None:
            self.bytes_sent += n
            if progress:
                progress.add(n)

        return count

    def _verify(self, key: str, size: int, sha256: str, etag: str) -> None:
        st = self._mc().stat_object(self.name, key)
        if st.size != size:
            raise _Mismatch(f"{key}: the server holds {st.size} bytes, {size} were sent")
        if meta(st, "sha256") != sha256:
            raise _Mismatch(f"{key}: the server lost its sha256 metadata")
        # Not every S3 puts an MD5 in its ETag (SSE-KMS, some gateways): then read back to know.
        if (st.etag or "").strip('"') != etag and self._read_back_sha256(key) != sha256:
            raise _Mismatch(f"{key}: the bytes read back differ from those sent")

    def _read_back_sha256(self, key: str) -> str:
        response = self._mc().get_object(self.name, key)
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
                return self._mc().get_object(self.name, key, offset=offset)
            except S3Error as exc:
                if exc.code in (*_MISSING_CODES, "InvalidRange"):
                    return None
                raise

        return self._call(f"read {key}", get)

    def stream(self, key: str, offset: int = 0) -> Iterator[bytes] | None:
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

    def download(self, key: str, dest: Path, sha256: str | None, link_base: str | None = None) -> str:
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
class HashingReader:
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
            raise LocalChanged(f"{self._key}: the local copy is shorter than when it was recorded")
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


def part_size_for(size: int, preferred: int) -> int:
    """``preferred``, grown in whole MiB when the file would need more than S3's 10,000 parts."""
    need = -(-size // MAX_PARTS)
    return max(preferred, -(-need // MiB) * MiB, 5 * MiB)


def meta(st: Any, name: str) -> str | None:
    """The ``x-amz-meta-<name>`` metadata of a stat result, or None."""
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
