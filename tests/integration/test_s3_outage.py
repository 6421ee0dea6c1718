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
    listing = env.run("runs")  # the run waits here: it is listed, and the server said unreachable
    assert listing.returncode == 0 and "unreachable" in listing.stderr and "Traceback" not in listing.output
    assert "succeeded (upload pending)" in listing.stdout
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


def test_read_commands_answer_from_this_machine_while_the_server_is_down(
    own_seaweedfs, busybox, tmp_path: Path
) -> None:
    """Issue 17, point 2 (SPEC §4): with the S3 server down, `runs`, `show`, `metrics`, `logs`,
    `result` and `artifact` answer from the spool and the listing cache, say once that the
    server is unreachable, mark what may be stale, and exit 125 only for what this machine
    does not hold."""
    import io

    from anna_run.record import RunRecord
    from conftest import S3_BUCKET

    server = own_seaweedfs
    env = S3Env(tmp_path / "project", server, "offline", tmp_path / "cache")
    env.project(f"""
        environment: {{image: {BB}}}
        work:
          job:
            - echo said-$N
            - echo '{{"name":"loss","value":0.25}}' >> "$ANNA_RUN_METRICS"
            - mkdir -p out && echo $N > out/r.txt && echo art-$N > out/a.txt
          output: {{result: out/r.txt, artifact: [out/a.txt]}}
        """)
    work = ("work", "--network", "none", "--var")
    up = env.run(*work, "N=1")
    assert up.returncode == 0, up.output
    uploaded = json.loads(env.run("show", "--json").stdout)
    queued = RunRecord(id="20240101-000000-queued", job="work", project=uploaded["project"], status="queued", queue="q")
    queued = queued.evolve(created_at="2024-01-01T00:00:00.000Z")
    body = queued.to_json().encode()
    index = f"offline/index/{uploaded['project']}/{9_999_999_999_999 - 1704067200000:013d}-{queued.id}.json"
    server.client().put_object(S3_BUCKET, index, io.BytesIO(body), len(body))
    assert env.run("runs", "--all").returncode == 0  # this machine has now seen both

    server.stop()
    down = env.run(*work, "N=2")  # runs, and waits in the spool
    assert down.returncode == 0, down.output
    spooled = json.loads(env.run("show", "--json").stdout)
    assert spooled["variables"]["N"] == "2" and spooled["upload"] == "pending"

    table = env.run("runs", "--all")
    assert table.returncode == 0, table.output
    assert table.stderr.count("unreachable") == 1 and "as it last saw them" in table.stderr
    assert "Traceback" not in table.output
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert set(rows) == {uploaded["id"], spooled["id"], queued.id}
    assert "queued (as last seen)" in rows[queued.id]
    assert "succeeded (upload pending)" in rows[spooled["id"]]
    assert "as last seen" not in rows[uploaded["id"]]  # it had ended: nothing about it can change
    listed = json.loads(env.run("runs", "--all", "--json").stdout)
    assert [r["id"] for r in listed] == [spooled["id"], uploaded["id"], queued.id]
    assert listed[1] == uploaded

    shown = env.run("show", uploaded["id"][:-2])  # a unique prefix
    assert shown.returncode == 0 and "last saw it" in shown.stderr and uploaded["id"] in shown.stdout
    assert json.loads(env.run("show", uploaded["id"], "--json").stdout) == uploaded
    metrics = env.run("metrics", uploaded["id"])
    assert metrics.returncode == 0 and "loss" in metrics.stdout

    # What only the server holds: exit 125, said once, no traceback.
    for args in (("logs", uploaded["id"]), ("result", uploaded["id"]), ("artifact", uploaded["id"], "-o", "x")):
        res = env.run(*args)
        assert res.returncode == 125 and "kept there only" in res.stderr, res.output
        assert "Traceback" not in res.output
    unknown = env.run("show", "20990101-000000-nothere")
    assert unknown.returncode == 125 and "unreachable" in unknown.stderr
    elsewhere = env.run("runs", "--all", XDG_CACHE_HOME=str(tmp_path / "other-host"))
    assert elsewhere.returncode == 125 and "unreachable" in elsewhere.stderr  # knows nothing

    # The run made while the server was down is this machine's own: all of it answers.
    assert "said-2" in env.run("logs", spooled["id"]).stdout
    assert env.run("result", spooled["id"]).stdout == "2\n"
    got = env.run("artifact", spooled["id"], "-o", str(tmp_path / "art"))
    assert got.returncode == 0 and (tmp_path / "art/out/a.txt").read_text() == "art-2\n"
