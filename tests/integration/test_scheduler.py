"""`anna-run scheduler` with the real clock: a `* * * * *` entry fires within 75 s, exactly once
per fire time with two schedulers on the same store, and both stop cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import time

from conftest import EVERY_MINUTE, assert_claimed_once, scheduled_success

BB = "anna-run/busybox:latest"


def test_every_minute_entry_fires_once_with_two_schedulers(env, busybox):
    env.project(EVERY_MINUTE)
    res = env.run("schedules", "enable")
    assert res.returncode == 0, res.output
    listed = json.loads(env.run("schedules", "--json").stdout)
    assert [(e["job"], e["cron"], e["timezone"]) for e in listed] == [("tick", "* * * * *", "UTC")]

    schedulers = [env.popen("scheduler"), env.popen("scheduler")]
    run, outputs = scheduled_success(env, schedulers)
    assert run is not None, "no scheduled run succeeded within 75 s"
    assert [proc.returncode for proc in schedulers] == [0, 0], outputs
    [entry] = listed
    started = assert_claimed_once(env, entry["id"])
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
