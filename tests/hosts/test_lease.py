"""The lease and the written-once guard, against the real redis-server."""

from __future__ import annotations

import time

import pytest
from anna_run.errors import Cancelled
from anna_run.hosts.lease import Heartbeat, Lease, LeasedStore, claim_if_free, holder, is_final
from anna_run.record import RunRecord


@pytest.fixture
def r(redis_server, redis_url):
    return redis_server.client()


def test_one_holder_at_a_time_and_takeover_after_expiry(r):
    first = Lease(r, "run-1", {"worker": "a"}, ttl=1)
    second = Lease(r, "run-1", {"worker": "b"}, ttl=1)
    assert first.acquire() and not second.acquire()
    assert holder(r, "run-1")["worker"] == "a"
    second.release()  # not the holder: nothing happens
    assert first.held() and first.renew()
    time.sleep(1.2)  # no heartbeat: expired
    assert not first.renew() and second.acquire()
    assert holder(r, "run-1")["worker"] == "b"


def test_final_record_claimed_once_and_only_by_the_holder(r):
    lease = Lease(r, "run-2", {"worker": "a"}, ttl=5)
    stranger = Lease(r, "run-2", {"worker": "b"}, ttl=5)
    assert lease.acquire()
    assert stranger.claim_final("b") == -1  # not the holder
    assert claim_if_free(r, "run-2", "cancel") == -1  # a host holds it: cancel leaves it to that host
    assert lease.claim_final("a") == 1
    assert lease.claim_final("a") == 0  # a second finisher cannot
    assert is_final(r, "run-2")
    lease.release()
    assert claim_if_free(r, "run-2", "cancel") == 0


def test_heartbeat_renews_and_sees_cancel(r):
    lease = Lease(r, "run-3", {"worker": "a"}, ttl=1.5)
    assert lease.acquire()
    stops: list[str] = []
    with Heartbeat(lease, 1.5, stops.append):
        time.sleep(2)
        assert lease.held()  # renewed past its TTL
        r.set("anna-run:run:run-3:cancel", "1")
        time.sleep(1)
    assert stops == ["cancel"]


def test_heartbeat_reports_a_lost_lease(r):
    lease = Lease(r, "run-4", {"worker": "a"}, ttl=1.5)
    assert lease.acquire()
    stops: list[str] = []
    with Heartbeat(lease, 1.5, stops.append):
        r.set(lease.key, "someone else")
        time.sleep(1.2)
    assert stops == ["lost"]


class MemoryStore:
    location = "memory"

    def __init__(self) -> None:
        self.saved: list[RunRecord] = []

    def save_record(self, record: RunRecord) -> RunRecord:
        self.saved.append(record)
        return record


def test_leased_store_writes_the_final_record_once(r):
    store = MemoryStore()
    lease = Lease(r, "run-5", {"worker": "a"}, ttl=5)
    assert lease.acquire()
    leased = LeasedStore(store, lease, {"attempts": 2, "queue": "q"}, who="a")
    running = RunRecord(id="run-5", job="j", project="p", status="running")
    leased.save_record(running)
    leased.save_record(running.evolve(status="succeeded"))
    leased.save_record(running.evolve(status="cancelled"))  # a second finisher: refused
    assert [(s.status, s.attempts, s.queue) for s in store.saved] == [("running", 2, "q"), ("succeeded", 2, "q")]
    assert leased.final_written.status == "succeeded" and r.get("anna-run:run:run-5:final-writes") == "1"
    with pytest.raises(Cancelled):
        leased.save_record(running)  # final already: a late running record is refused


def test_leased_store_refuses_a_host_that_lost_its_lease(r):
    store = MemoryStore()
    lease = Lease(r, "run-6", {"worker": "a"}, ttl=5)
    assert lease.acquire()
    leased = LeasedStore(store, lease, {}, who="a")
    r.set(lease.key, "another host")
    with pytest.raises(Cancelled):
        leased.save_record(RunRecord(id="run-6", job="j", project="p", status="running"))
    leased.save_record(RunRecord(id="run-6", job="j", project="p", status="failed"))
    assert store.saved == [] and leased.final_written is None
