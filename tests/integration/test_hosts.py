"""Runner hosts on real servers: Debian's redis-server as the Celery broker, SeaweedFS as the
shared S3 store, real `anna-run worker` processes (Celery prefork workers) and the real engine.

Workers run with a short lease and visibility timeout (see LEASE) so a lost host's run comes
back within seconds, not the minute of production."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from anna_run.hosts.sealed import new_key
from anna_run.ids import suuid_from_digest
from conftest import EVERY_MINUTE, assert_claimed_once, scheduled_success

BB = "anna-run/busybox:latest"
LEASE = {"ANNA_RUN_LEASE_TTL": "4", "ANNA_RUN_VISIBILITY_TIMEOUT": "8", "ANNA_RUN_GRACE": "1"}
PROJECT = f"""
    environment: {{image: {BB}}}
    variables: {{PAUSE: "0", N: "0"}}
    square:
      job: ['sleep "$PAUSE"; mkdir -p out; echo $((N * N)) > out/r.txt; echo "square $N"']
      output: {{result: out/r.txt, artifact: [out/]}}
      network: none
    talk:
      job: ['echo "first-line token=$API_TOKEN"', 'sleep 4', 'echo last-line >&2', 'exit 3']
      network: none
    slow:
      job: ['echo started', 'sleep 60']
      network: none
    bad:
      job: ['echo {{{{ MISSING }}}}']
