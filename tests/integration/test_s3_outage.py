"""The S3 server goes away before a run and during one; the runs complete, nothing is lost,
and `anna-run sync` (run while another run is going on) puts every byte where it belongs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

from conftest import S3Env

BB = "anna-run/busybox:latest"
DATA = "".join(f"{i}\n" for i in range(1, 20001)).encode()  # what `seq 1 20000` writes


def _wait_running(env: S3Env, count: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sum(r["status"] == "running" for r in env.records()) >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the run never started")


def test_an_outage_before_and_during_runs_loses_nothing(own_seaweedfs, busybox, tmp_path: Path) -> None:
    server = own_seaweedfs
    env = S3Env(tmp_path / "project", server, "outage", tmp_path / "cache")
    env.project(f"""
        environment: {{image: {BB}}}
        work:
          job:
            - echo started-$N
            - sleep $SLEEP
            - mkdir -p out && seq 1 20000 > out/data.txt && echo $N > out/r.txt
          output: {{result: out/r.txt, artifact: [out/data.txt]}}
        """)

    def work(n: int, sleep: int) -> tuple[str, ...]:
        return ("work", "--network", "none", "--var", f"N={n}", "--var", f"SLEEP={sleep}")

    # 1. The server is down before the run: the run still runs, and says how to finish.
    server.stop()
    res = env.run(*work(1, 0))
    assert res.returncode == 0, res.output
    assert "unreachable" in res.stderr and "anna-run sync" in res.stderr and "Traceback" not in res.output
    listing = env.run("runs")
    assert listing.returncode == 125 and "unreachable" in listing.stderr and "Traceback" not in listing.output
    assert env.run("sync").returncode == 125  # still down: nothing uploaded, nothing lost

    # 2. Down during a run: stopped while the job sleeps.
    server.start()
    proc = env.popen(*work(2, 3))
    _wait_running(env, 1, proc)
    server.stop()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert b"anna-run sync" in err
    spooled = env.records()
    assert [(r["status"], r["upload"]) for r in spooled] == [("succeeded", "pending")] * 2

    # 3. Back: `runs` shows what waits; `sync` runs while a third run is going on.
    server.start()
    table = env.run("runs", "--all")
    assert table.returncode == 0 and table.stdout.count("succeeded (upload pending)") == 2
    assert "2 run(s) not uploaded" in table.stderr
    assert [r["upload"] for r in json.loads(env.run("runs", "--all", "--json").stdout)] == ["pending"] * 2
    live = env.popen(*work(3, 2))
    _wait_running(env, 1, live)
    synced = env.run("sync")
    assert synced.returncode == 0, synced.output
    pending_ids = sorted(r["id"] for r in spooled)
    assert sorted(line.split()[1] for line in synced.stdout.splitlines() if line.startswith("uploaded")) == pending_ids
    assert "1 run(s) going on" in synced.stdout
    _, err = live.communicate(timeout=60)
    assert live.returncode == 0 and b"sync" not in err  # it uploaded itself when it ended
    again = env.run("sync")
    assert again.returncode == 0 and again.stdout.strip() == "nothing to upload"
    assert env.records() == []

    # 4. Every byte reads back from S3, from a host that never saw these runs.
    elsewhere = {"XDG_CACHE_HOME": str(tmp_path / "other-host")}
    runs = json.loads(env.run("runs", "--all", "--json", **elsewhere).stdout)
    assert [r["variables"]["N"] for r in runs] == ["3", "2", "1"]
    for record in runs:
        n = record["variables"]["N"]
        run_id = record["id"]
        assert record["status"] == "succeeded" and record["upload"] is None
        assert json.loads(env.run("show", run_id, "--json", **elsewhere).stdout) == record
        assert f"started-{n}" in env.run("logs", run_id, **elsewhere).stdout
        assert env.run("result", run_id, **elsewhere).stdout == f"{n}\n"
        out = tmp_path / f"art-{n}"
        assert env.run("artifact", run_id, "-o", str(out), **elsewhere).returncode == 0
        assert (out / "out/data.txt").read_bytes() == DATA
        assert record["artifacts"] == [
            {"path": "out/data.txt", "size": len(DATA), "sha256": hashlib.sha256(DATA).hexdigest()}
        ]
    assert len(env.keys("packages/")) == 1 and len(env.keys("index/")) == 3
