"""`anna-run scheduler` with the real clock: a `* * * * *` entry fires within 75 s, exactly once
per fire time with two schedulers on the same store, and both stop cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import time

BB = "anna-run/busybox:latest"


def test_every_minute_entry_fires_once_with_two_schedulers(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        tick:
          job: ["echo tick $AA_JOB_NAME"]
          network: none
          schedule: "* * * * *"
        """)
    res = env.run("schedules", "enable")
    assert res.returncode == 0, res.output
    listed = json.loads(env.run("schedules", "--json").stdout)
    assert [(e["job"], e["cron"], e["timezone"]) for e in listed] == [("tick", "* * * * *", "UTC")]

    enabled = time.monotonic()
    schedulers = [env.popen("scheduler"), env.popen("scheduler")]
    try:
        run = None
        while time.monotonic() - enabled < 75:
            finished = [r for r in env.records() if r.get("trigger") == "schedule" and r["status"] == "succeeded"]
            if finished:
                run = finished[0]
                break
            time.sleep(0.5)
        assert run is not None, "no scheduled run succeeded within 75 s"
    finally:
        for proc in schedulers:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=60) for proc in schedulers]
    assert [proc.returncode for proc in schedulers] == [0, 0], outputs

    # Every scheduled run was started by a claimed fire time, one claim per entry and time.
    [entry] = listed
    fires = [
        json.loads(p.read_text()) for p in sorted((env.store / "schedules" / "fires" / entry["id"]).glob("*.json"))
    ]
    started = [f["run"] for f in fires if f["outcome"] == "started"]
    runs = [r["id"] for r in env.records() if r.get("trigger") == "schedule"]
    assert sorted(runs) == sorted(started) and len(set(started)) == len(started)
    assert run["job"] == "tick" and "tick tick" in (env.run_dir(run["id"]) / "log.txt").read_text()

    listed = json.loads(env.run("schedules", "--json").stdout)
    assert listed[0]["last_run"] in started and listed[0]["next_fire_utc"]
    assert env.run("schedules", "disable").returncode == 0
    assert json.loads(env.run("schedules", "--json").stdout) == []


def test_sigterm_stops_the_scheduler_and_cancels_its_run(env, busybox, ours):
    env.project(f"""
        environment: {{image: {BB}}}
        slow:
          job: ["echo started; sleep 300"]
          network: none
          schedule: "* * * * *"
        """)
    assert env.run("schedules", "enable").returncode == 0
    scheduler = env.popen("scheduler", ANNA_RUN_GRACE="2")
    try:
        deadline = time.monotonic() + 75
        running = []
        while time.monotonic() < deadline and not running:
            running = [r for r in env.records() if r["status"] == "running" and _said_started(env, r["id"])]
            time.sleep(0.5)
        assert running, "the scheduled run did not start within 75 s"
    finally:
        scheduler.send_signal(signal.SIGTERM)
        _out, err = scheduler.communicate(timeout=60)
    assert scheduler.returncode == 0, err
    [record] = [r for r in env.records() if r["id"] == running[0]["id"]]
    assert record["status"] == "cancelled" and record["trigger"] == "schedule"
    assert ours() == set()
    assert b"scheduler stopped" in err


def _said_started(env, run_id: str) -> bool:
    log = env.run_dir(run_id) / "log.txt"
    return log.is_file() and "started" in log.read_text()