"""


class Worker:
    def __init__(self, proc: subprocess.Popen, home: Path) -> None:
        self.proc = proc
        self.home = home
        self.node = f"anna-run.{proc.pid}@{socket.gethostname()}"

    @property
    def log(self) -> str:
        return (self.home / "worker.log").read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker's whole process group: Celery's main process and its pool."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def owns(self, container: dict) -> bool:
        """Whether a job container was started by a process of this worker (its runner label)."""
        runner = (container.get("Labels") or {}).get("io.anna-run.runner", "")
        pid = runner.split(":")[1] if runner.count(":") == 2 else ""
        try:
            return pid.isdigit() and os.getpgid(int(pid)) == self.proc.pid
        except ProcessLookupError:
            return False


class Hosts:
    """Runner hosts for one test: its project and shared store (``env``), the broker, workers."""

    def __init__(self, env, redis_server, tmp_path: Path, api) -> None:
        self.env = env
        self.url = redis_server.url
        self.redis = redis_server.client()
        self.tmp = tmp_path
        self.api = api
        self.workers: list[Worker] = []
        self.key = new_key()  # the secret key the submitting machine and the hosts share

    def environ(self, **extra: str) -> dict[str, str]:
        return self.env.environ(**self._extra(extra))

    def run(self, *args: str, timeout: float = 120, input: str | None = None, **extra: str):
        return self.env.run(*args, timeout=timeout, input=input, **self._extra(extra))

    def _extra(self, extra: dict[str, str]) -> dict[str, str]:
        return {"ANNA_RUN_BROKER": self.url, "ANNA_RUN_SECRET_KEY": self.key, **LEASE, **extra}

    def popen(self, *args: str, **extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.env.cmd(*args),
            cwd=self.env.root,
            env=self.environ(**extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def submit(self, *args: str, **extra: str) -> str:
        res = self.run("submit", *args, "-q", **extra)
        assert res.returncode == 0, res.output
        return res.stdout.strip()

    def worker(self, queues: str = "default", concurrency: int = 1, **extra: str) -> Worker:
        home = self.tmp / f"worker-{len(self.workers)}"
        home.mkdir()
        # A cache (and an S3 spool) of its own: another host.
        env = self.environ(XDG_CACHE_HOME=str(home / "cache"), **extra)
        with open(home / "worker.log", "wb") as log:
            proc = subprocess.Popen(
                self.env.cmd("worker", "--queue", queues, "--concurrency", str(concurrency)),
                cwd=home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(proc, home)
        self.workers.append(worker)
        deadline = time.monotonic() + 60
        while not self.redis.exists(f"anna-run:host:{worker.node}"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker did not start:\n{worker.log[-3000:]}")
            time.sleep(0.1)
        return worker

    def show(self, run_id: str) -> dict:
        res = self.run("show", run_id, "--json")
        assert res.returncode == 0, res.output
        return json.loads(res.stdout)

    def final(self, run_id: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while (record := self.show(run_id))["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, f"run {run_id} still {record['status']}"
            time.sleep(0.3)
        return record

    def containers(self, run_id: str | None = None, running: bool = False) -> list[dict]:
        label = f"io.anna-run.run={run_id}" if run_id else project_label(self.env.root)
        filters = {"label": label, **({"status": "running"} if running else {})}
        return self.api.containers(all=not running, filters=filters)

    def wait_container(self, run_id: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while not (found := self.containers(run_id, running=True)):
            assert time.monotonic() < deadline, f"run {run_id} never started a container"
            time.sleep(0.1)
        return found[0]

    def final_writes(self, run_id: str) -> int:
        return int(self.redis.get(f"anna-run:run:{run_id}:final-writes") or 0)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        label = {"label": project_label(self.env.root)}
        for container in self.api.containers(all=True, filters=label):
            self.api.remove_container(container["Id"], force=True, v=True)
        for volume in (self.api.volumes(filters=label) or {}).get("Volumes") or []:
            self.api.remove_volume(volume["Name"], force=True)


def project_label(root: Path) -> str:
    return f"io.anna-run.project={suuid_from_digest(hashlib.sha256(str(root.resolve()).encode()).digest())}"


@pytest.fixture
def hosts(s3_env, redis_server, redis_url, tmp_path, api, busybox) -> Iterator[Hosts]:
    """Runner hosts sharing an S3 store (SeaweedFS) and a Redis broker."""
    s3_env.project(PROJECT)
    h = Hosts(s3_env, redis_server, tmp_path, api)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def dir_hosts(env, redis_server, redis_url, tmp_path, api, busybox) -> Iterator[Hosts]:
    """Runner hosts sharing a store folder (hosts on one machine, or a network filesystem)."""
    env.project(PROJECT)
    h = Hosts(env, redis_server, tmp_path, api)
    try:
        yield h
    finally:
        h.close()


# -- submit ------------------------------------------------------------------------------------------
def test_submit_with_a_config_error_queues_nothing(hosts):
    res = hosts.run("submit", "bad")
    assert res.returncode == 2 and "MISSING" in res.stderr and res.stdout == "", res.output
    res = hosts.run("submit", "nope")
    assert res.returncode == 2 and "nope" in res.stderr
    res = hosts.run("submit", "square", "--queue", "a b")
    assert res.returncode == 2
    no_broker = hosts.env.run("submit", "square")  # no ANNA_RUN_BROKER
    assert no_broker.returncode == 2 and "ANNA_RUN_BROKER" in no_broker.stderr
    assert hosts.redis.keys("*") == []  # no task, no queue, no key of ours
    assert json.loads(hosts.run("runs", "--json", "--all").stdout) == []
    assert hosts.containers() == []


def test_submit_wait_runs_on_a_worker_and_reads_like_a_local_run(hosts, tmp_path):
    worker = hosts.worker()
    secret = "s3cr3t-value-123"
    first = hosts.run("submit", "talk", "--secret", f"API_TOKEN={secret}", "--wait")
    assert first.returncode == 3, first.output  # the job's own exit code
    assert "first-line token=***" in first.stdout and "last-line" in first.stderr
    assert secret not in first.output
    assert "upload package" in first.stderr  # the code went to the shared store once...
    talk_id = first.stdout.splitlines()[0]
    talk = hosts.show(talk_id)
    assert talk["status"] == "failed" and talk["exit_code"] == 3
    assert talk["queue"] == "default" and talk["attempts"] == 1 and talk["worker"] == worker.node
    assert talk["host"] == socket.gethostname() and talk["variables"]["API_TOKEN"] == "***"
    assert hosts.final_writes(talk_id) == 1
    live = hosts.redis.xrange(f"anna-run:run:{talk_id}:log")
    assert any("first-line token=***" in fields.get("t", "") for _, fields in live)
    assert not any(secret in fields.get("t", "") for _, fields in live)

    second = hosts.run("submit", "square", "--payload", "-", "--wait", input='{"N": 7}')  # payload via S3
    assert second.returncode == 0, second.output
    assert "upload package" not in second.stderr  # ...and unchanged code is not sent again
    run_id = second.stdout.splitlines()[0]
    assert hosts.run("result", run_id).stdout == "49\n"
    assert "square 7" in hosts.run("logs", run_id).stdout
    out = tmp_path / "artifacts"
    assert hosts.run("artifact", run_id, "-o", str(out)).returncode == 0
    assert (out / "out" / "r.txt").read_text() == "49\n"
    shown = hosts.run("show", run_id).stdout
    assert f"worker {worker.node}" in shown and "attempts 1" in shown
    runs = json.loads(hosts.run("runs", "--json").stdout)
    assert [r["id"] for r in runs] == [run_id, talk_id]
    assert socket.gethostname() in hosts.run("runs").stdout.splitlines()[1]

    listed = json.loads(hosts.run("hosts", "--json").stdout)
    assert [(w["worker"], w["queues"], w["concurrency"]) for w in listed] == [(worker.node, ["default"], 1)]


def test_submit_with_a_shared_store_folder(dir_hosts):
    dir_hosts.worker()
    res = dir_hosts.run("submit", "square", "--var", "N=12", "--wait")
    assert res.returncode == 0, res.output
    run_id = res.stdout.splitlines()[0]
    assert dir_hosts.run("result", run_id).stdout == "144\n"
    assert dir_hosts.show(run_id)["attempts"] == 1


# -- live logs -----------------------------------------------------------------------------------------
def test_logs_follow_shows_lines_before_the_run_ends(hosts):
    hosts.worker()
    run_id = hosts.submit("talk", "--secret", "API_TOKEN=s3cr3t-value-123")
    follower = hosts.popen("logs", "-f", run_id)
    try:
        while (line := follower.stdout.readline()) and not line.startswith(b"first-line"):
            pass
        assert line == b"first-line token=***\n"
        assert hosts.show(run_id)["status"] == "running"  # seen before the run ended
        rest, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert b"last-line" in rest and b"s3cr3t" not in rest
    stored = hosts.run("logs", run_id).stdout  # after the run: the stored log, the same lines
    assert "first-line token=***" in stored and "last-line" in stored


# -- cancel --------------------------------------------------------------------------------------------
def test_cancel_a_queued_run(hosts):
    run_id = hosts.submit("square", "--queue", "later")
    assert hosts.show(run_id)["status"] == "queued"
    assert "queue later" in hosts.run("runs").stdout
    assert hosts.redis.llen("later") == 1
    res = hosts.run("cancel", run_id)
    assert res.returncode == 0 and "cancelled" in res.stderr, res.output
    record = hosts.show(run_id)
    assert record["status"] == "cancelled" and record["reason"] == "cancelled before it started"
    assert hosts.redis.llen("later") == 0  # out of the queue
    hosts.worker(queues="later")
    res = hosts.run("submit", "square", "--queue", "later", "--wait")
    assert res.returncode == 0, res.output  # the queue works, and the cancelled run never ran
    record = hosts.show(run_id)
    assert record["status"] == "cancelled" and record["attempts"] == 0 and hosts.final_writes(run_id) == 1
    assert hosts.run("cancel", run_id).returncode == 0  # cancelling again: it is cancelled


def test_cancel_a_running_run(hosts):
    worker = hosts.worker()
    run_id = hosts.submit("slow")
    hosts.wait_container(run_id)
    row = next(line for line in hosts.run("runs").stdout.splitlines() if line.startswith(run_id))
    assert "running" in row and socket.gethostname() in row  # `runs`: a remote run and its host
    start = time.monotonic()
    res = hosts.run("cancel", run_id)
    assert res.returncode == 0 and "cancelled" in res.stderr, res.output
    assert time.monotonic() - start < 20
    record = hosts.show(run_id)
    assert record["status"] == "cancelled" and record["worker"] == worker.node
    assert hosts.containers(run_id) == []  # stopped and removed on its host
    assert hosts.final_writes(run_id) == 1
    assert hosts.run("submit", "square", "--wait").returncode == 0  # the worker goes on


# -- losing hosts --------------------------------------------------------------------------------------
def test_sigterm_finishes_the_run_and_loses_nothing(hosts):
    workers = [hosts.worker(), hosts.worker()]
    first = hosts.submit("square", "--var", "N=1", "--var", "PAUSE=4")
    container = hosts.wait_container(first)
    stopping = next(w for w in workers if w.owns(container))
    other = next(w for w in workers if w is not stopping)
    stopping.proc.send_signal(signal.SIGTERM)  # the main process only, as systemd's KillMode=mixed
    rest = [hosts.submit("square", "--var", f"N={n}") for n in (2, 3, 4)]
    assert stopping.proc.wait(60) == 0, stopping.log[-3000:]
    records = {run_id: hosts.final(run_id) for run_id in [first, *rest]}
    assert [r["status"] for r in records.values()] == ["succeeded"] * 4
    assert records[first]["worker"] == stopping.node and records[first]["attempts"] == 1  # finished, not redone
    assert all(records[run_id]["worker"] == other.node for run_id in rest)
    assert [hosts.run("result", run_id).stdout for run_id in [first, *rest]] == ["1\n", "4\n", "9\n", "16\n"]
    assert [w["worker"] for w in json.loads(hosts.run("hosts", "--json").stdout)] == [other.node]


def test_killed_worker_run_is_taken_over_once(hosts):
    """20 runs, 2 workers on one engine; one worker's process group is SIGKILLed mid-run."""
    workers = [hosts.worker(concurrency=2), hosts.worker(concurrency=2)]
    start = time.monotonic()
    long_run = hosts.submit("square", "--var", "N=0", "--var", "PAUSE=15")
    orphan = hosts.wait_container(long_run)
    killed = next(w for w in workers if w.owns(orphan))
    survivor = next(w for w in workers if w is not killed)
    submits = [hosts.popen("submit", "square", "--var", f"N={n}", "--var", "PAUSE=1", "-q") for n in range(1, 20)]
    time.sleep(1)
    killed.kill()
    # The runs the killed worker held: their leases outlive it by up to a TTL.
    leases = [json.loads(hosts.redis.get(key) or "{}") for key in hosts.redis.keys("anna-run:run:*:lease")]
    in_flight = {lease["run"] for lease in leases if lease.get("worker") == killed.node}
    assert long_run in in_flight
    run_ids = [long_run] + [p.communicate(timeout=120)[0].decode().strip() for p in submits]

    most_at_once: dict[str, int] = {}
    records: dict[str, dict] = {}
    while len(records) < 20:
        assert time.monotonic() - start < 180, f"not final after 3 minutes: {set(run_ids) - set(records)}"
        for container in hosts.containers(running=True):
            run_id = container["Labels"]["io.anna-run.run"]
            count = len(hosts.containers(run_id, running=True))
            most_at_once[run_id] = max(most_at_once.get(run_id, 0), count)
        listed = json.loads(hosts.run("runs", "--json").stdout)
        records = {r["id"]: r for r in listed if r["status"] not in ("queued", "running")}
        time.sleep(0.5)

    assert sorted(records) == sorted(run_ids) and len(set(run_ids)) == 20
    assert {r["status"] for r in records.values()} == {"succeeded"}
    results = [p.communicate(timeout=60)[0] for p in [hosts.popen("result", run_id) for run_id in run_ids]]
    assert [int(r) for r in results] == [n * n for n in range(20)]  # 20 distinct correct results
    assert all(hosts.final_writes(run_id) == 1 for run_id in run_ids)  # each record written once
    taken_over = records[long_run]
    assert taken_over["attempts"] == 2 and taken_over["worker"] == survivor.node
    assert all(records[run_id]["attempts"] == 1 for run_id in run_ids if run_id not in in_flight)
    assert all(records[run_id]["attempts"] in (1, 2) for run_id in in_flight)
    assert max(most_at_once.values()) == 1  # an orphan never ran beside its new attempt
    assert not hosts.api.containers(all=True, filters={"id": orphan["Id"]})  # stopped and removed...
    assert f"removed anna-run-{long_run}, the container of a lost attempt" in survivor.log  # ...by the taker
    assert hosts.containers() == []


