"""schedule.py with a fixed clock: fire times (mapping form, aliases, timezones, DST), and the
scheduler's decisions (started once, missed, skipped) on a real directory store."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from anna_run import schedule
from anna_run.errors import ConfigError
from anna_run.orphans import runner_identity
from anna_run.project import load_project
from anna_run.record import RunRecord
from anna_run.schedule import Scheduler, fire_times, next_fire
from anna_run.store.local import LocalStore
from anna_run.store.schedules import Registration

UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _times(cron: str, tz: str, after: datetime, until: datetime) -> list[str]:
    return [t.isoformat() for t in fire_times(cron, tz, after, until)]


# -- fire times ------------------------------------------------------------------------------------
def test_mapping_form_and_aliases_from_the_project_file(tmp_path: Path):
    (tmp_path / "askanna.yml").write_text(
        textwrap.dedent("""
        j:
          job: [echo]
          schedule: [{hour: 5, day: 5, month: 5}, "@daily", "@hourly", "@weekly", "@monthly", "@yearly"]
        """)
    )
    mapping, daily, hourly, weekly, monthly, yearly = load_project(tmp_path / "askanna.yml").job("j").schedule
    start = utc(2026, 1, 1, 0, 30)
    assert next_fire(mapping, "UTC", start) == utc(2026, 5, 5, 5, 0)
    assert next_fire(daily, "UTC", start) == utc(2026, 1, 2)
    assert next_fire(hourly, "UTC", start) == utc(2026, 1, 1, 1)
    assert next_fire(weekly, "UTC", start) == utc(2026, 1, 4)  # a Sunday
    assert next_fire(monthly, "UTC", start) == utc(2026, 2, 1)
    assert next_fire(yearly, "UTC", start) == utc(2027, 1, 1)


def test_fire_times_follow_the_jobs_timezone():
    winter = next_fire("0 6 * * 1-5", "Europe/Amsterdam", utc(2026, 1, 9, 12))  # a Friday
    assert winter.isoformat() == "2026-01-12T06:00:00+01:00"  # Monday, 05:00 UTC
    summer = next_fire("0 6 * * *", "Europe/Amsterdam", utc(2026, 7, 1, 12))
    assert summer.astimezone(UTC) == utc(2026, 7, 2, 4)
    assert next_fire("0 6 * * *", "America/New_York", utc(2026, 7, 1, 12)).astimezone(UTC) == utc(2026, 7, 2, 10)


def test_spring_forward_day_a_time_in_the_gap_fires_once_after_it():
    # Europe/Amsterdam 2026-03-29: 02:00 → 03:00. 02:30 does not exist that day.
    times = _times("30 2 * * *", "Europe/Amsterdam", utc(2026, 3, 27, 12), utc(2026, 3, 30, 12))
    assert times == [
        "2026-03-28T01:30:00+00:00",  # 02:30 CET
        "2026-03-29T01:00:00+00:00",  # 03:00 CEST: the first minute after the gap, once
        "2026-03-30T00:30:00+00:00",  # 02:30 CEST
    ]
    hourly = _times("0 * * * *", "Europe/Amsterdam", utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 3, 30))
    assert len(hourly) == len(set(hourly)) == 4  # 01:00, 03:00, 04:00, 05:00 local: 23 hours that day


def test_fall_back_day_a_repeated_time_fires_once():
    # Europe/Amsterdam 2026-10-25: 03:00 → 02:00. 02:30 happens twice; it fires once.
    times = _times("30 2 * * *", "Europe/Amsterdam", utc(2026, 10, 23, 12), utc(2026, 10, 26, 12))
    assert times == [
        "2026-10-24T00:30:00+00:00",
        "2026-10-25T00:30:00+00:00",  # 02:30 CEST, the first of the two
        "2026-10-26T01:30:00+00:00",  # 02:30 CET
    ]


# -- the scheduler ---------------------------------------------------------------------------------
class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _register(store: LocalStore, at: datetime, cron: str = "* * * * *", tz: str = "UTC") -> str:
    reg = Registration(
        id=schedule.registration_id("proj", "j", cron),
        project="proj",
        project_root="/p",
        job="j",
        cron=cron,
        timezone=tz,
        package_sha256="0" * 64,
        package_size=1,
        registered_at=at.isoformat(),
    )
    store.schedules().put(reg)
    return reg.id


def _scheduler(store: LocalStore, clock: Clock, started: list) -> Scheduler:
    return Scheduler(store, lambda reg, run_id, at: started.append((run_id, at)), clock=clock)


def test_a_due_time_starts_once_however_many_schedulers(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    _register(store, utc(2026, 6, 1, 12, 0, 30))
    clock = Clock(utc(2026, 6, 1, 12, 0, 59))
    started: list = []
    first, second = _scheduler(store, clock, started), _scheduler(store, clock, started)
    assert first.tick() == []  # nothing due yet
    clock.now = utc(2026, 6, 1, 12, 1, 2)
    assert [f.outcome for f in first.tick()] == ["started"]
    assert second.tick() == [] and first.tick() == []
    assert [at for _, at in started] == [utc(2026, 6, 1, 12, 1)]


def test_missed_times_are_listed_not_replayed(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    _register(store, utc(2026, 6, 1, 12), cron="*/5 * * * *")
    clock = Clock(utc(2026, 6, 1, 13, 3))  # no scheduler ran for an hour; 13:00 is 3 min late
    started: list = []
    decisions = _scheduler(store, clock, started).tick()
    assert started == []
    missed = [f.at for f in decisions if f.outcome == "missed"]
    assert len(missed) == schedule.MISSED_KEPT + 1  # the latest ten of eleven earlier, and 13:00
    assert missed[-1] == utc(2026, 6, 1, 13)
    [state] = schedule.states(store, clock.now)
    assert len(state.missed) == schedule.MISSED_KEPT and state.next_fire == utc(2026, 6, 1, 13, 5)
    clock.now = utc(2026, 6, 1, 13, 5, 1)
    assert [f.outcome for f in _scheduler(store, clock, started).tick()] == ["started"]


def test_a_still_running_previous_run_makes_the_next_time_skipped(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    entry = _register(store, utc(2026, 6, 1, 12, 0, 30))
    clock = Clock(utc(2026, 6, 1, 12, 1, 1))
    started: list = []
    scheduler = _scheduler(store, clock, started)
    scheduler.tick()
    [(run_id, _)] = started
    running = RunRecord(id=run_id, job="j", project="proj", status="running", runner=runner_identity())
    store.save_record(running)
    clock.now = utc(2026, 6, 1, 12, 2, 1)
    [skipped] = scheduler.tick()
    assert (skipped.outcome, skipped.run) == ("skipped", run_id)
    assert len(started) == 1
    store.save_record(running.evolve(status="succeeded", runner=None))
    clock.now = utc(2026, 6, 1, 12, 3, 1)
    assert [f.outcome for f in scheduler.tick()] == ["started"]
    [state] = schedule.states(store, clock.now)
    assert state.skipped == (utc(2026, 6, 1, 12, 2),)
    assert state.registration.id == entry


def test_a_run_whose_runner_died_does_not_block_the_entry(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    _register(store, utc(2026, 6, 1, 12, 0, 30))
    clock = Clock(utc(2026, 6, 1, 12, 1, 1))
    started: list = []
    scheduler = _scheduler(store, clock, started)
    scheduler.tick()
    [(run_id, _)] = started
    store.save_record(RunRecord(id=run_id, job="j", project="p", status="running", runner="nohost-x:1:1"))
    clock.now = utc(2026, 6, 1, 12, 2, 1)
    # another host's run is taken as alive (only it can tell)
    assert [f.outcome for f in scheduler.tick()] == ["skipped"]
    import socket

    store.save_record(
        RunRecord(id=run_id, job="j", project="p", status="running", runner=f"{socket.gethostname()}:999999999:1")
    )
    clock.now = utc(2026, 6, 1, 12, 3, 1)
    assert [f.outcome for f in scheduler.tick()] == ["started"]


# -- enable / disable ------------------------------------------------------------------------------
YML = """
    timezone: Europe/Amsterdam
    variables: {MODEL: linear}
    train:
      job: ["echo {{ MODEL }}"]
      schedule: ["0 6 * * *", {minute: 0, hour: 5}]
    secretive:
      job: ["echo {{ API_TOKEN }}"]
      schedule: "@daily"
    manual:
      job: [echo]
