"""The S3 store's pure parts: the s3:// URL, endpoint and credentials from the environment, the
ETag arithmetic of a streamed multipart upload, part sizes, index keys, and the spool."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest
from anna_run.errors import ConfigError, StoreError
from anna_run.record import RunRecord
from anna_run.store import open_store
from anna_run.store.s3 import (
    MiB,
    S3Config,
    S3Store,
    _HashingReader,
    _LocalChanged,
    _part_size,
    parse_s3_url,
    s3_config,
)
from anna_run.store.spool import Spool, spool_root

CREDS = {"ANNA_RUN_S3_ACCESS_KEY": "ak", "ANNA_RUN_S3_SECRET_KEY": "sk"}


# -- s3:// URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://runs", "runs", ""),
        ("s3://runs/", "runs", ""),
        ("s3://my-bucket.example/team/a", "my-bucket.example", "team/a"),
        ("s3://abc/x/", "abc", "x"),
        ("s3://a1b/x_y-z.1", "a1b", "x_y-z.1"),
    ],
)
def test_parse_s3_url(url: str, bucket: str, prefix: str) -> None:
    assert parse_s3_url(url) == (bucket, prefix)


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3:///prefix",
        "s3://ab",
        "s3://Upper",
        "s3://under_score",
        "s3://-leading",
        "s3://trailing-",
        "s3://dou..ble",
        "s3://a.-b",
        "s3://192.168.1.1",
        "s3://" + "a" * 64,
        "s3://bucket//x",
        "s3://bucket/a//b",
        "s3://bucket/../x",
        "s3://bucket/./x",
        "s3://bucket/x?y=1",
        "s3://bucket#frag",
        "s3://user@bucket",
        "s3://bucket/with space",
        "s3://bucket/tab\there",
        "s3:/bucket",
        "S3://bucket",
    ],
)
def test_malformed_s3_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_s3_url(url)


@pytest.mark.parametrize("url", ["s3://", "s3://Bad_Bucket/x", "s3:bucket", "S3://bucket"])
def test_open_store_rejects_malformed_urls_before_anything(url: str, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError):
        open_store(url)
    assert list(tmp_path.iterdir()) == []  # no spool made for a bad URL


def test_other_schemes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="s3://"):
        open_store("gs://bucket/x")


# -- endpoint and credentials -----------------------------------------------------------------------


def test_ours_first_then_aws() -> None:
    env = {
        "ANNA_RUN_S3_ENDPOINT": "http://127.0.0.1:9000",
        "AWS_ENDPOINT_URL": "https://aws.example",
        **CREDS,
        "AWS_ACCESS_KEY_ID": "aws-ak",
        "AWS_SECRET_ACCESS_KEY": "aws-sk",
        "AWS_SESSION_TOKEN": "tok",
        "AWS_REGION": "eu-west-1",
    }
    c = s3_config(env)
    assert (c.endpoint, c.secure, c.access_key, c.secret_key, c.region) == (
        "127.0.0.1:9000",
        False,
        "ak",
        "sk",
        "eu-west-1",
    )
    assert c.session_token is None  # AWS's token never goes with our keys
    assert c.url == "http://127.0.0.1:9000"


def test_aws_variables_when_ours_are_absent() -> None:
    env = {
        "AWS_ENDPOINT_URL": "https://minio.example:9443/",
        "AWS_ACCESS_KEY_ID": "aws-ak",
        "AWS_SECRET_ACCESS_KEY": "aws-sk",
        "AWS_SESSION_TOKEN": "tok",
    }
    c = s3_config(env)
    assert (c.endpoint, c.secure, c.access_key, c.secret_key, c.session_token) == (
        "minio.example:9443",
        True,
        "aws-ak",
        "aws-sk",
        "tok",
    )
    assert c.region is None


def test_defaults_to_aws_over_https() -> None:
    c = s3_config({**CREDS})
    assert (c.endpoint, c.secure, c.attempts) == ("s3.amazonaws.com", True, 5)


def test_endpoint_without_scheme_is_https() -> None:
    assert s3_config({"ANNA_RUN_S3_ENDPOINT": "minio.local:9000", **CREDS}).url == "https://minio.local:9000"


def test_secret_is_not_in_repr() -> None:
    c = s3_config({**CREDS, "ANNA_RUN_S3_SECRET_KEY": "very-secret-value"})
    assert "very-secret-value" not in repr(c)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"ANNA_RUN_S3_ACCESS_KEY": "ak"},
        {"ANNA_RUN_S3_SECRET_KEY": "sk"},
        {"ANNA_RUN_S3_ACCESS_KEY": "ak", "AWS_SECRET_ACCESS_KEY": "sk"},
        {"AWS_ACCESS_KEY_ID": "ak"},
        {**CREDS, "ANNA_RUN_S3_ENDPOINT": "ftp://host"},
        {**CREDS, "ANNA_RUN_S3_ENDPOINT": "http://host:notaport"},
        {**CREDS, "ANNA_RUN_S3_ENDPOINT": "http://host:70000"},
        {**CREDS, "ANNA_RUN_S3_ENDPOINT": "http://host/bucket"},
        {**CREDS, "ANNA_RUN_S3_ENDPOINT": "http://user:pw@host"},
        {**CREDS, "ANNA_RUN_S3_ENDPOINT": "http://"},
        {**CREDS, "ANNA_RUN_S3_RETRIES": "0"},
        {**CREDS, "ANNA_RUN_S3_RETRIES": "many"},
    ],
)
def test_bad_settings_are_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        s3_config(env)


def test_no_network_until_used(tmp_path: Path) -> None:
    # An endpoint nothing listens on: opening the store and asking for its folders must not fail.
    config = S3Config("127.0.0.1:9", False, "ak", "sk")
    store = S3Store("bucket", "p", config, tmp_path / "spool")
    assert store.packages_dir().is_dir() and store.run_dir("x") == tmp_path / "spool" / "runs" / "x"
    assert store.location == "s3://bucket/p" and store._client is None


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
    reader = _HashingReader(io.BytesIO(data + b"tail not sent"), size, 5 * 1024, counted.append, "k")
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
    reader = _HashingReader(io.BytesIO(b"abc"), 10, 5 * 1024, lambda n: None, "runs/x/log.txt")
    assert reader.read(3) == b"abc"
    with pytest.raises(_LocalChanged, match="shorter"):
        reader.read(3)
    reader.close()  # what an upload does on every way out
    assert not _hashing_threads()
    assert reader.sha256() == hashlib.sha256(b"abc").hexdigest()  # what was read, hashed


def test_part_size_stays_within_s3_limits() -> None:
    assert _part_size(0, 16 * MiB) == 16 * MiB
    assert _part_size(500 * 10**6, 16 * MiB) == 16 * MiB
    assert _part_size(10, 1 * MiB) == 5 * MiB  # S3's minimum part
    huge = 1 << 40  # 1 TiB: 16 MiB parts would be 65,536 of them
    size = _part_size(huge, 16 * MiB)
    assert size % MiB == 0 and -(-huge // size) <= 10_000


# -- index keys: one LIST gives newest first --------------------------------------------------------


def test_index_keys_sort_newest_first(tmp_path: Path) -> None:
    store = S3Store("bucket", "pre/fix", S3Config("h", False, "a", "s"), tmp_path)
    times = ["2024-01-01T00:00:00.000Z", "2024-01-01T00:00:00.001Z", "2025-06-01T12:00:00.000Z", ""]
    records = [
        RunRecord(id=f"r{i}", job="j", project="proj", status="succeeded", created_at=t) for i, t in enumerate(times)
    ]
    keys = [store._index_key(r) for r in records]
    assert all(k.startswith("pre/fix/index/proj/") and k.endswith(".json") for k in keys)
    assert [k.rsplit("-", 1)[-1] for k in sorted(keys)] == ["r2.json", "r1.json", "r0.json", "r3.json"]
    odd = RunRecord(id="r9", job="j", project="../x", status="succeeded")
    assert "/index/_/" in store._index_key(odd)


# -- the spool --------------------------------------------------------------------------------------


def test_spool_root_is_per_endpoint_bucket_and_prefix(tmp_path: Path) -> None:
    a = spool_root("http://h:1", "bucket", "p", cache_home=tmp_path)
    assert a.parent == tmp_path / "anna-run" / "s3" and a.name.startswith("bucket-")
    assert (
        len({a, spool_root("http://h:2", "bucket", "p", tmp_path), spool_root("http://h:1", "bucket", "q", tmp_path)})
        == 3
    )


def test_spool_files_skip_the_record_and_temp_files_and_keep_links(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.write_record(RunRecord(id="r1", job="j", project="p", status="running"))
    top = spool.run_dir("r1")
    (top / "log.txt").write_text("log")
    (top / ".tmp-abc").write_text("half")
    (top / "artifacts" / "d").mkdir(parents=True)
    (top / "artifacts" / "d" / "a.bin").write_bytes(b"12345")
    (top / "artifacts" / ".hidden").write_text("kept")
    os.symlink("a.bin", top / "artifacts" / "d" / "link")
    os.symlink("d", top / "artifacts" / "dirlink")
    files = {f.relpath: f for f in spool.files("r1")}
    assert sorted(files) == [
        "artifacts/.hidden",
        "artifacts/d/a.bin",
        "artifacts/d/link",
        "artifacts/dirlink",
        "log.txt",
    ]
    assert files["artifacts/d/a.bin"].size == 5 and files["artifacts/d/a.bin"].link is None
    assert files["artifacts/d/link"].link == "a.bin" and files["artifacts/dirlink"].link == "d"


def test_spool_records_skip_damaged_ones(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.write_record(RunRecord(id="good", job="j", project="p", status="running"))
    spool.run_dir("bad").mkdir(parents=True)
    (spool.run_dir("bad") / "run.json").write_text("{not json")
    assert [r.id for r in spool.records()] == ["good"]
    with pytest.raises(StoreError, match="damaged"):
        spool.read_record("bad")
    spool.discard("good")
    assert spool.records() == [] and not spool.run_dir("good").exists()


def test_spool_lock_file_goes_with_the_run(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.write_record(RunRecord(id="r1", job="j", project="p", status="succeeded"))
    with spool.lock("r1"):
        assert (spool.root / "locks" / "r1.lock").exists()
    assert (spool.root / "locks" / "r1.lock").exists()  # the run is still here
    with spool.lock("r1"):
        spool.discard("r1")
    assert not (spool.root / "locks" / "r1.lock").exists()


def test_spool_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="spool"):
        Spool(blocker / "spool")
