"""The S3 bucket's pure parts: the ETag arithmetic of a streamed multipart upload, part sizes,
and no network before the first request."""

from __future__ import annotations

import hashlib
import io
import os
import threading

import pytest
from anna_run.store.s3_bucket import Bucket, HashingReader, LocalChanged, MiB, part_size_for
from anna_run.store.s3_config import S3Config


def test_a_bucket_connects_on_first_use() -> None:
    bucket = Bucket("bucket", S3Config("127.0.0.1:9", False, "ak", "sk"))
    assert bucket.location == "s3://bucket" and not bucket.connected


# -- what an upload hashes --------------------------------------------------------------------------


def _etag(data: bytes, part: int) -> str:
    parts = [data[i : i + part] for i in range(0, len(data), part)] or [b""]
    if len(parts) == 1:
        return hashlib.md5(parts[0]).hexdigest()
    return hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"


@pytest.mark.parametrize("size", [0, 1, 1000, 5 * 1024, 5 * 1024 + 1, 3 * 5 * 1024, 17_000])
@pytest.mark.parametrize("read_size", [1, 333, 4096, 10**9])
def test_hashing_reader_gives_sha256_and_the_s3_etag(size: int, read_size: int) -> None:
    data = os.urandom(size)
    counted: list[int] = []
    reader = HashingReader(io.BytesIO(data + b"tail not sent"), size, 5 * 1024, counted.append, "k")
    out = b""
    while chunk := reader.read(read_size):
        out += chunk
    assert out == data and sum(counted) == size
    assert reader.sha256() == hashlib.sha256(data).hexdigest()
    assert reader.etag() == _etag(data, 5 * 1024)
    assert not _hashing_threads()  # the hashing thread ends once the digests are asked for


def _hashing_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "anna-run-s3-hash"]


def test_hashing_reader_notices_a_shorter_file() -> None:
    reader = HashingReader(io.BytesIO(b"abc"), 10, 5 * 1024, lambda n: None, "runs/x/log.txt")
    assert reader.read(3) == b"abc"
    with pytest.raises(LocalChanged, match="shorter"):
        reader.read(3)
    reader.close()  # what an upload does on every way out
    assert not _hashing_threads()
    assert reader.sha256() == hashlib.sha256(b"abc").hexdigest()  # what was read, hashed


def test_part_size_stays_within_s3_limits() -> None:
    assert part_size_for(0, 16 * MiB) == 16 * MiB
    assert part_size_for(500 * 10**6, 16 * MiB) == 16 * MiB
    assert part_size_for(10, 1 * MiB) == 5 * MiB  # S3's minimum part
    huge = 1 << 40  # 1 TiB: 16 MiB parts would be 65,536 of them
    size = part_size_for(huge, 16 * MiB)
    assert size % MiB == 0 and -(-huge // size) <= 10_000