def test_a_run_whose_hosts_keep_dying_is_recorded_failed(hosts):
    first = hosts.worker(ANNA_RUN_MAX_ATTEMPTS="1")
    run_id = hosts.submit("slow")
    orphan = hosts.wait_container(run_id)
    first.kill()
    hosts.worker(ANNA_RUN_MAX_ATTEMPTS="1")
    record = hosts.final(run_id, timeout=60)
    assert record["status"] == "failed" and "runner host was lost" in record["reason"], record
    assert record["attempts"] == 2 and hosts.final_writes(run_id) == 1
    assert not hosts.api.containers(all=True, filters={"id": orphan["Id"]})


def test_gc_on_the_dead_hosts_engine_removes_its_container_and_the_run_goes_on(hosts):
    lost = hosts.worker()
    run_id = hosts.submit("slow")
    orphan = hosts.wait_container(run_id)
    lost.kill()
    pid = orphan["Labels"]["io.anna-run.runner"].split(":")[1]
    deadline = time.monotonic() + 20
    while os.path.exists(f"/proc/{pid}"):  # the pool process, reaped a moment after the kill
        assert time.monotonic() < deadline
        time.sleep(0.1)
    res = hosts.run("gc")
    assert res.returncode == 0 and f"run {run_id}" in res.stdout, res.output
    assert not hosts.api.containers(all=True, filters={"id": orphan["Id"]})
    assert hosts.show(run_id)["status"] == "running"  # not "runner lost": another host takes it over
    hosts.worker()
    deadline = time.monotonic() + 60
    while (record := hosts.show(run_id))["attempts"] != 2 or not hosts.containers(run_id, running=True):
        assert time.monotonic() < deadline, record
        time.sleep(0.3)
    assert hosts.run("cancel", run_id).returncode == 0
    assert hosts.show(run_id)["status"] == "cancelled" and hosts.final_writes(run_id) == 1


