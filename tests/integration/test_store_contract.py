"""One contract, two stores: every test here runs on a LocalStore folder and on an S3Store
(a prefix of the SeaweedFS server). ``other()`` opens the same store as another process or
host would (S3: with a spool of its own, so it only sees what was uploaded)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from anna_run.errors import NotFound
from anna_run.record import BlobRef, CommandResult, FileInfo, RunRecord
from anna_run.store.base import Store, SyncReport
from anna_run.store.local import LocalStore


@dataclass
class Backend:
    store: Store
    other: Callable[[], Store]


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        root = tmp_path / "store"
        return Backend(LocalStore(root), lambda: LocalStore(root))
    make = request.getfixturevalue("make_s3_store")
    store = make()
    return Backend(store, lambda: make(prefix=store.prefix))


def rec(run_id: str, created: str = "2024-01-01T00:00:00.000Z", **kw: object) -> RunRecord:
    fields: dict = {"job": "train", "project": "proj", "status": "succeeded", "created_at": created}
    fields.update(kw)
    return RunRecord(id=run_id, **fields)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_run(store: Store, run_id: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = store.run_dir(run_id) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# -- records ---------------------------------------------------------------------------------------


def test_a_record_reads_back_the_same(backend: Backend) -> None:
    record = rec(
        "k68o-Mi2L-mYte-7E54",
        commands=(CommandResult("python train.py", 0, 1.2), CommandResult("echo ***", None)),
        payload=BlobRef("p", "a" * 64, 3),
        variables={"MODEL": "linear", "API_TOKEN": "***"},
        exit_code=0,
    )
    stored = backend.store.save_record(record)
    assert stored == record and stored.upload is None
    assert backend.store.get(record.id) == record
    assert backend.other().get(record.id) == record
    assert backend.store.list_runs() == [record]


def test_a_live_run_is_seen_where_it_runs(backend: Backend) -> None:
    live = rec("live-0001", status="running")
    assert backend.store.save_record(live) == live
    assert backend.store.get("live").status == "running"
    assert [r.id for r in backend.store.list_runs()] == ["live-0001"]
    final = backend.store.save_record(live.evolve(status="failed", exit_code=3))
    assert final.status == "failed" and final.upload is None
    for store in (backend.store, backend.other()):
        assert store.get("live-0001").status == "failed"
        listed = store.list_runs()
        assert len(listed) == 1 and listed[0].status == "failed" and listed[0].exit_code == 3


def test_get_by_unique_prefix_and_exact_id(backend: Backend) -> None:
    for run_id in ("aaaa-1111", "aaab-2222", "bbbb-3333", "abc", "abcd"):
        backend.store.save_record(rec(run_id))
    store = backend.other()
    assert store.get("aaaa").id == "aaaa-1111"
    assert store.get("aaab-").id == "aaab-2222"
    assert store.get("b").id == "bbbb-3333"
    assert store.get("abc").id == "abc"  # an exact id wins over a longer one
    with pytest.raises(NotFound, match="ambiguous"):
        store.get("aaa")
    with pytest.raises(NotFound, match="no run"):
        store.get("zzzz")


@pytest.mark.parametrize("ref", ["%", "_aaa", "a%", "a_a", "..", ".", "../runs/aaaa-1111", "aaaa-1111/", "\\"])
def test_odd_refs_are_not_runs(backend: Backend, ref: str) -> None:
    backend.store.save_record(rec("aaaa-1111"))
    with pytest.raises(NotFound):
        backend.store.get(ref)


def test_list_newest_first_with_filters(backend: Backend) -> None:
    saved = [
        rec("1", "2024-01-01T00:00:01.000Z", project="p1", job="train", status="succeeded"),
        rec("2", "2024-01-01T00:00:02.000Z", project="p1", job="serve", status="failed"),
        rec("3", "2024-01-01T00:00:03.000Z", project="p2", job="train", status="failed"),
        rec("4", "2024-01-01T00:00:04.000Z", project="p1", job="train", status="failed"),
        rec("b", "2024-01-01T00:00:00.000Z", job="other"),
        rec("c", "2024-01-01T00:00:00.000Z", job="other"),
        rec("a", "2024-01-01T00:00:00.000Z", job="other"),
    ]
    for record in saved:
        backend.store.save_record(record)
    store = backend.other()

    def ids(**kw: object) -> list[str]:
        return [r.id for r in store.list_runs(**kw)]  # type: ignore[arg-type]

    assert ids() == ["4", "3", "2", "1", "c", "b", "a"]
    assert ids(project="p1") == ["4", "2", "1"]
    assert ids(project="nope") == []
    assert ids(job="train") == ["4", "3", "1"]
    assert ids(status="failed") == ["4", "3", "2"]
    assert ids(project="p1", job="train", status="failed") == ["4"]
    assert ids(limit=2) == ["4", "3"]
    assert ids(project="p1", limit=1) == ["4"]
    assert ids(limit=0) == []


# -- files -----------------------------------------------------------------------------------------


def test_a_runs_files_read_back(backend: Backend, tmp_path: Path) -> None:
    model = os.urandom(300_000)
    files = {
        "log.txt": b"$ python train.py\nhello\n",
        "stdout.log": b"hello\n",
        "stderr.log": b"",
        "result/models/summary.json": b'{"r2": 0.9}',
        "artifacts/models/model.pkl": model,
        "artifacts/models/sub/notes.txt": "naïve – ünïcode\n".encode(),
    }
    store = backend.store
    store.save_record(rec("run-files", status="running"))
    write_run(store, "run-files", files)
    os.symlink("model.pkl", store.run_dir("run-files") / "artifacts/models/latest")
    record = rec(
        "run-files",
        result=FileInfo("models/summary.json", 11, sha(files["result/models/summary.json"])),
        artifacts=(
            FileInfo("models/model.pkl", len(model), sha(model)),
            FileInfo(
                "models/sub/notes.txt",
                len(files["artifacts/models/sub/notes.txt"]),
                sha(files["artifacts/models/sub/notes.txt"]),
            ),
        ),
    )
    store.save_record(record)
    reader = backend.other()
    assert b"".join(reader.iter_log("run-files")) == files["log.txt"]
    assert b"".join(reader.iter_log("run-files", "stdout")) == b"hello\n"
    assert b"".join(reader.iter_log("run-files", "stderr")) == b""
    assert b"".join(reader.iter_log("run-files", "log", offset=18)) == b"hello\n"
    assert b"".join(reader.iter_file("run-files", "result/models/summary.json")) == b'{"r2": 0.9}'
    with pytest.raises(NotFound):
        reader.iter_file("run-files", "result/nope.json")
    with pytest.raises(NotFound):
        reader.iter_file("run-files", "../other/run.json")
    dest = tmp_path / "fetched"
    assert reader.fetch_artifacts(reader.get("run-files"), dest) == 2
    assert (dest / "models/model.pkl").read_bytes() == model
    assert (dest / "models/sub/notes.txt").read_bytes() == files["artifacts/models/sub/notes.txt"]
    assert os.readlink(dest / "models/latest") == "model.pkl"


def test_a_run_without_logs_or_artifacts(backend: Backend, tmp_path: Path) -> None:
    backend.store.save_record(rec("bare"))
    reader = backend.other()
    assert list(reader.iter_log("bare")) == []
    assert reader.fetch_artifacts(reader.get("bare"), tmp_path / "none") == 0
    assert (tmp_path / "none").is_dir() and list((tmp_path / "none").iterdir()) == []


# -- blobs -----------------------------------------------------------------------------------------


def test_payloads_are_stored_once_by_content(backend: Backend, tmp_path: Path) -> None:
    src = tmp_path / "payload.json"
    src.write_text('{"a": 1}')
    digest = sha(b'{"a": 1}')
    first = backend.store.add_payload(src, digest)
    assert first.read_text() == '{"a": 1}'
    src.write_text('{"changed": true}')  # the same sha again: not stored again
    assert backend.store.add_payload(src, digest).read_text() == '{"a": 1}'
    assert backend.other().payload_path(digest).read_text() == '{"a": 1}'


def test_packages_are_published_and_found_by_content(backend: Backend) -> None:
    data = os.urandom(50_000)
    digest = sha(data)
    path = backend.store.packages_dir() / f"{digest}.tar"
    path.write_bytes(data)
    backend.store.publish_package(path, digest)
    backend.store.publish_package(path, digest)  # again: nothing happens
    assert backend.other().package_path(digest).read_bytes() == data


# -- pending uploads and the index -----------------------------------------------------------------


def test_nothing_pending_after_a_clean_save(backend: Backend) -> None:
    backend.store.save_record(rec("done"))
    backend.store.save_record(rec("going", status="running"))
    assert [r.id for r in backend.store.pending()] in ([], ["going"])  # S3: the live run is local
    report = backend.store.sync()
    assert report.uploaded == () and report.pending == ()
    assert backend.other().sync() == SyncReport()


def test_reindex_counts_the_runs(backend: Backend) -> None:
    for i in range(3):
        backend.store.save_record(rec(f"r{i}", f"2024-01-0{i + 1}T00:00:00.000Z"))
    store = backend.other()
    assert store.reindex() == 3
    assert [r.id for r in store.list_runs()] == ["r2", "r1", "r0"]
