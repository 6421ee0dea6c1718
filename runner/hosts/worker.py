"""`anna-run worker`: a Celery worker that runs submitted jobs with this host's engine.

A delivery of a run goes: already final? done. Take the run's lease — held by a live host?
look again later (a *watch*: the task is retried with a countdown, so a copy of it stays
queued in case that host dies). Count the attempt; too many? recorded failed. Remove what an
earlier, lost attempt left on this engine. Fetch the code package by sha into the local cache,
build the same ``Prepared`` a local run has (see rerun.py: the code comes from the store, not a
working tree) and call ``run.execute`` — the same code path as a local run — with a store that
lets only the lease holder write the record, and a Reporter that publishes the live log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import AnnaRunError, Cancelled, ConfigError, NotFound, StoreError
from ..record import RunRecord, now_iso
from .celery_app import TASK, HostSettings, host_key, host_settings, make_app, redis_client, redis_errors, run_key
from .lease import FINAL_TTL, Heartbeat, Lease, LeasedStore, is_final
from .livelog import LivePublisher
from .pkgcache import PackageCache, cache_bound, default_cache
from .submit import MESSAGE_VERSION

if TYPE_CHECKING:
    import redis
    from celery import Celery

    from ..report import Reporter
    from ..request import PreparedRun
    from ..store.base import Store

log = logging.getLogger("anna_run.hosts")

PROJECT_FILES = ("askanna.yml", "askanna.yaml")
REGISTRY_EVERY = 5.0  # seconds between refreshes of this worker's entry in `anna-run hosts`


@dataclass(frozen=True)
class WorkerContext:
    """What every process of one worker shares (set before Celery forks its pool)."""

    settings: HostSettings
    store: str  # the shared run store's location
    cache: Path  # local cache: packages and their extracted trees, by sha
    queues: tuple[str, ...]
    concurrency: int


_context: WorkerContext | None = None
_clients: dict[int, redis.Redis] = {}  # per process: a forked child must not share a socket


def _redis(settings: HostSettings) -> redis.Redis:
    pid = os.getpid()
    if pid not in _clients:
        _clients.clear()
        _clients[pid] = redis_client(settings)
    return _clients[pid]


# -- the worker process ----------------------------------------------------------------------------
def serve(queues: tuple[str, ...], concurrency: int, store: str | None) -> None:
    """Run a Celery worker on ``queues`` with ``concurrency`` processes until it is stopped.

    SIGTERM (or one Ctrl-C) is Celery's warm shutdown: no new work is taken, tasks prefetched
    but not started go back to the queue, runs going on finish. Under systemd use
    ``KillMode=mixed`` so the SIGTERM reaches the main process only (examples/runner-host)."""
    global _context
    from ..engine import connect
    from ..orphans import collect_garbage
    from ..store import open_store

    settings = host_settings()
    cache_bound()  # a bad ANNA_RUN_WORKER_CACHE_MB is refused before the worker starts
    st = open_store(store)
    api = connect()
    api.ping()
    for item in collect_garbage(api, st):  # what a killed worker of this host left behind
        log.warning("removed %s %s of run %s (its runner is gone)", item["kind"], item["name"], item["run"])
    r = redis_client(settings)
    try:
        r.ping()
    except Exception as exc:
        from .celery_app import broker_unreachable

        raise broker_unreachable(settings, exc) from None
    _context = WorkerContext(settings, st.location, default_cache(), queues, concurrency)
    os.environ["ANNA_RUN_STORE"] = st.location  # the pool's processes open the same store
    app = make_app(settings)
    register(app)
    node = f"anna-run.{os.getpid()}@{socket.gethostname()}"
    _connect_registry(app, node)
    app.worker_main(
        [
            "worker",
            f"--queues={','.join(queues)}",
            f"--concurrency={concurrency}",
            "--pool=prefork",  # each run in a process of its own; a run is stopped through a signal there
            f"--hostname={node}",
            "--without-gossip",
            "--without-mingle",
            f"--loglevel={os.environ.get('ANNA_RUN_WORKER_LOGLEVEL', 'INFO')}",
        ]
    )


def register(app: Celery) -> None:
    @app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
    def run_task(self: Any, message: dict[str, Any]) -> str:
        return handle_delivery(self, message)


def _connect_registry(app: Celery, node: str) -> None:
    """Keep ``anna-run:host:<node>`` alive while this worker lives (`anna-run hosts` reads it)."""
    from celery import signals

    stop = threading.Event()
    state = {"state": "ready"}

    def loop() -> None:
        assert _context is not None
        r = redis_client(_context.settings)
        info = {
            "worker": node,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": list(_context.queues),
            "concurrency": _context.concurrency,
            "started_at": now_iso(),
            "version": __version__,
        }
        while True:
            with contextlib.suppress(Exception):
                r.set(host_key(node), json.dumps({**info, **state}), ex=int(REGISTRY_EVERY * 3))
            if stop.wait(REGISTRY_EVERY):
                break
        with contextlib.suppress(Exception):
            r.delete(host_key(node))

    thread = threading.Thread(target=loop, name="anna-run-registry", daemon=True)

    def ready(**_: Any) -> None:
        thread.start()

    def shutting_down(**_: Any) -> None:
        state["state"] = "stopping"

    def shutdown(**_: Any) -> None:
        stop.set()
        if thread.is_alive():
            thread.join(5)

    signals.worker_ready.connect(ready, weak=False)
    signals.worker_shutting_down.connect(shutting_down, weak=False)
    signals.worker_shutdown.connect(shutdown, weak=False)


# -- one delivery ----------------------------------------------------------------------------------
def handle_delivery(task: Any, message: dict[str, Any]) -> str:
    """What a worker does with one delivery of a run; returns what became of it (for the log)."""
    ctx = _context or WorkerContext(host_settings(), os.environ.get("ANNA_RUN_STORE", ""), default_cache(), (), 1)
    settings = ctx.settings
    run_id = message["run_id"]
    node = getattr(task.request, "hostname", None) or socket.gethostname()
    try:
        claimed = _claim(ctx, message, node)
    except (StoreError, *redis_errors()) as exc:
        # The store or Redis is away for now: this delivery must not be the run's last.
        log.warning("run %s: %s; looking again in %g s", run_id, exc, settings.watch_interval * 2)
        raise task.retry(countdown=settings.watch_interval * 2, max_retries=None, **_task_repr(run_id)) from None
    if claimed is None:
        return "already final"
    if isinstance(claimed, float):
        # A live host runs it (Redis redelivered a long run's task). Keep a copy of the task
        # queued, so the run is taken over if that host dies, and look again later.
        raise task.retry(countdown=claimed, max_retries=None, **_task_repr(run_id))
    store, lease, base, attempt = claimed
    host = socket.gethostname()
    stamp = {"attempts": attempt, "queue": base.queue, "worker": node, "host": host, "created_at": base.created_at}
    leased = LeasedStore(store, lease, stamp, who=f"{node} attempt {attempt}")
    publisher = LivePublisher(lease.r, run_id, settings)
    try:
        publisher.attempt(attempt, host)
        if attempt > 1:
            _remove_leftovers(run_id, publisher)
        if lease.r.exists(run_key(run_id, "cancel")):
            _settle(leased, base, "cancelled", "cancelled before it started" if attempt == 1 else "cancelled")
        elif attempt > settings.max_attempts:
            lost = f"started {attempt - 1} time(s); each time its runner host was lost (last: {base.host or '?'})"
            _settle(leased, base, "failed", lost)
        else:
            _run(ctx, message, store, leased, lease, publisher, base)
    except AnnaRunError as exc:  # no engine here, say: the run must still end somewhere
        log.error("run %s: %s", run_id, exc.message)
        if leased.final_written is None:
            with contextlib.suppress(AnnaRunError):
                _settle(leased, base, "failed", f"engine: {exc.message}")
    finally:
        status = leased.final_written.status if leased.final_written else None
        publisher.close(status)
        with contextlib.suppress(Exception):
            lease.release()
    return status or "not finished here"


def _task_repr(run_id: str) -> dict[str, str]:
    """How Celery shows the task in its logs and `inspect`: by its run id, never the message."""
    return {"argsrepr": repr((run_id,)), "kwargsrepr": "{}"}


def _claim(
    ctx: WorkerContext, message: dict[str, Any], node: str
) -> tuple[Store, Lease, RunRecord, int] | float | None:
    """Take the run for this delivery: (store, lease, the record to start from, attempt number);
    None when the run is final already; seconds to wait when a live host holds it."""
    from ..store import open_store

    settings = ctx.settings
    r = _redis(settings)
    run_id = message["run_id"]
    if is_final(r, run_id):
        return None
    owner = {"worker": node, "host": socket.gethostname(), "pid": os.getpid(), "job": message.get("job")}
    lease = Lease(r, run_id, {**owner, "started_at": now_iso()}, settings.lease_ttl)
    if not lease.acquire():
        return settings.watch_interval  # a watch costs two Redis calls, nothing of the store
    try:
        store = open_store(ctx.store or None)
        if is_final(r, run_id) or _final_in_store(store, run_id):  # settled meanwhile
            lease.release()
            return None
        base = _base_record(store, message)
        attempt = int(r.incr(run_key(run_id, "attempts")))
        r.expire(run_key(run_id, "attempts"), FINAL_TTL)
    except BaseException:
        with contextlib.suppress(Exception):
            lease.release()
        raise
    return store, lease, base, attempt


def _run(
    ctx: WorkerContext,
    message: dict[str, Any],
    store: Store,
    leased: LeasedStore,
    lease: Lease,
    publisher: LivePublisher,
    base: RunRecord,
) -> None:
    from ..engine import connect
    from ..run import execute

    failure: str | None = None
    stop = _Interrupt()
    heartbeat = Heartbeat(lease, ctx.settings.lease_ttl, stop.fire)
    prepared = None
    cache = PackageCache(ctx.cache)
    try:
        with heartbeat, cache.in_use(message["package"]["sha256"]):  # no trim takes its code meanwhile
            prepared = prepare_submitted(message, store, cache, publisher)
            with stop:
                execute(prepared, connect(), leased, publisher)
    except (Cancelled, KeyboardInterrupt):
        pass
    except ConfigError as exc:
        failure = f"config: {exc.message}"
    except AnnaRunError as exc:  # EngineError, StoreError, NotFound: the runner's own failures
        failure = f"engine: {exc.message}"
    except Exception as exc:  # a bug of ours must not leave the run hanging: record it
        log.exception("run %s: internal error", base.id)
        failure = f"engine: internal error: {type(exc).__name__}: {exc}"
    finally:
        if prepared is not None:
            prepared.cleanup()
        _trim(cache)
    if heartbeat.stopped == "lost":
        log.warning("run %s: lease lost; left to the host that holds it now", base.id)
        return
    if leased.final_written is None:
        latest = _latest(store, base)
        if heartbeat.stopped == "cancel" or lease.r.exists(run_key(base.id, "cancel")):
            _settle(leased, latest, "cancelled", "cancelled by the user")
        else:
            _settle(leased, latest, "failed", failure or "engine: the run ended without a record")


def _trim(cache: PackageCache) -> None:
    """The cache back within its bound after a run (what other runs hold stays)."""
    try:
        for item in cache.trim():
            log.info("worker cache: removed package %s (%d bytes, least recently used)", item["name"], item["size"])
    except AnnaRunError as exc:
        log.warning("%s", exc.message)


def _base_record(store: Store, message: dict[str, Any]) -> RunRecord:
    """The record this attempt starts from: the store's (queued, or running when an earlier
    attempt's host was lost), else the queued record the message carries."""
    queued = RunRecord.from_dict(message["record"])
    with contextlib.suppress(AnnaRunError):
        found = store.get(queued.id)
        if found.queue is not None:
            return found
    return queued


