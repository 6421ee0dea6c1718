"""A run's lease, and the guard that lets a run's record be written once, by its lease holder.

Redis redelivers a task that was not acknowledged within the visibility timeout: the task of a
host that died, but also the task of a long run still going on a live host. So a delivery only
*starts* a run when it takes the run's lease, one key set with NX and a TTL that the holder's
heartbeat renews. A live run keeps its lease; a dead host's lease expires and the next
delivery takes the run over.

The record: every write of a submitted run's record goes through :class:`LeasedStore`, which
writes only while the lease is held, and the final record only after claiming the run's
``final`` key with SET NX: a second finisher (a host that lost its lease, `cancel` racing the
end) cannot overwrite it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import Cancelled
from ..record import RunRecord
from .celery_app import redis_errors, run_key

if TYPE_CHECKING:
    import redis

    from ..store.base import Store

log = logging.getLogger("anna_run.hosts")

FINAL_TTL = 7 * 24 * 3600  # the record in the store says final too; this key only settles races

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# 1: claimed; 0: the run is already final; -1: the caller does not hold the lease.
_CLAIM_FINAL = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('set', KEYS[2], ARGV[2], 'NX', 'EX', ARGV[3]) then return 1 end
return 0
"""
# For `cancel` of a queued run: 1: claimed; 0: already final; -1: a host holds it (it runs).
_CLAIM_IF_FREE = """
if redis.call('exists', KEYS[1]) == 1 then return -1 end
if redis.call('set', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
return 0
"""


class Lease:
    """The lease of one run: the key ``anna-run:run:<id>:lease`` holding who runs it."""

    def __init__(self, r: redis.Redis, run_id: str, owner: dict[str, Any], ttl: float) -> None:
        self.r = r
        self.run_id = run_id
        self.key = run_key(run_id, "lease")
        self.ttl_ms = int(ttl * 1000)
        self.value = json.dumps({**owner, "run": run_id, "token": uuid.uuid4().hex}, sort_keys=True)

    def acquire(self) -> bool:
        return bool(self.r.set(self.key, self.value, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        """Extend the lease; False when it is no longer ours (expired, or taken over)."""
        return bool(self.r.eval(_RENEW, 1, self.key, self.value, self.ttl_ms))

    def held(self) -> bool:
        return self.r.get(self.key) == self.value

    def release(self) -> None:
        self.r.eval(_RELEASE, 1, self.key, self.value)

    def claim_final(self, who: str) -> int:
        """1: this holder writes the final record; 0: it is already written; -1: lease lost."""
        return int(self.r.eval(_CLAIM_FINAL, 2, self.key, run_key(self.run_id, "final"), self.value, who, FINAL_TTL))


def holder(r: redis.Redis, run_id: str) -> dict[str, Any] | None:
    """Who holds the run's lease now (None: nobody, the run is not going on anywhere)."""
    raw = r.get(run_key(run_id, "lease"))
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return {"run": run_id}


def is_final(r: redis.Redis, run_id: str) -> bool:
    return bool(r.exists(run_key(run_id, "final")))


def claim_if_free(r: redis.Redis, run_id: str, who: str) -> int:
    """Claim the final record of a run no host holds (cancel of a queued run); see _CLAIM_IF_FREE."""
    return int(r.eval(_CLAIM_IF_FREE, 2, run_key(run_id, "lease"), run_key(run_id, "final"), who, FINAL_TTL))


class Heartbeat:
    """Renews a lease while a run goes on and watches for `anna-run cancel`.

    ``on_stop(why)`` is called once, from the heartbeat thread, with "cancel" when the run was
    cancelled (the lease is still renewed, so the holder can record it) or "lost" when the lease
    is gone (another host may run it now: stop, record nothing)."""

    def __init__(self, lease: Lease, ttl: float, on_stop: Callable[[str], None]) -> None:
        self.lease = lease
        self.ttl = ttl
        self.on_stop = on_stop
        self.cancel_key = run_key(lease.run_id, "cancel")
        self.stopped: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="anna-run-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(10)

    def _loop(self) -> None:
        errors = redis_errors()
        renew_every = self.ttl / 3
        poll = min(0.5, renew_every)
        last_renewed = next_renew = time.monotonic()
        next_renew += renew_every
        while not self._done.wait(poll):
            now = time.monotonic()
            try:
                if now >= next_renew:
                    if not self.lease.renew():
                        self._stop("lost")
                        return
                    last_renewed, next_renew = now, now + renew_every
                if self.stopped is None and self.lease.r.exists(self.cancel_key):
                    self._stop("cancel")
            except errors as exc:
                # Redis away for a moment is no reason to stop a run; away past the TTL, the
                # lease may be another host's by now.
                log.warning("run %s: heartbeat failed: %s", self.lease.run_id, exc)
                if now - last_renewed > self.ttl:
                    self._stop("lost")
                    return

    def _stop(self, why: str) -> None:
        if self.stopped is None:
            self.stopped = why
            self.on_stop(why)


class LeasedStore:
    """A store as the lease holder of one run sees it: that run's records are stamped with the
    runner-host fields and written only while the lease is held; the final one once.

    ``final_written`` is the final record when this holder wrote it. Every final write is
    counted in Redis (``anna-run:run:<id>:final-writes``), so a test can prove it happened once.
    """

    def __init__(self, store: Store, lease: Lease, stamp: dict[str, Any], who: str) -> None:
        self._store = store
        self.lease = lease
        self.stamp = stamp
        self.who = who
        self.final_written: RunRecord | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @property
    def location(self) -> str:
        return self._store.location

    def save_record(self, record: RunRecord) -> RunRecord:
        if record.id != self.lease.run_id:
            return self._store.save_record(record) or record
        record = record.evolve(**self.stamp)
        if not record.is_final:
            if not self.lease.held():
                raise Cancelled(f"run {record.id}: this host no longer holds its lease")
            if is_final(self.lease.r, record.id):
                raise Cancelled(f"run {record.id} was cancelled before it started")
            return self._store.save_record(record) or record
        claimed = self.lease.claim_final(self.who)
        if claimed == 0:
            log.info("run %s: its final record is written already", record.id)
            return record
        if claimed != 1:
            log.warning("run %s: final record not written here: this host lost the lease", record.id)
            return record
        stored = self._store.save_record(record) or record
        self.final_written = stored
        key = run_key(record.id, "final-writes")
        self.lease.r.pipeline().incr(key).expire(key, FINAL_TTL).execute()
        return stored
