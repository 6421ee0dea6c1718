"""Index packs (store/s3_packs.py) on a real S3 server: a listing with a cold cache reads one
pack and the few runs it lacks, and trusts a packed record only where its ETag agrees."""

from __future__ import annotations

import io

from anna_run.record import RunRecord
from anna_run.store import s3_packs
from conftest import S3_BUCKET


def _records(n: int, tag: str = "p") -> list[RunRecord]:
    return [
        RunRecord(
            id=f"{tag}{i:04d}-pk",
            job="train",
            project="proj",
            status="succeeded",
            created_at=f"2024-06-01T00:{i // 60:02d}:{i % 60:02d}.000Z",
        )
        for i in range(n)
    ]


def _put(seaweedfs, store, records: list[RunRecord]) -> None:
    client = seaweedfs.client()
    for record in records:
        body = record.to_json().encode()
        client.put_object(S3_BUCKET, store.index_key(record), io.BytesIO(body), len(body))


def _packs(store) -> list[str]:
    return sorted(store.bucket.list_keys(f"{store.prefix}/index-packs/"))


def _one_by_one(store) -> list[str]:
    """Record the index objects a listing reads on their own (the real reads still happen)."""
    asked: list[str] = []
    real = store.bucket.get_texts

    def get_texts(keys: list[str]):
        asked.extend(keys)
        return real(keys)

    store.bucket.get_texts = get_texts
    return asked


def test_a_cold_listing_reads_the_pack_and_only_what_it_lacks(seaweedfs, make_s3_store) -> None:
    store = make_s3_store()
    older, newer = _records(60), _records(5, "n")
    _put(seaweedfs, store, older)
    store.pack_index()
    assert len(_packs(store)) == 1
    _put(seaweedfs, store, newer)
    fresh = make_s3_store(prefix=store.prefix)  # another machine: nothing cached
    asked = _one_by_one(fresh)
    listed = fresh.list_runs()
    assert sorted(r.id for r in listed) == sorted(r.id for r in older + newer)
    assert sorted(asked) == sorted(store.index_key(r) for r in newer)


def test_a_packed_record_counts_only_while_its_etag_agrees(seaweedfs, make_s3_store) -> None:
    store = make_s3_store()
    records = _records(40)
    _put(seaweedfs, store, records)
    store.pack_index()
    changed = records[3].evolve(status="failed")  # rewritten since it was packed
    _put(seaweedfs, store, [changed])
    gone = records[7]
    seaweedfs.client().remove_object(S3_BUCKET, store.index_key(gone))
    fresh = make_s3_store(prefix=store.prefix)
    asked = _one_by_one(fresh)
    listed = {r.id: r for r in fresh.list_runs()}
    assert gone.id not in listed and len(listed) == 39
    assert listed[changed.id].status == "failed"
    assert asked == [store.index_key(changed)]


def test_a_damaged_or_vanished_pack_costs_time_not_runs(seaweedfs, make_s3_store) -> None:
    store = make_s3_store()
    records = _records(30)
    _put(seaweedfs, store, records)
    store.pack_index()
    junk = b"not a gzip pack"
    newest = f"{store.prefix}/index-packs/0000000000000-0000000000000000.jsonl.gz"  # sorts first
    seaweedfs.client().put_object(S3_BUCKET, newest, io.BytesIO(junk), len(junk))
    fresh = make_s3_store(prefix=store.prefix)
    asked = _one_by_one(fresh)
    assert sorted(r.id for r in fresh.list_runs()) == sorted(r.id for r in records)
    assert asked == []  # the pack before the damaged one served
    for key in _packs(store):
        seaweedfs.client().remove_object(S3_BUCKET, key)
    fresh = make_s3_store(prefix=store.prefix)
    asked = _one_by_one(fresh)
    assert sorted(r.id for r in fresh.list_runs()) == sorted(r.id for r in records)
    assert len(asked) == 30


def test_a_whole_listing_that_read_many_alone_packs_them(seaweedfs, make_s3_store) -> None:
    store = make_s3_store()
    records = _records(s3_packs.REPACK_AFTER + 15)  # 10 of them cached by the first listing
    _put(seaweedfs, store, records)
    first = make_s3_store(prefix=store.prefix)
    assert len(first.list_runs(limit=10)) == 10  # the newest only: no pack
    assert _packs(store) == []
    assert len(first.list_runs()) == len(records)
    assert len(_packs(store)) == 1
    second = make_s3_store(prefix=store.prefix)
    asked = _one_by_one(second)
    assert len(second.list_runs()) == len(records) and asked == []


def test_a_finished_run_packs_the_index_in_its_turn(seaweedfs, make_s3_store, monkeypatch) -> None:
    from test_s3_store import final_run

    store = make_s3_store()
    earlier = _records(s3_packs.USE_FROM + 5)
    _put(seaweedfs, store, earlier)
    monkeypatch.setattr(s3_packs, "PACK_EVERY", 1)  # every run's turn
    assert store.save_record(final_run(store, "fin-0001", {"a.txt": b"a"})).upload is None
    fresh = make_s3_store(prefix=store.prefix)
    asked = _one_by_one(fresh)
    assert {r.id for r in fresh.list_runs()} == {r.id for r in earlier} | {"fin-0001"}
    assert asked == []


def test_only_the_newest_packs_are_kept(seaweedfs, make_s3_store) -> None:
    store = make_s3_store()
    _put(seaweedfs, store, _records(3))
    for _ in range(4):
        store.pack_index()
    assert len(_packs(store)) == s3_packs.KEPT


def test_about_one_run_in_fifty_packs() -> None:
    turns = sum(s3_packs.pack_turn(f"2024{i:08d}-abcd") for i in range(20_000))
    assert 20_000 / 80 < turns < 20_000 / 30
