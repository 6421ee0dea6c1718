"""`anna-run submit JOB`: validate here exactly as `run` does, put the code package and the
payload in the shared store (content-addressed: unchanged code is not sent again), record the
run as `queued` and enqueue it on a Celery queue; a runner host does the rest.

The Celery message carries the run's request itself, with the package and payload by sha and the
--env-file values: the worker prepares the same run from it with the same ``prepare``, so a runner
host refuses what a local run refuses. The request holds the run's secrets (``--secret`` and
secret-named variables): with ``ANNA_RUN_SECRET_KEY`` set, the request and the --env-file values
travel sealed (``sealed.py``), opened only in the worker process that runs them; a run with
secrets is not submitted without a key. The task is shown everywhere (Celery's logs, `inspect`)
by the run id only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from ..errors import BrokerError, ConfigError
from ..record import BlobRef, RunRecord, now_iso
from ..report import Reporter
from .celery_app import TASK, HostSettings, broker_unreachable, host_settings, make_app, redis_client

if TYPE_CHECKING:
    from ..request import FromStore, PreparedRun, RunRequest
    from ..run import Staged
    from ..store.base import Store

# 2: the message carries the RunRequest itself; the worker prepares the same run from it.
# 3: the request and the --env-file values sealed (``sealed``) when a key is set, else ``open``.
MESSAGE_VERSION = 3
BROKER_WAIT_S = 5  # a broker that restarts is waited for this long before a submit gives up


def submit(request: RunRequest, queue: str, reporter: Reporter, source: FromStore | None = None) -> RunRecord:
    """Check, publish, record `queued`, enqueue; returns the queued record. Raises
    ConfigError (nothing queued, nothing stored) or BrokerError. ``source``: the code is a
    package in the store already (a scheduled fire, `anna-run beat`), not the project's tree."""
    from ..report import MaskedReporter
    from ..request import masked_errors, prepare, with_run_id
    from ..run import queued_record, stage
    from ..store import open_store

    settings = host_settings()  # no broker named: a config error before anything else
    check_queue(queue)
    request = dataclasses.replace(with_run_id(request), trigger=request.trigger or "submit")
    prepared = prepare(request, reporter, source)
    try:
        keys = _sealing_keys(prepared)
        _reach(settings)
        with masked_errors(prepared.masker):
            store = open_store(request.store, reporter=reporter)
            staged = stage(prepared, store, MaskedReporter(reporter, prepared.masker.mask))
            record = queued_record(prepared, staged).evolve(queue=queue, attempts=0, host="")  # no host yet
            message = task_message(prepared, staged, queue, keys)
            message["record"] = record.to_dict()  # masked: what the worker starts the record from
            store.save_record(record)
            _enqueue(settings, store, record, message)
        return record
    finally:
        prepared.cleanup()


def _reach(settings: HostSettings) -> None:
    """Ping the broker, waiting up to BROKER_WAIT_S while it refuses connections or loads its
    data (a restart); anything else, or still nothing, is a BrokerError."""
    import redis
    import tenacity

    r = redis_client(settings)
    try:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_delay(BROKER_WAIT_S),
            wait=tenacity.wait_exponential(multiplier=0.25, max=2),
            retry=tenacity.retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
            reraise=True,
        ):
            with attempt:
                r.ping()
    except Exception as exc:
        raise broker_unreachable(settings, exc) from None


def check_queue(queue: str) -> None:
    if not queue or any(c.isspace() or c == "," for c in queue):
        raise ConfigError(f"--queue {queue!r}: one queue name, no spaces or commas")


def has_secrets(prepared: PreparedRun) -> bool:
    """Whether the run has a secret: a --secret, or a variable of any source whose name marks one."""
    from ..variables import is_secret_name

    return bool(prepared.sources["secrets"]) or any(
        is_secret_name(name) for values in prepared.sources.values() for name in values
    )


def _sealing_keys(prepared: PreparedRun) -> tuple[str, ...]:
    """The keys to seal the message with (checked); ConfigError for a run with secrets and no key."""
    from .sealed import KEY_ENV, KEY_HINT, configured_keys, sealer

    keys = configured_keys()
    if keys:
        sealer(keys)  # a bad key: exit 2 before anything is stored
    elif has_secrets(prepared):
        raise ConfigError(
            f"run {prepared.run_id} has secrets and {KEY_ENV} is not set: they would rest in the broker in clear",
            hint=KEY_HINT,
        )
    return keys


