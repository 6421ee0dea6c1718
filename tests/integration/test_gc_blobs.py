"""`anna-run gc --blobs` on real stores, with real runs going on: what a run uses is never removed
(the local store, a runner host's cache, the S3 store)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from anna_run.record import BlobRef, RunRecord, now_iso
from anna_run.store.local import LocalStore
from test_hosts import Hosts

BB = "anna-run/busybox:latest"
PROJECT = f"""
    environment: {{image: {BB}}}
    slow:
      job: ['sleep 4', 'echo done > out.txt']
      output: {{result: out.txt}}
      network: none
"""


def _blobs(out: str) -> list[str]:
    """The packages and payloads a `gc --json` names (not the leftovers of dead runs it may find)."""
    return [i["sha256"] for i in json.loads(out) if "sha256" in i]


def _wait_running(read, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = read()
        if record and record.get("status") == "running":
            return record
        time.sleep(0.1)
    raise AssertionError("the run never got to running")


def _orphan(store: LocalStore, tmp_path: Path) -> str:
    """A real package that no run names (as after a refused or abandoned run)."""
    root = tmp_path / "other"
    root.mkdir()
    (root / "askanna.yml").write_text("job: {job: ['true']}\n")
    return store.pack(root, cache_key="other").sha256


def test_gc_blobs_while_a_local_run_goes_on_keeps_its_package(env, busybox, tmp_path):
    env.project(PROJECT)
    orphan = _orphan(LocalStore(env.store), tmp_path)
    cache_home = {"XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}  # no runner host here
    proc = env.popen("run", "slow")
    try:
        records = lambda: env.records()[0] if env.records() else None  # noqa: E731
        running = _wait_running(records)
        package = env.store / "packages" / f"{running['package']['sha256']}.tar"
        assert package.is_file()

        dry = env.run("gc", "--blobs", "--keep-days", "0", "--dry-run", "--json", **cache_home)
        assert dry.returncode == 0, dry.output
        assert _blobs(dry.stdout) == [orphan]
        gc = env.run("gc", "--blobs", "--keep-days", "0", "--json", **cache_home)
        assert gc.returncode == 0, gc.output
        assert _blobs(gc.stdout) == [orphan]
        assert package.is_file()
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    final = env.last()
    assert final["status"] == "succeeded" and package.is_file()
    assert not (env.store / "packages" / f"{orphan}.tar").exists()
    assert env.run("rerun", final["id"], "-q").returncode == 0  # its package is still whole
    assert _blobs(env.run("gc", "--blobs", "--json", **cache_home).stdout) == []


@pytest.fixture
def gc_hosts(env, redis_server, redis_url, tmp_path, api, busybox):
    env.project(PROJECT)
    h = Hosts(env, redis_server, tmp_path, api)
    try:
        yield h
    finally:
        h.close()


def test_gc_blobs_during_a_worker_run_and_the_bounded_worker_cache(gc_hosts, tmp_path):
    hosts = gc_hosts
    worker = hosts.worker(ANNA_RUN_WORKER_CACHE_MB="0")  # every package past its bound once unused
    worker_cache = worker.home / "cache" / "anna-run" / "worker"
    run_id = hosts.submit("slow")
    _wait_running(lambda: hosts.show(run_id))
    sha = hosts.show(run_id)["package"]["sha256"]
    cached = worker_cache / "packages" / f"{sha}.tar"
    assert cached.is_file() and (worker_cache / "trees" / sha / "askanna.yml").is_file()

    # gc on the runner host itself (its worker cache) and on the store, while the run goes on.
    gc = hosts.run(
        "gc",
        "--blobs",
        "--keep-days",
        "0",
        "--json",
        XDG_CACHE_HOME=str(worker.home / "cache"),
        ANNA_RUN_WORKER_CACHE_MB="0",
    )
    assert gc.returncode == 0, gc.output
    assert _blobs(gc.stdout) == []  # nothing unused: the store's package is named, the cache's held
    assert cached.is_file() and (hosts.env.store / "packages" / f"{sha}.tar").is_file()

    final = hosts.final(run_id, timeout=90)
    assert final["status"] == "succeeded", final
    assert (hosts.env.store / "packages" / f"{sha}.tar").is_file()
    deadline = time.monotonic() + 10
    while cached.exists() and time.monotonic() < deadline:  # the worker trims after the run
        time.sleep(0.1)
    assert not cached.exists() and not (worker_cache / "trees" / sha).exists()
    again = hosts.submit("slow")  # fetched again from the store
    assert hosts.final(again, timeout=90)["status"] == "succeeded"


def test_gc_blobs_on_the_s3_store(make_s3_store, tmp_path):
    store = make_s3_store()
    kept, orphan = [], []
    for name, into in (("kept", kept), ("orphan", orphan)):
        root = tmp_path / name
        root.mkdir()
        (root / "askanna.yml").write_text(f"job: {{job: ['echo {name}']}}\n")
        pkg = store.pack(root, cache_key=name)
        store.publish_package(pkg.path, pkg.sha256)
        into.append(pkg.sha256)
    payload = tmp_path / "payload.json"
    payload.write_text('{"a": 1}')
    psha = hashlib.sha256(payload.read_bytes()).hexdigest()
    store.add_payload(payload, psha)
    record = RunRecord(
        id="gcs3-run1-0000-0000",
        job="job",
        project="proj",
        status="succeeded",
        created_at=now_iso(),
        finished_at=now_iso(),
        package=BlobRef("p", kept[0]),
    )
    assert store.save_record(record).upload is None

    other = make_s3_store(prefix=store.prefix)  # another machine: its own, empty spool
    assert other.collect_blobs(86400) == []  # all young
    removed = other.collect_blobs(0, dry_run=True)
    assert sorted(i["sha256"] for i in removed) == sorted([orphan[0], psha])
    removed = other.collect_blobs(0)
    assert sorted(i["sha256"] for i in removed) == sorted([orphan[0], psha])
    keys = other.bucket.list_keys(other._key("packages", ""))
    assert keys == [other._key("packages", f"{kept[0]}.tar")]
    assert other.bucket.list_keys(other._key("payloads", "")) == []
    # On the first machine, its spool's copies of the unused blobs go too; the run's stays.
    local = store.collect_blobs(0)
    assert {i["sha256"] for i in local} == {orphan[0], psha}
    assert store.package_file(kept[0]).is_file() and not store.package_file(orphan[0]).exists()


def test_a_local_run_on_s3_gets_its_package_back_after_a_gc_elsewhere(make_s3_store, tmp_path):
    """A local run's live record stays in its machine's spool: a `gc --blobs --keep-days 0` on
    another machine cannot see it and takes the package; the run's final upload puts it back."""
    here = make_s3_store()
    root = tmp_path / "p"
    root.mkdir()
    (root / "askanna.yml").write_text("job: {job: ['true']}\n")
    pkg = here.pack(root, cache_key="p")
    here.publish_package(pkg.path, pkg.sha256)
    live = RunRecord(
        id="gcs3-live-0000-0000",
        job="job",
        project="proj",
        status="running",
        created_at=now_iso(),
        package=BlobRef("p", pkg.sha256),
    )
    here.save_record(live)
    elsewhere = make_s3_store(prefix=here.prefix)
    assert [i["sha256"] for i in elsewhere.collect_blobs(0)] == [pkg.sha256]
    assert elsewhere.bucket.list_keys(elsewhere._key("packages", "")) == []
    assert here.save_record(live.evolve(status="succeeded", finished_at=now_iso())).upload is None
    assert elsewhere.bucket.list_keys(elsewhere._key("packages", "")) == [
        elsewhere._key("packages", f"{pkg.sha256}.tar")
    ]
    assert elsewhere.collect_blobs(0) == []
