"""Numbers for runner hosts (not a test; run it by hand):

    .venv/bin/python tests/hosts/bench_hosts.py [--runs 50] [--latency 10]

Starts a private redis-server and SeaweedFS (the fixtures' classes), two `anna-run worker`
processes on this machine's engine, and measures:

* submit -> container start on an idle worker: from launching `anna-run submit` to the engine's
  `start` event of the run's container (median and range);
* N trivial runs through 2 workers (submitted by 4 parallel submitters) until all are final,
  against the same N run locally one after another (`anna-run JOB`, local store).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

from conftest import S3_BUCKET, RedisServer, SeaweedFS  # noqa: E402

YML = """
environment: {image: anna-run/busybox:latest}
trivial:
  job: ['echo hi']
  network: none
"""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "anna_run.cli", *args]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--latency", type=int, default=10)
    args = parser.parse_args()
    import docker

    work = Path(tempfile.mkdtemp(prefix="anna-run-bench-hosts-"))
    redis_server, weed = RedisServer(work / "redis"), SeaweedFS(work / "weed")
    (work / "redis").mkdir()
    workers: list[subprocess.Popen] = []
    try:
        redis_server.start()
        weed.start()
        project = work / "project"
        project.mkdir()
        (project / "askanna.yml").write_text(YML)
        base = {k: v for k, v in os.environ.items() if not k.startswith("ANNA_RUN_")}
        base.update(weed.environ(), NO_COLOR="1", ANNA_RUN_BROKER=redis_server.url)
        base.update(ANNA_RUN_STORE=f"s3://{S3_BUCKET}/bench", XDG_CACHE_HOME=str(work / "submitter"))
        for i in range(2):
            env = {**base, "XDG_CACHE_HOME": str(work / f"worker-{i}")}
            log = open(work / f"worker-{i}.log", "wb")  # noqa: SIM115
            workers.append(
                subprocess.Popen(cli("worker"), env=env, cwd=work, stdout=log, stderr=log, start_new_session=True)
            )
        r = redis_server.client()
        while len(r.keys("anna-run:host:*")) < 2:
            time.sleep(0.1)

        def submit(queue: str = "default", wait: bool = False) -> str:
            out = subprocess.run(
                cli("submit", "trivial", "-q", "--queue", queue, *(["--wait"] if wait else [])),
                cwd=project,
                env=base,
                capture_output=True,
                check=True,
            )
            return out.stdout.decode().split()[0]

        for _ in range(2):
            submit(wait=True)  # warm: images, package in S3 and in each worker's cache

        api = docker.APIClient(version="auto")
        starts: dict[str, float] = {}
        stop = threading.Event()

        def watch() -> None:
            since = time.time()
            for event in api.events(decode=True, since=since, filters={"event": "start", "label": "io.anna-run.run"}):
                run = event.get("Actor", {}).get("Attributes", {}).get("io.anna-run.run")
                if run:
                    starts[run] = event["timeNano"] / 1e9
                if stop.is_set():
                    return

        threading.Thread(target=watch, daemon=True).start()
        time.sleep(0.5)
        latencies, submit_times = [], []
        for _ in range(args.latency):
            t0 = time.time()
            run_id = submit()
            submit_times.append(time.time() - t0)
            while run_id not in starts:
                time.sleep(0.01)
            latencies.append(starts[run_id] - t0)
            time.sleep(1.5)  # idle again

        def final_count(ids: list[str]) -> int:
            return sum(r.exists(f"anna-run:run:{i}:final") for i in ids)  # the written-once keys

        t0 = time.time()
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda _: submit(), range(args.runs)))
        submitted = time.time() - t0
        while final_count(ids) < args.runs:
            time.sleep(0.2)
        remote = time.time() - t0

        # The same through 2 fresh workers on a queue filled beforehand: execution alone.
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda _: submit("later"), range(args.runs)))
        for i in range(2):
            env = {**base, "XDG_CACHE_HOME": str(work / f"worker-{i}")}
            log = open(work / f"worker-later-{i}.log", "wb")  # noqa: SIM115
            workers.append(
                subprocess.Popen(
                    cli("worker", "--queue", "later"), env=env, cwd=work, stdout=log, stderr=log, start_new_session=True
                )
            )
        while len(r.keys("anna-run:host:*")) < 4:
            time.sleep(0.05)
        t0 = time.time()
        while final_count(ids) < args.runs:
            time.sleep(0.05)
        drained = time.time() - t0

        local_env = {**base, "ANNA_RUN_STORE": str(work / "local-store")}
        t0 = time.time()
        for _ in range(args.runs):
            subprocess.run(cli("trivial", "-q"), cwd=project, env=local_env, capture_output=True, check=True)
        local = time.time() - t0
        stop.set()
        print(
            json.dumps(
                {
                    "host": socket.gethostname(),
                    "cpus": os.cpu_count(),
                    "submit_to_container_start_s": {
                        "median": round(statistics.median(latencies), 3),
                        "min": round(min(latencies), 3),
                        "max": round(max(latencies), 3),
                    },
                    "submit_command_s_median": round(statistics.median(submit_times), 3),
                    f"{args.runs}_runs_2_workers_s": round(remote, 1),
                    f"{args.runs}_runs_submitted_in_s": round(submitted, 1),
                    f"{args.runs}_queued_runs_drained_by_2_workers_s": round(drained, 1),
                    f"{args.runs}_runs_local_sequential_s": round(local, 1),
                },
                indent=2,
            )
        )
    finally:
        for proc in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(30)
        weed.stop()
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