# -- schedules through the queue -------------------------------------------------------------------
def test_beat_queues_each_fire_once_with_two_beats(dir_hosts):
    """`anna-run beat` (SPEC §9, issue 16): a `* * * * *` entry is queued from its registered
    package when due, exactly once per fire time with two beats on one store, and runs on a host
    with `"trigger": "schedule"`; both beats stop cleanly on SIGTERM."""
    env = dir_hosts.env
    env.project(EVERY_MINUTE)
    no_broker = env.run("beat")
    assert no_broker.returncode == 2 and "ANNA_RUN_BROKER" in no_broker.stderr, no_broker.output
    assert dir_hosts.run("schedules", "enable").returncode == 0
    [entry] = json.loads(dir_hosts.run("schedules", "--json").stdout)
    dir_hosts.worker()
    beats = [dir_hosts.popen("beat"), dir_hosts.popen("beat")]
    run, outputs = scheduled_success(env, beats)
    assert run is not None, "no scheduled run succeeded within 75 s"
    assert [proc.returncode for proc in beats] == [0, 0], outputs
    assert all(b"beat stopped" in err for _, err in outputs)
    assert sum(b"queued run" in err for _, err in outputs) >= 1
    assert_claimed_once(env, entry["id"])
    assert run["job"] == "tick" and run["queue"] == "default" and run["worker"]
    assert "tick tick" in (env.run_dir(run["id"]) / "log.txt").read_text()