def _latest(store: Store, base: RunRecord) -> RunRecord:
    with contextlib.suppress(AnnaRunError):
        return store.get(base.id)
    return base


def _settle(leased: LeasedStore, base: RunRecord, status: str, reason: str) -> None:
    """Write the final record of a run that did not get one from ``run.execute``."""
    leased.save_record(base.evolve(status=status, reason=reason, finished_at=now_iso(), runner=None))


def _final_in_store(store: Store, run_id: str) -> bool:
    try:
        return store.get(run_id).is_final
    except NotFound:
        return False


class _Interrupt:
    """Stops the run from the heartbeat thread the way Ctrl-C stops a local run: a signal to this
    process becomes KeyboardInterrupt in its main thread, where the run is (a prefork child runs
    its task there); ``run.execute`` then stops and removes the container and records it. The
    signal is SIGUSR2, not SIGINT: a Ctrl-C on the worker's terminal reaches every process of the
    worker and means "stop taking runs" (Celery's pool processes ignore it), not "cancel them"."""

    SIGNAL = signal.SIGUSR2

    def __init__(self) -> None:
        self.active = False
        self.requested: str | None = None
        self._previous: Any = None

    def __enter__(self) -> _Interrupt:
        if self.requested:  # cancelled (or lost) while the run was being prepared
            raise KeyboardInterrupt
        self._previous = signal.signal(self.SIGNAL, self._handler)
        self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.active = False
        signal.signal(self.SIGNAL, self._previous)

    def _handler(self, signum: int, frame: object) -> None:
        if self.active:
            raise KeyboardInterrupt

    def fire(self, why: str) -> None:
        log.warning("stopping a run: %s", "cancelled" if why == "cancel" else "its lease was lost")
        self.requested = why
        if self.active:
            os.kill(os.getpid(), self.SIGNAL)


