"""Throughput of runner hosts (not a test; run it by hand):

    .venv/bin/python tests/hosts/bench_hosts.py [--runs 50]

Starts a private redis-server and SeaweedFS and two `anna-run worker` processes on this
machine's engine (bench/hosts.py, as the bench's queue row does), and measures N trivial runs
through the 2 workers (submitted by 4 parallel submitters) until all are final; the same N
queued first and drained by 2 fresh workers (execution alone); against the same N run locally
one after another (`anna-run JOB`, local store).

Submit → container start on an idle worker is a row of the bench: `python -m bench --only queue`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench/

from bench.hosts import Hosts
from bench.rows import anna_run, timed

YML = """
environment: {image: anna-run/busybox:latest}
trivial:
  job: ['echo hi']
  network: none
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="anna-run-bench-hosts-"))
    try:
        project = work / "project"
        project.mkdir()
        (project / "askanna.yml").write_text(YML)
        with Hosts(work / "hosts", workers=2) as hosts:
            for _ in range(2):
                hosts.submit(project, "trivial", "--wait")  # warm: images, package in S3 and in a cache

            def all_final(ids: list[str]) -> None:
                while not all(hosts.final(i) for i in ids):
                    time.sleep(0.05)

            t0 = time.time()
            with ThreadPoolExecutor(4) as pool:
                ids = list(pool.map(lambda _: hosts.submit(project, "trivial"), range(args.runs)))
            submitted = time.time() - t0
            all_final(ids)
            remote = time.time() - t0

            with ThreadPoolExecutor(4) as pool:
                ids = list(pool.map(lambda _: hosts.submit(project, "trivial", "--queue", "later"), range(args.runs)))
            for _ in range(2):
                hosts.add_worker("later")
            t0 = time.time()  # once both are registered, as they begin to take runs
            all_final(ids)
            drained = time.time() - t0

        local_env = {k: v for k, v in os.environ.items() if not k.startswith("ANNA_RUN_")}
        local_env.update(ANNA_RUN_STORE=str(work / "local-store"), NO_COLOR="1")
        local = sum(timed(anna_run("trivial", "-q"), project, local_env) for _ in range(args.runs))
        print(
            json.dumps(
                {
                    "host": socket.gethostname(),
                    "cpus": os.cpu_count(),
                    f"{args.runs}_runs_2_workers_s": round(remote, 1),
                    f"{args.runs}_runs_submitted_in_s": round(submitted, 1),
                    f"{args.runs}_queued_runs_drained_by_2_workers_s": round(drained, 1),
                    f"{args.runs}_runs_local_sequential_s": round(local, 1),
                },
                indent=2,
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