"""


def test_enable_registers_against_the_package_and_disable_removes(tmp_path: Path):
    root = tmp_path / "p"
    root.mkdir()
    (root / "askanna.yml").write_text(textwrap.dedent(YML))
    store = LocalStore(tmp_path / "store")
    regs = schedule.enable(root, ("train",), store)
    assert [(r.job, r.cron, r.timezone) for r in regs] == [
        ("train", "0 6 * * *", "Europe/Amsterdam"),
        ("train", "0 5 * * *", "Europe/Amsterdam"),
    ]
    assert store.package_path(regs[0].package_sha256).is_file()
    schedule.enable(root, ("train",), store)  # again: replaced, not doubled
    assert len(store.schedules().entries()) == 2
    assert [r.job for r in schedule.disable(root, (), store)] == ["train", "train"]
    assert store.schedules().entries() == []


def test_enable_refuses_a_job_that_needs_a_secret_and_one_without_schedule(tmp_path: Path):
    root = tmp_path / "p"
    root.mkdir()
    (root / "askanna.yml").write_text(textwrap.dedent(YML))
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ConfigError, match=r"secretive.*cannot be scheduled") as err:
        schedule.enable(root, (), store)
    assert "API_TOKEN" in err.value.message and "secrets are never stored" in (err.value.hint or "")
    with pytest.raises(ConfigError, match="no schedule"):
        schedule.enable(root, ("manual",), store)
    assert store.schedules().entries() == []  # nothing registered when refused


def test_fires_are_kept_in_bounds(tmp_path: Path, monkeypatch):
    from anna_run.store import schedules as book_module

    monkeypatch.setattr(book_module, "KEEP_FIRES", 5)
    store = LocalStore(tmp_path / "store")
    entry = _register(store, utc(2026, 6, 1, 12, 0, 30))
    clock = Clock(utc(2026, 6, 1, 12, 1, 1))
    scheduler = _scheduler(store, clock, [])
    for _ in range(8):
        scheduler.tick()
        clock.now += timedelta(minutes=1)
    assert len(store.schedules().fires(entry)) == 5


def test_a_fire_whose_package_is_gone_is_recorded_failed(tmp_path: Path):
    from anna_run.report import SilentReporter

    store = LocalStore(tmp_path / "store")
    entry = _register(store, utc(2026, 6, 1, 12))
    record = schedule.run_scheduled(store, entry, "aaaa-bbbb-cccc-dddd", SilentReporter())
    assert (record.status, record.trigger, record.job) == ("failed", "schedule", "j")
    assert record.reason.startswith("schedule: ")
    assert store.get("aaaa-bbbb-cccc-dddd").status == "failed"