# -- the broker restarted -----------------------------------------------------------------------------
@pytest.mark.faults
@pytest.mark.timeout(300)
def test_redis_restarted_while_runs_are_queued_and_running_ends_each_once(env, tmp_path, api, busybox):
    """Issue 17, point 4: Redis (`appendonly yes`) stopped and started on the same port while one
    run goes on and three wait in the queue, and a submit is made while it is down (it waits for
    the broker); every run ends once, succeeded, with its result."""
    from conftest import RedisServer

    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.root.mkdir()
    server.start()
    env.project(PROJECT)
    hosts = Hosts(env, server, tmp_path, api)
    try:
        hosts.worker()
        runs = {hosts.submit("square", "--var", f"N={n}", "--var", "PAUSE=4"): n for n in (2, 3, 4, 5)}
        first = next(iter(runs))
        hosts.wait_container(first)
        server.stop()
        late = hosts.popen("submit", "square", "--var", "N=6", "-q")  # waits for the broker (BROKER_WAIT_S)
        time.sleep(2)
        server.start()
        out, err = late.communicate(timeout=60)
        assert late.returncode == 0, err.decode()
        runs[out.decode().strip()] = 6
        for run_id, n in runs.items():
            record = hosts.final(run_id, timeout=150)
            assert record["status"] == "succeeded", record
            assert hosts.run("result", run_id).stdout == f"{n * n}\n"
            assert hosts.final_writes(run_id) == 1, run_id
            log = hosts.run("logs", run_id).stdout
            assert log.count(f"square {n}") == 1, log
    finally:
        hosts.close()
        server.stop()
