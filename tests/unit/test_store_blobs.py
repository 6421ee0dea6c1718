"""`gc --blobs` on a real LocalStore: what no run names goes once past the grace period; what a
run names, or what was (re)used within it, stays."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from anna_run.record import BlobRef, RunRecord
from anna_run.store.local import LocalStore

DAY = 86400.0


def _project(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "askanna.yml").write_text(f"job: {{job: ['echo {text}']}}\n")
    return root


def _payload(store: LocalStore, tmp_path: Path, text: str) -> str:
    src = tmp_path / f"{text}.json"
    src.write_text(f'{{"v": "{text}"}}')
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    store.add_payload(src, sha)
    return sha


def _age(path: Path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


def _record(run_id: str, package: str | None, payload: str | None = None) -> RunRecord:
    return RunRecord(
        id=run_id,
        job="job",
        project="proj",
        status="succeeded",
        created_at="2024-01-01T00:00:00.000Z",
        package=BlobRef("p", package) if package else None,
        payload=BlobRef("q", payload) if payload else None,
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_unreferenced_old_blobs_go_referenced_and_young_ones_stay(store: LocalStore, tmp_path: Path) -> None:
    kept = store.pack(_project(tmp_path / "a", "a"), cache_key="a")
    orphan = store.pack(_project(tmp_path / "b", "b"), cache_key="b")
    young = store.pack(_project(tmp_path / "c", "c"), cache_key="c")
    kept_payload = _payload(store, tmp_path, "kept")
    orphan_payload = _payload(store, tmp_path, "orphan")
    store.save_record(_record("run-1", kept.sha256, kept_payload))
    for path in (kept.path, orphan.path, store.payload_path(kept_payload), store.payload_path(orphan_payload)):
        _age(path, 3)
    (store.packages_dir() / ".tmp-half-written").write_bytes(b"x")  # not a blob: never touched

    dry = store.collect_blobs(DAY, dry_run=True)
    assert {i["sha256"] for i in dry} == {orphan.sha256, orphan_payload}
    assert orphan.path.exists()

    removed = store.collect_blobs(DAY)
    assert sorted((i["kind"], i["sha256"]) for i in removed) == sorted(
        [("package", orphan.sha256), ("payload", orphan_payload)]
    )
    assert not orphan.path.exists() and not store.payload_path(orphan_payload).exists()
    assert kept.path.exists() and young.path.exists() and store.payload_path(kept_payload).exists()
    assert (store.packages_dir() / ".tmp-half-written").exists()
    assert store.collect_blobs(DAY) == []

    removed = store.collect_blobs(0)  # no grace: the young one goes too, the referenced one stays
    assert [i["sha256"] for i in removed] == [young.sha256] and kept.path.exists()


def test_a_reused_package_is_young_again(store: LocalStore, tmp_path: Path) -> None:
    root = _project(tmp_path / "a", "a")
    first = store.pack(root, cache_key="a")
    _age(first.path, 5)
    again = store.pack(root, cache_key="a")  # unchanged tree: the tar is there already, not written again
    assert again.sha256 == first.sha256
    sha = _payload(store, tmp_path, "p")
    _age(store.payload_path(sha), 5)
    _payload(store, tmp_path, "p")  # the same payload again
    assert store.collect_blobs(DAY) == []
    assert first.path.exists()


def test_a_removed_package_is_built_again(store: LocalStore, tmp_path: Path) -> None:
    root = _project(tmp_path / "a", "a")
    first = store.pack(root, cache_key="a")
    assert [i["sha256"] for i in store.collect_blobs(0)] == [first.sha256]
    again = store.pack(root, cache_key="a")  # the stat cache names it, the file is gone: rebuilt
    assert again.sha256 == first.sha256 and again.path.is_file() and not again.reused


def test_records_on_disk_count_even_when_the_index_misses_them(store: LocalStore, tmp_path: Path) -> None:
    pkg = store.pack(_project(tmp_path / "a", "a"), cache_key="a")
    store.save_record(_record("run-1", pkg.sha256))
    (store.root / "index.sqlite").unlink()  # the index lost: the records are the truth
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (store.root / extra).unlink(missing_ok=True)
    assert LocalStore(store.root).collect_blobs(0) == []
    assert pkg.path.exists()


def test_a_package_a_schedule_runs_is_kept(tmp_path) -> None:
    """`gc --blobs` keeps the package a registered schedule entry runs, though no run names it."""
    import os

    from anna_run.store.local import LocalStore
    from anna_run.store.schedules import Registration

    store = LocalStore(tmp_path / "store")
    sha = "ab" * 32
    package = store.packages_dir() / f"{sha}.tar"
    package.write_bytes(b"x")
    os.utime(package, (0, 0))  # old enough to go
    entry = Registration(
        id="e1", job="t", cron="0 6 * * *", timezone="UTC", package_sha256=sha, package_size=1,
        project="p", project_root="/p", registered_at="2026-01-01T00:00:00Z",
    )  # fmt: skip
    store.schedules().put(entry)
    assert store.collect_blobs(0) == [] and package.exists()
    store.schedules().remove(entry.id)
    assert [b["sha256"] for b in store.collect_blobs(0)] == [sha] and not package.exists()
