"""Runner hosts for the benchmarks: a private Redis broker and SeaweedFS S3 store (the test
suite's real servers, from tests/conftest.py), `anna-run worker` processes on this machine's
engine, and the engine's container `start` events to time runs by."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from .rows import anna_run

RUN_LABEL = "io.anna-run.run"  # on every run's container, its value the run id (runner/run.py)


def fixtures() -> ModuleType:
    """tests/conftest.py: RedisServer, SeaweedFS and S3_BUCKET, the servers the suite runs on.
    Under pytest it is imported already, and this is that same module."""
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import conftest

    return conftest


class StartWatch:
    """The engine's `start` events of run containers, by run id, collected by a thread while
    entered. Event times are the engine's clock, this machine's: they compare with time.time()."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.starts: dict[str, float] = {}
        self._changed = threading.Condition()
        self._stream: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StartWatch:
        # Subscribed when events() returns: no start after this point is missed.
        self._stream = self.api.events(decode=True, filters={"event": "start", "label": RUN_LABEL})
        self._thread = threading.Thread(target=self._collect, name="bench-start-events", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()
        if self._thread is not None:
            self._thread.join(10)

    def _collect(self) -> None:
        with contextlib.suppress(Exception):  # the stream closed under us: the watch is over
            for event in self._stream:
                run_id = (event.get("Actor") or {}).get("Attributes", {}).get(RUN_LABEL)
                if run_id and "timeNano" in event:
                    with self._changed:
                        self.starts[run_id] = event["timeNano"] / 1e9
                        self._changed.notify_all()

    def wait(self, run_id: str, timeout: float = 60) -> float:
        """When the container of ``run_id`` started (epoch seconds); TimeoutError if it did not."""
        with self._changed:
            if not self._changed.wait_for(lambda: run_id in self.starts, timeout):
                raise TimeoutError(f"no start event of run {run_id}'s container within {timeout:g} s")
            return self.starts[run_id]


class Hosts:
    """A private redis-server and SeaweedFS under ``root`` and ``workers`` `anna-run worker`
    processes using them, each with a cache of its own (another host), ready when entered.
    Leaving stops all of it, by the PIDs started here: the workers (SIGTERM, Celery's warm
    shutdown, then SIGKILL to the process group), SeaweedFS and Redis."""

    def __init__(self, root: Path, workers: int = 1, queue: str = "default") -> None:
        conftest = fixtures()
        self.root = root
        self.bucket = conftest.S3_BUCKET
        (root / "redis").mkdir(parents=True, exist_ok=True)
        self.redis_server = conftest.RedisServer(root / "redis")
        self.weed = conftest.SeaweedFS(root / "weed")
        self.count = workers
        self.queue = queue
        self.workers: list[subprocess.Popen] = []
        self.redis: Any = None

    def __enter__(self) -> Hosts:
        try:
            self.redis_server.start()
            self.weed.start()
            self.redis = self.redis_server.client()
            for _ in range(self.count):
                self.add_worker(self.queue)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for proc in self.workers:
                _stop_worker(proc)
        finally:
            self.weed.stop()
            self.redis_server.stop()

    def environ(self, **extra: str) -> dict[str, str]:
        """The environment of a submitter or a worker: the broker, the S3 store, no other
        ANNA_RUN_ setting of the caller's."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANNA_RUN_", "AWS_"))}
        env.update(self.weed.environ(), NO_COLOR="1", ANNA_RUN_BROKER=self.redis_server.url)
        env.update(ANNA_RUN_STORE=f"s3://{self.bucket}/bench", XDG_CACHE_HOME=str(self.root / "submitter"))
        env.update(extra)
        return env

    def add_worker(self, queue: str = "default", timeout: float = 60) -> subprocess.Popen:
        """Start one more worker on ``queue`` and return once it is registered (consuming)."""
        home = self.root / f"worker-{len(self.workers)}"
        home.mkdir(parents=True)
        with open(home / "worker.log", "wb") as log:
            proc = subprocess.Popen(
                anna_run("worker", "--queue", queue),
                cwd=home,
                env=self.environ(XDG_CACHE_HOME=str(home / "cache")),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(proc)
        key = f"anna-run:host:anna-run.{proc.pid}@{socket.gethostname()}"
        deadline = time.monotonic() + timeout
        while not self.redis.exists(key):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (home / "worker.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"anna-run worker did not start:\n{tail}")
            time.sleep(0.05)
        return proc

    def submit(self, project: Path, job: str, *args: str, env: dict[str, str] | None = None) -> str:
        """`anna-run submit JOB -q ...` in ``project``; the run id."""
        proc = subprocess.run(
            anna_run("submit", job, "-q", *args),
            cwd=project,
            env=env or self.environ(),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"anna-run submit failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc.stdout.split()[0]

    def final(self, run_id: str) -> bool:
        return bool(self.redis.exists(f"anna-run:run:{run_id}:final"))  # written once, by its host

    def wait_done(self, run_id: str, timeout: float = 60) -> None:
        """Until the run is final and its host let go of it (the lease released: the worker is
        back to waiting for work)."""
        deadline = time.monotonic() + timeout
        while not self.final(run_id) or self.redis.exists(f"anna-run:run:{run_id}:lease"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} not done within {timeout:g} s")
            time.sleep(0.02)


def _stop_worker(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to Celery's main process (its warm shutdown), then SIGKILL to what is left of
    its process group (the pool). The main process is reaped only after that: while it is a
    zombie its PID, the group's id, cannot be taken by another process."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                break
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