def task_message(prepared: PreparedRun, staged: Staged, queue: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The task's message: the request itself, and what of it only this machine can read (the
    --env-file values, the code package and payload, by sha256, in the store). With ``keys`` the
    request and the --env-file values are one sealed token (``sealed``), else they are ``open``."""
    from .sealed import seal

    request = dataclasses.replace(prepared.request, payload=None, env_files=(), project=None)
    payload: BlobRef | None = staged.payload
    inner = {"request": request.to_json(), "env_file": prepared.sources["env_file"]}
    return {
        "v": MESSAGE_VERSION,
        "run_id": prepared.run_id,
        "job": prepared.job.name,
        **({"sealed": seal(inner, keys)} if keys else {"open": inner}),
        "project_id": prepared.project_id,
        "project_root": prepared.project_root,
        "package": {"sha256": staged.package.sha256, "size": staged.package.size},
        "payload": None if payload is None else {"sha256": payload.sha256, "size": payload.size},
        "queue": queue,
        "submitted_at": now_iso(),
    }


def _enqueue(settings: HostSettings, store: Store, record: RunRecord, message: dict[str, Any]) -> None:
    app = make_app(settings)
    try:
        # The task id is the run id: `cancel` finds the task in its queue by it. The repr shown
        # in Celery's logs and `inspect` is the run id, never the message (it holds secrets).
        app.send_task(
            TASK,
            args=[message],
            task_id=record.id,
            queue=record.queue,
            argsrepr=repr((record.id,)),
            kwargsrepr="{}",
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.5, "interval_step": 1, "interval_max": 3},
        )
    except Exception as exc:
        store.save_record(record.evolve(status="failed", reason=f"not queued: {exc}", finished_at=now_iso()))
        raise BrokerError(f"run {record.id} could not be queued: {exc}") from None
    finally:
        app.close()


# -- following a submitted run ---------------------------------------------------------------------
def follow_remote(store: Store, record: RunRecord, emit: Callable[[str, str], None]) -> RunRecord:
    """Pass a submitted run's live log to ``emit(kind, text)`` while it goes on; kinds are
    stdout, stderr, note, attempt and, when the live log is gone (expired, or never written),
    ``stored`` with what the stored log holds past what was already passed on. Returns the final
    record."""
    from .livelog import follow

    settings = host_settings()
    r = redis_client(settings)
    passed = {"stdout": 0, "stderr": 0, "log": 0}

    def counting(kind: str, text: str) -> None:
        if kind == "attempt":  # the log starts over; so does the stored one
            passed.update(stdout=0, stderr=0, log=0)
        elif kind in ("stdout", "stderr"):
            size = len(text.encode("utf-8", "replace"))
            passed[kind] += size
            passed["log"] += size
        emit(kind, text)

    try:
        status = follow(r, record.id, counting, lambda: store.get(record.id).is_final)
    except Exception as exc:
        from .celery_app import redis_errors

        if not isinstance(exc, redis_errors()):
            raise
        raise broker_unreachable(settings, exc) from None
    final = _final_record(store, record.id)
    if status is None:
        for stream in ("log", "stdout", "stderr"):
            emit(f"stored-{stream}", _stored_tail(store, final.id, stream, passed[stream]))
    return final


def _stored_tail(store: Store, run_id: str, stream: str, skip: int) -> str:
    data = b"".join(store.iter_log(run_id, stream))
    return data[skip:].decode("utf-8", "replace")


def _final_record(store: Store, run_id: str, timeout: float = 60) -> RunRecord:
    """The final record (the worker writes it just before it ends the live log)."""
    deadline = time.monotonic() + timeout
    record = store.get(run_id)
    while not record.is_final and time.monotonic() < deadline:
        time.sleep(0.2)
        record = store.get(run_id)
    return record


def wait(store: Store, record: RunRecord, out: IO[str], err: IO[str]) -> RunRecord:
    """`submit --wait`: the job's output as it comes (stdout to ``out``, stderr to ``err``),
    the runner's steps as notes on ``err``; returns the final record."""

    def emit(kind: str, text: str) -> None:
        if kind == "stdout":
            out.write(text)
            out.flush()
        elif kind == "stderr":
            err.write(text)
            err.flush()
        elif kind in ("note", "attempt"):
            err.write(f"anna-run: {text}\n")
            err.flush()
        elif kind == "stored-stdout":
            out.write(text)
            out.flush()
        elif kind == "stored-stderr":
            err.write(text)
            err.flush()

    return follow_remote(store, record, emit)
