"""The S3 store's pure parts: opening it from a URL, no network until used, index keys, and
the spool."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from anna_run.errors import ConfigError, StoreError
from anna_run.record import RunRecord
from anna_run.store import open_store
from anna_run.store.s3 import S3Store
from anna_run.store.s3_config import S3Config
from anna_run.store.spool import Spool, spool_root

CREDS = {"ANNA_RUN_S3_ACCESS_KEY": "ak", "ANNA_RUN_S3_SECRET_KEY": "sk"}


# -- opening ----------------------------------------------------------------------------------------


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


def test_no_network_until_used(tmp_path: Path) -> None:
    # An endpoint nothing listens on: opening the store and asking for its folders must not fail.
    config = S3Config("127.0.0.1:9", False, "ak", "sk")
    store = S3Store("bucket", "p", config, tmp_path / "spool")
    assert store.packages_dir().is_dir() and store.run_dir("x") == tmp_path / "spool" / "runs" / "x"
    assert store.location == "s3://bucket/p" and not store.bucket.connected


# -- index keys: one LIST gives newest first --------------------------------------------------------


def test_index_keys_sort_newest_first(tmp_path: Path) -> None:
    store = S3Store("bucket", "pre/fix", S3Config("h", False, "a", "s"), tmp_path)
    times = ["2024-01-01T00:00:00.000Z", "2024-01-01T00:00:00.001Z", "2025-06-01T12:00:00.000Z", ""]
    records = [
        RunRecord(id=f"r{i}", job="j", project="proj", status="succeeded", created_at=t) for i, t in enumerate(times)
    ]
    keys = [store.index_key(r) for r in records]
    assert all(k.startswith("pre/fix/index/proj/") and k.endswith(".json") for k in keys)
    assert [k.rsplit("-", 1)[-1] for k in sorted(keys)] == ["r2.json", "r1.json", "r0.json", "r3.json"]
    odd = RunRecord(id="r9", job="j", project="../x", status="succeeded")
    assert "/index/_/" in store.index_key(odd)


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
