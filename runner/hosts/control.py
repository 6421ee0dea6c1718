"""`anna-run cancel RUN` and `anna-run hosts`.

Cancel sets the run's ``cancel`` key first, then: a run no host holds (queued) is settled here —
its final record claimed with SET NX, written `cancelled`, and its task taken out of the queue
(a copy that a worker holds anyway finds the record final and is dropped). A run a host holds
is stopped by that host: its heartbeat sees the key, stops and removes the container, and
records `cancelled`, as Ctrl-C does for a local run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from ..errors import AnnaRunError, NotFound
from ..record import RunRecord, now_iso
from .celery_app import PREFIX, broker_unreachable, host_settings, redis_client, redis_errors, run_key
from .lease import FINAL_TTL, claim_if_free, holder

if TYPE_CHECKING:
    import redis

    from ..store.base import Store

PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's Redis transport keeps one list per priority step
PRIORITY_SEP = "\x06\x16"


def cancel(store: Store, record: RunRecord, *, wait: float | None) -> RunRecord:
    """Cancel a run; with ``wait`` seconds, until its record says it ended. Returns the record."""
    if record.is_final:
        if record.status == "cancelled":
            return record
        raise NotFound(f"run {record.id} already ended: {record.status}; there is nothing to cancel")
    if record.queue is None:
        return _cancel_local(store, record, wait)
    settings = host_settings()
    r = redis_client(settings)
    try:
        r.set(run_key(record.id, "cancel"), now_iso(), ex=FINAL_TTL)
        claimed = claim_if_free(r, record.id, f"cancel from {socket.gethostname()}")
        if claimed == 1:
            _remove_from_queue(r, record.queue, record.id)
            latest = store.get(record.id)  # `running` when the host of an earlier attempt was lost
            reason = "cancelled before it started" if latest.status == "queued" else "cancelled by the user"
            final = latest.evolve(status="cancelled", reason=reason, finished_at=now_iso(), runner=None)
            store.save_record(final)
            key = run_key(record.id, "final-writes")
            r.pipeline().incr(key).expire(key, FINAL_TTL).execute()
            return final
    except redis_errors() as exc:
        raise broker_unreachable(settings, exc) from None
    return _wait_final(store, record.id, wait)


def _wait_final(store: Store, run_id: str, wait: float | None) -> RunRecord:
    record = store.get(run_id)
    deadline = time.monotonic() + (wait or 0)
    while not record.is_final and time.monotonic() < deadline:
        time.sleep(0.3)
        record = store.get(run_id)
    return record


def _cancel_local(store: Store, record: RunRecord, wait: float | None) -> RunRecord:
    """A local run (`run --detach`, or another terminal): its anna-run gets SIGINT, as Ctrl-C."""
    from ..orphans import runner_alive

    host, _, rest = (record.runner or "").partition(":")
    pid = rest.partition(":")[0]
    if record.status == "queued" or not record.runner:
        raise AnnaRunError(f"run {record.id} has not started yet; cancel it again in a moment")
    if host != socket.gethostname() or not pid.isdigit() or not runner_alive(record.runner):
        raise NotFound(f"run {record.id} is run by anna-run on {host or 'another machine'}; stop it there")
    os.kill(int(pid), signal.SIGINT)
    return _wait_final(store, record.id, wait)


def _remove_from_queue(r: redis.Redis, queue: str, run_id: str) -> int:
    """Take the run's task out of its Redis list (the task id is the run id)."""
    removed = 0
    for step in PRIORITY_STEPS:
        name = queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}"
        for raw in r.lrange(name, 0, -1):
            try:
                task_id = json.loads(raw)["headers"]["id"]
            except (ValueError, KeyError, TypeError):
                continue
            if task_id == run_id:
                removed += int(r.lrem(name, 1, raw))
    return removed


def list_hosts() -> list[dict[str, Any]]:
    """The live workers (each refreshes its entry every few seconds), their queues and runs."""
    settings = host_settings()
    r = redis_client(settings)
    try:
        workers: dict[str, dict[str, Any]] = {}
        for key in r.scan_iter(match=f"{PREFIX}:host:*", count=500):
            raw = r.get(key)
            if raw:
                info = json.loads(raw)
                workers[info["worker"]] = {**info, "runs": []}
        for key in r.scan_iter(match=f"{PREFIX}:run:*:lease", count=500):
            run_id = key.split(":")[2]
            lease = holder(r, run_id)
            if lease and lease.get("worker") in workers:
                run = {"id": run_id, "job": lease.get("job"), "started_at": lease.get("started_at")}
                workers[lease["worker"]]["runs"].append(run)
    except redis_errors() as exc:
        raise broker_unreachable(settings, exc) from None
    return sorted(workers.values(), key=lambda w: (w.get("host", ""), w["worker"]))
