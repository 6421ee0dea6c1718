"""The worker's package cache (hosts/pkgcache.py) on real packages: bounded by size, least
recently used first; a package a run holds is never removed."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest
from anna_run.errors import ConfigError
from anna_run.hosts.pkgcache import PackageCache, cache_bound
from anna_run.store.local import LocalStore


def _packages(tmp_path: Path, count: int) -> tuple[LocalStore, list[str]]:
    store = LocalStore(tmp_path / "store")
    shas = []
    for i in range(count):
        root = tmp_path / f"p{i}"
        root.mkdir()
        (root / "askanna.yml").write_text("job: {job: ['true']}\n")
        (root / "data.bin").write_bytes(os.urandom(200_000))  # incompressible, ~200 KB each
        shas.append(store.pack(root, cache_key=str(i)).sha256)
    return store, shas


def _fill(cache: PackageCache, store: LocalStore, shas: list[str]) -> None:
    for n, sha in enumerate(shas):
        with cache.in_use(sha):
            cache.tree(sha, cache.package(store, sha))
        then = time.time() - 1000 + n  # used in this order
        os.utime(cache.root / "locks" / f"{sha}.lock", (then, then))


def test_trim_drops_least_recently_used_until_within_bound(tmp_path: Path) -> None:
    store, shas = _packages(tmp_path, 4)
    cache = PackageCache(tmp_path / "cache", bound=10**9)
    _fill(cache, store, shas)
    sizes = {e.sha256: e.size for e in cache.entries()}
    assert all(s > 400_000 for s in sizes.values())  # the tar and its tree
    assert [e.sha256 for e in cache.entries()] == shas  # least recently used first

    cache.bound = sizes[shas[2]] + sizes[shas[3]]
    assert [i["sha256"] for i in cache.trim(dry_run=True)] == shas[:2]
    assert [i["sha256"] for i in cache.trim()] == shas[:2]
    for sha in shas[:2]:
        assert not (cache.root / "packages" / f"{sha}.tar").exists()
        assert not (cache.root / "trees" / sha).exists()
    assert [e.sha256 for e in cache.entries()] == shas[2:]
    assert cache.trim() == []

    with cache.in_use(shas[0]):  # used again: fetched again, now the most recent
        cache.tree(shas[0], cache.package(store, shas[0]))
    assert [e.sha256 for e in cache.entries()][-1] == shas[0]


def _hold(root: str, sha: str, ready, done) -> None:
    cache = PackageCache(Path(root), bound=0)
    with cache.in_use(sha):
        ready.set()
        done.wait(30)


def test_a_package_in_use_is_never_trimmed(tmp_path: Path) -> None:
    store, shas = _packages(tmp_path, 2)
    cache = PackageCache(tmp_path / "cache", bound=0)
    _fill(cache, store, shas)
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(cache.root), shas[0], ready, done))  # another run
    holder.start()
    try:
        assert ready.wait(30)
        assert [i["sha256"] for i in cache.trim()] == [shas[1]]
        assert (cache.root / "trees" / shas[0] / "data.bin").is_file()
    finally:
        done.set()
        holder.join(30)
    assert [i["sha256"] for i in cache.trim()] == [shas[0]]


def test_the_bound_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANNA_RUN_WORKER_CACHE_MB", raising=False)
    assert cache_bound() == 4096 * 1024 * 1024
    monkeypatch.setenv("ANNA_RUN_WORKER_CACHE_MB", "1.5")
    assert cache_bound() == int(1.5 * 1024 * 1024)
    for bad in ("-1", "lots"):
        monkeypatch.setenv("ANNA_RUN_WORKER_CACHE_MB", bad)
        with pytest.raises(ConfigError, match="ANNA_RUN_WORKER_CACHE_MB"):
            cache_bound()