def _remove_leftovers(run_id: str, publisher: LivePublisher) -> None:
    """An earlier attempt's container (its host died) must not run beside this attempt: stop and
    remove it, found by its label, when it is on this engine. On another host's engine,
    `anna-run gc` there (and that host's worker when it starts again) removes it."""
    from ..engine import connect
    from ..sandbox import LABEL

    api = connect()
    label = {"label": f"{LABEL}.run={run_id}"}
    for container in api.containers(all=True, filters=label):
        name = (container.get("Names") or [container["Id"][:12]])[0].lstrip("/")
        with contextlib.suppress(Exception):
            api.remove_container(container["Id"], force=True, v=True)  # force: killed if running
        publisher.info(f"removed {name}, the container of a lost attempt")
    for volume in (api.volumes(filters=label) or {}).get("Volumes") or []:
        with contextlib.suppress(Exception):
            api.remove_volume(volume["Name"], force=True)


# -- the code, the payload and the Prepared run -----------------------------------------------------
def _payload_file(store: Store, sha256: str) -> Path:
    path = store.payload_path(sha256)
    if not path.is_file():
        raise NotFound(f"payload {sha256[:12]} is not in the store {store.location}")
    return path


def prepare_submitted(message: dict[str, Any], store: Store, cache: PackageCache, reporter: Reporter) -> PreparedRun:
    """The prepared run of a submitted request on this host: the request goes through the same
    ``prepare`` as on the submitting machine (every check again), with the code from the store."""
    from ..package import Package
    from ..request import FromStore, RunRequest, prepare

    if message.get("v") != MESSAGE_VERSION:
        raise ConfigError(f"a task message of version {message.get('v')}; this runner host reads {MESSAGE_VERSION}")
    opened = _opened(message)  # first: a host without the key stages nothing
    sha = message["package"]["sha256"]
    package_path = cache.package(store, sha)
    tree = cache.tree(sha, package_path)
    project_file = next((tree / n for n in PROJECT_FILES if (tree / n).is_file()), None)
    if project_file is None:
        raise ConfigError(f"the code package {sha[:12]} holds no askanna.yml")
    payload_file = None
    if message.get("payload"):
        payload_file = _payload_file(store, message["payload"]["sha256"])
    request = dataclasses.replace(RunRequest.from_json(opened["request"]), run_id=message["run_id"])
    source = FromStore(
        project_file=project_file,
        package=Package(sha256=sha, size=package_path.stat().st_size, files=0, path=package_path, reused=True),
        project_id=message["project_id"],
        project_root=message.get("project_root") or "",
        payload_file=payload_file,
        env_values=dict(opened.get("env_file") or {}),
    )
    return prepare(request, reporter, source)


def _opened(message: dict[str, Any]) -> dict[str, Any]:
    """The request and --env-file values of the message, unsealed here, in the run's process."""
    from .sealed import configured_keys, unseal

    if "sealed" in message:
        return unseal(message["sealed"], configured_keys())
    if isinstance(message.get("open"), dict):
        return message["open"]
    raise ConfigError("a task message without its request")
