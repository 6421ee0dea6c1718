"""LocalStore on a real folder: records, prefixes, listing, payloads, reindex, damage, concurrency."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from anna_run.errors import NotFound, StoreError
from anna_run.fsio import atomic_write
from anna_run.record import BlobRef, CommandResult, RunRecord
from anna_run.store.local import LocalStore


def rec(run_id: str, created: str = "2024-01-01T00:00:00.000Z", **kw: object) -> RunRecord:
    fields: dict = {"job": "train", "project": "proj", "status": "succeeded", "created_at": created}
    fields.update(kw)
    return RunRecord(id=run_id, **fields)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(".part")]


# -- layout ----------------------------------------------------------------------------------------


def test_creates_the_layout(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "store"
    st = LocalStore(root)
    for sub in ("packages", "payloads", "runs", "cache"):
        assert (root / sub).is_dir()
    assert st.location == str(root)
    assert st.packages_dir() == root / "packages"
    assert st.cache_dir() == root / "cache"
    assert st.run_dir("abc") == root / "runs" / "abc"


def test_cannot_create_the_store(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the run store"):
        LocalStore(blocker / "store")


def test_empty_store_lists_nothing(store: LocalStore) -> None:
    assert store.list_runs() == []
    with pytest.raises(NotFound):
        store.get("anything")


# -- save and get ----------------------------------------------------------------------------------


def test_save_and_get_by_id(store: LocalStore) -> None:
    record = rec(
        "k68o-Mi2L-mYte-7E54",
        commands=(CommandResult("python train.py", 0, 1.2),),
        payload=BlobRef("p", "a" * 64, 3),
    )
    store.save_record(record)
    assert (store.run_dir(record.id) / "run.json").read_text() == record.to_json()
    assert store.get(record.id) == record


def test_save_again_replaces(store: LocalStore) -> None:
    store.save_record(rec("run-1", status="running"))
    store.save_record(rec("run-1", status="failed", exit_code=3))
    assert store.get("run-1").status == "failed"
    listed = store.list_runs()
    assert len(listed) == 1 and listed[0].status == "failed" and listed[0].exit_code == 3


def test_get_by_unique_prefix(store: LocalStore) -> None:
    store.save_record(rec("aaaa-1111"))
    store.save_record(rec("aaab-2222"))
    store.save_record(rec("bbbb-3333"))
    assert store.get("aaaa").id == "aaaa-1111"
    assert store.get("aaab-").id == "aaab-2222"
    assert store.get("b").id == "bbbb-3333"


def test_ambiguous_prefix(store: LocalStore) -> None:
    store.save_record(rec("aaaa-1111"))
    store.save_record(rec("aaab-2222"))
    with pytest.raises(NotFound, match="ambiguous"):
        store.get("aaa")


def test_exact_id_wins_over_a_longer_one(store: LocalStore) -> None:
    store.save_record(rec("abc"))
    store.save_record(rec("abcd"))
    assert store.get("abc").id == "abc"
    assert store.get("abcd").id == "abcd"


def test_missing_run(store: LocalStore) -> None:
    store.save_record(rec("aaaa-1111"))
    with pytest.raises(NotFound, match="no run"):
        store.get("zzzz")


@pytest.mark.parametrize("ref", ["%", "_aaa", "a%", "a_a", "..", ".", "../runs/aaaa-1111", "aaaa-1111/", "\\"])
def test_like_wildcards_and_paths_are_not_run_refs(store: LocalStore, ref: str) -> None:
    store.save_record(rec("aaaa-1111"))
    store.save_record(rec("aaab-2222"))
    with pytest.raises(NotFound):
        store.get(ref)


def test_get_from_a_second_store_object(store: LocalStore) -> None:
    store.save_record(rec("aaaa-1111"))
    other = LocalStore(store.root)
    assert other.get("aaaa").id == "aaaa-1111"


# -- list_runs -------------------------------------------------------------------------------------


def test_list_newest_first(store: LocalStore) -> None:
    store.save_record(rec("r-middle", "2024-01-02T00:00:00.000Z"))
    store.save_record(rec("r-new", "2024-01-03T00:00:00.000Z"))
    store.save_record(rec("r-old", "2024-01-01T00:00:00.000Z"))
    assert [r.id for r in store.list_runs()] == ["r-new", "r-middle", "r-old"]


def test_list_same_time_ordered_by_id(store: LocalStore) -> None:
    for run_id in ("b", "c", "a"):
        store.save_record(rec(run_id, "2024-01-01T00:00:00.000Z"))
    assert [r.id for r in store.list_runs()] == ["c", "b", "a"]


def test_list_filters(store: LocalStore) -> None:
    store.save_record(rec("1", "2024-01-01T00:00:01.000Z", project="p1", job="train", status="succeeded"))
    store.save_record(rec("2", "2024-01-01T00:00:02.000Z", project="p1", job="serve", status="failed"))
    store.save_record(rec("3", "2024-01-01T00:00:03.000Z", project="p2", job="train", status="failed"))
    store.save_record(rec("4", "2024-01-01T00:00:04.000Z", project="p1", job="train", status="failed"))

    def ids(**kw: object) -> list[str]:
        return [r.id for r in store.list_runs(**kw)]  # type: ignore[arg-type]

    assert ids() == ["4", "3", "2", "1"]
    assert ids(project="p1") == ["4", "2", "1"]
    assert ids(project="p2") == ["3"]
    assert ids(project="nope") == []
    assert ids(job="train") == ["4", "3", "1"]
    assert ids(status="failed") == ["4", "3", "2"]
    assert ids(project="p1", job="train", status="failed") == ["4"]
    assert ids(limit=2) == ["4", "3"]
    assert ids(project="p1", limit=1) == ["4"]
    assert ids(limit=0) == []
    assert ids(limit=100) == ["4", "3", "2", "1"]


def test_listed_records_are_whole(store: LocalStore) -> None:
    record = rec("x", commands=(CommandResult("echo ***", 0, 0.01),), variables={"A": "1"})
    store.save_record(record)
    assert store.list_runs() == [record]


# -- files -----------------------------------------------------------------------------------------


def test_save_record_leaves_no_temp_files(store: LocalStore) -> None:
    for i in range(5):
        store.save_record(rec("same", status="running" if i < 4 else "succeeded"))
    assert tmp_files(store.root) == []
    assert [p.name for p in store.run_dir("same").iterdir()] == ["run.json"]


def test_add_payload_stores_once(store: LocalStore, tmp_path: Path) -> None:
    src = tmp_path / "payload.json"
    src.write_text('{"a": 1}')
    sha = "1" * 64
    first = store.add_payload(src, sha)
    assert first == store.payload_path(sha) and first.read_text() == '{"a": 1}'
    inode = first.stat().st_ino
    src.write_text('{"changed": true}')  # same sha again: not copied again (only touched, for gc --blobs)
    second = store.add_payload(src, sha)
    assert second == first
    assert first.read_text() == '{"a": 1}' and first.stat().st_ino == inode
    assert list((store.root / "payloads").iterdir()) == [first]
    store.add_payload(src, "2" * 64)
    assert len(list((store.root / "payloads").iterdir())) == 2
    assert tmp_files(store.root) == []


def test_add_payload_missing_source(store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot store the payload"):
        store.add_payload(tmp_path / "nope.json", "3" * 64)
    assert list((store.root / "payloads").iterdir()) == []


def test_iter_log(store: LocalStore) -> None:
    store.save_record(rec("r1"))
    assert list(store.iter_log("r1")) == []
    (store.run_dir("r1") / "log.txt").write_bytes(b"both\n")
    (store.run_dir("r1") / "stdout.log").write_bytes(b"out\n")
    assert b"".join(store.iter_log("r1")) == b"both\n"
    assert b"".join(store.iter_log("r1", "stdout")) == b"out\n"
    assert list(store.iter_log("r1", "stderr")) == []


# -- index -----------------------------------------------------------------------------------------


def _drop_index(store: LocalStore) -> None:
    if store._db is not None:
        store._db.close()
        store._db = None
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (store.root / name).unlink(missing_ok=True)


def test_reindex_after_deleting_the_index(store: LocalStore) -> None:
    for i in range(3):
        store.save_record(rec(f"r{i}", f"2024-01-0{i + 1}T00:00:00.000Z"))
    _drop_index(store)
    fresh = LocalStore(store.root)
    assert [r.id for r in fresh.list_runs()] == ["r2", "r1", "r0"]  # rebuilt on first use
    assert fresh.get("r1").id == "r1"


def test_explicit_reindex(store: LocalStore) -> None:
    for i in range(3):
        store.save_record(rec(f"r{i}", f"2024-01-0{i + 1}T00:00:00.000Z"))
    # a run.json written by hand (or by an older index) is found by reindex
    extra = rec("hand", "2024-02-01T00:00:00.000Z")
    atomic_write(store.run_dir("hand") / "run.json", extra.to_json().encode())
    assert [r.id for r in store.list_runs()] == ["r2", "r1", "r0"]
    assert store.reindex() == 4
    assert [r.id for r in store.list_runs()] == ["hand", "r2", "r1", "r0"]


def test_reindex_drops_runs_whose_record_is_gone(store: LocalStore) -> None:
    store.save_record(rec("keep"))
    store.save_record(rec("gone"))
    (store.run_dir("gone") / "run.json").unlink()
    assert store.reindex() == 1
    assert [r.id for r in store.list_runs()] == ["keep"]


def test_index_is_in_wal_mode(store: LocalStore) -> None:
    store.save_record(rec("r"))
    db = sqlite3.connect(store.root / "index.sqlite")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


# -- damage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b'{"id": "r"}',
        b"\xff\xfe garbage",
        b'{"id": "r", "job": "j"',
        b"[1, 2]",
        b"null",
        b'"x"',
    ],
)
def test_damaged_run_json_gives_store_error(store: LocalStore, content: bytes) -> None:
    store.save_record(rec("r-damaged"))
    (store.run_dir("r-damaged") / "run.json").write_bytes(content)
    with pytest.raises(StoreError, match="damaged"):
        store.get("r-damaged")


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"null"])
def test_reindex_skips_damaged_records(store: LocalStore, content: bytes) -> None:
    store.save_record(rec("ok"))
    store.save_record(rec("bad"))
    (store.run_dir("bad") / "run.json").write_bytes(content)
    assert store.reindex() == 1
    assert [r.id for r in store.list_runs()] == ["ok"]


def test_damaged_index_gives_store_error(store: LocalStore) -> None:
    store.save_record(rec("r"))
    _drop_index(store)
    (store.root / "index.sqlite").write_bytes(b"this is not a database" * 100)
    broken = LocalStore(store.root)
    with pytest.raises(StoreError):
        broken.list_runs()


# -- several processes at once ---------------------------------------------------------------------


def _save_many(root: str, worker: int, count: int, barrier) -> None:  # runs in a child process
    st = LocalStore(Path(root))
    barrier.wait(timeout=10)
    for i in range(count):
        st.save_record(rec(f"w{worker}-{i:03d}", f"2024-01-01T00:00:{i:02d}.{worker:03d}Z", job=f"job{worker}"))


@pytest.mark.parametrize("prepared", [True, False], ids=["index-exists", "fresh-store"])
def test_several_processes_save_at_once(tmp_path: Path, prepared: bool) -> None:
    root = tmp_path / "store"
    if prepared:
        LocalStore(root).list_runs()  # the index exists before the writers start
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_save_many, args=(str(root), w, 25, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    st = LocalStore(root)
    runs = st.list_runs()
    assert len(runs) == 100
    assert len({r.id for r in runs}) == 100
    assert [r.created_at for r in runs] == sorted((r.created_at for r in runs), reverse=True)
    assert len(st.list_runs(job="job2")) == 25
    assert len(list((root / "runs").glob("*/run.json"))) == 100
    assert tmp_files(root) == []
