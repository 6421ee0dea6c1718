"""Schedules (SPEC §9): registering a project's ``schedule:`` entries in the store, computing
their fire times, and the services that start due runs: on this machine, or on the runner hosts.

* ``enable`` packs the project into the store and registers each entry against that package;
  a job that cannot run with the file's variables alone (it needs ``--secret`` values, which are
  never stored) is refused.
* Fire times come from cronsim in the job's timezone: a time that does not exist on a
  spring-forward day fires at the first minute after the gap, a time that happens twice on a
  fall-back day fires once (as Debian's cron does).
* ``Scheduler.tick`` decides every fire time that has come: started, skipped (the entry's previous
  run still goes on) or missed (no scheduler ran at the time: listed, never replayed). Each
  decision is claimed in the store with an exclusive create, so it is taken once however many
  schedulers share the store.
* ``serve`` (`anna-run scheduler`) starts each fire as a run on this machine; ``beat``
  (`anna-run beat`) submits it to the runner hosts' queue, from the registered package, and a
  fire that cannot be queued is recorded failed. Both share the one loop, and the claims: a
  scheduler and a beat on the same store never take the same fire time twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from .errors import AnnaRunError, ConfigError, NotFound
from .ids import new_suuid
from .orphans import runner_alive, runner_identity
from .project import Job, Project, find_project_file, load_project
from .record import RunRecord, now_iso, parse_iso
from .report import Reporter, SilentReporter
from .request import FromStore, RunRequest, prepare, project_id_of
from .store.base import Store
from .store.schedules import Fire, Registration

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
GRACE_S = 60.0  # a fire time found later than this is missed: started late it would surprise
MISSED_KEPT = 10  # of a long gap, the latest missed times are listed; the rest only counted
STALE_START_S = 600.0  # a started fire whose run never made a record is taken as gone after this
_SCAN_LIMIT = 100_000  # fire times looked at in one gap (a week of minutes is 10,080)
PROJECT_FILES = ("askanna.yml", "askanna.yaml")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# -- fire times ------------------------------------------------------------------------------------
def cron_fields(entry: str) -> str:
    """The five cron fields of a schedule entry (an alias such as ``@daily`` spelt out)."""
    return ALIASES.get(entry.strip().lower(), entry.strip())


def fire_times(cron: str, tz: str, after: datetime, until: datetime, limit: int = _SCAN_LIMIT) -> list[datetime]:
    """The fire times ``t`` with ``after < t <= until``, in UTC, at most ``limit`` (the latest
    kept). ValueError for an entry cronsim cannot read."""
    found: list[datetime] = []
    for at in _iterate(cron, tz, after):
        if at > until:
            break
        found.append(at)
        if len(found) > limit:
            del found[0]
    return found


def next_fire(cron: str, tz: str, after: datetime) -> datetime:
    """The first fire time after ``after``, in the entry's timezone."""
    at = next(_iterate(cron, tz, after))
    return at.astimezone(ZoneInfo(tz))


def _iterate(cron: str, tz: str, after: datetime):
    try:
        # cronsim yields times strictly after its start, at whole minutes
        sim = CronSim(cron_fields(cron), after.astimezone(ZoneInfo(tz)))
    except CronSimError as exc:
        raise ValueError(f"schedule {cron!r}: {exc}") from None
    for at in sim:
        yield at.astimezone(timezone.utc)


# -- registration ----------------------------------------------------------------------------------
def registration_id(project_id: str, job: str, cron: str) -> str:
    return hashlib.sha256(f"{project_id}\0{job}\0{cron}".encode()).hexdigest()[:16]


def enable(project_dir: Path | None, jobs: tuple[str, ...], store: Store) -> list[Registration]:
    """Pack the project into ``store`` and register the schedules of ``jobs`` (default: every job
    with one), replacing their earlier registrations. ConfigError, before anything is stored, for
    an unknown job, a job without a schedule, or one that cannot run unattended."""
    project = load_project(find_project_file(project_dir))
    project_id = project_id_of(project)
    selected = _selected(project, jobs)
    for job in selected:
        _check_unattended(project, job)
    book = store.schedules()
    package = store.pack(project.root, cache_key=project_id)
    store.publish_package(package.path, package.sha256)
    now = now_iso()
    registered = []
    for job in selected:
        kept = {registration_id(project_id, job.name, cron) for cron in job.schedule}
        for old in book.entries():
            if old.project == project_id and old.job == job.name and old.id not in kept:
                book.remove(old.id)  # an entry no longer in the file; the others keep their history
        for cron in dict.fromkeys(job.schedule):
            registration = Registration(
                id=registration_id(project_id, job.name, cron),
                project=project_id,
                project_root=str(project.root),
                job=job.name,
                cron=cron,
                timezone=project.timezone_for(job),
                package_sha256=package.sha256,
                package_size=package.size,
                registered_at=now,
            )
            book.put(registration)
            registered.append(registration)
    return registered


def disable(project_dir: Path | None, jobs: tuple[str, ...], store: Store) -> list[Registration]:
    """Unregister the schedules of ``jobs`` (default: every job) of the project."""
    project = load_project(find_project_file(project_dir))
    project_id = project_id_of(project)
    book = store.schedules()
    removed = []
    for registration in book.entries():
        if registration.project == project_id and (not jobs or registration.job in jobs):
            book.remove(registration.id)
            removed.append(registration)
    return removed


def _selected(project: Project, names: tuple[str, ...]) -> list[Job]:
    if not names:
        found = [job for job in project.jobs if job.schedule]
        if not found:
            raise ConfigError(f"no job in {project.file} has a schedule", hint='add `schedule: ["0 6 * * *"]` to a job')
        return found
    selected = [project.job(name) for name in dict.fromkeys(names)]
    for job in selected:
        if not job.schedule:
            raise ConfigError(f"job {job.name!r} has no schedule in {project.file}")
    return selected


def _check_unattended(project: Project, job: Job) -> None:
    """A scheduled run gets the file's variables only: whatever a run with no options refuses
    (a variable only ``--secret`` or ``--var`` would give) is refused now, not at 6 in the morning."""
    try:
        prepared = prepare(RunRequest(job=job.name, project=project.root), SilentReporter())
    except ConfigError as exc:
        raise ConfigError(
            f"job {job.name!r} cannot be scheduled: {exc.message}",
            hint="a scheduled run gets only the variables in askanna.yml (secrets are never stored); "
            "`schedules enable JOB...` enables the others",
        ) from None
    prepared.cleanup()


# -- what happened -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EntryState:
    """A registration with its next fire time and what its recent fire times came to."""

    registration: Registration
    next_fire: datetime | None  # in the entry's timezone
    last: Fire | None  # the last started fire
    last_status: str | None  # its run's status
    missed: tuple[datetime, ...]
    skipped: tuple[datetime, ...]

    def to_dict(self) -> dict:
        reg = self.registration
        return {
            "id": reg.id,
            "project": reg.project,
            "project_root": reg.project_root,
            "job": reg.job,
            "cron": reg.cron,
            "timezone": reg.timezone,
            "package": reg.package_sha256,
            "next_fire": self.next_fire.isoformat() if self.next_fire else None,
            "next_fire_utc": _utc(self.next_fire) if self.next_fire else None,
            "last_run": self.last.run if self.last else None,
            "last_fire_utc": _utc(self.last.at) if self.last else None,
            "last_status": self.last_status,
            "missed": [_utc(at) for at in self.missed],
            "skipped": [_utc(at) for at in self.skipped],
            "registered_at": reg.registered_at,
        }


def states(store: Store, now: datetime | None = None) -> list[EntryState]:
    now = now or utc_now()
    book = store.schedules()
    found = []
    for reg in book.entries():
        fires = book.fires(reg.id)
        started = [f for f in fires if f.outcome == "started"]
        last = started[-1] if started else None
        status = None
        if last is not None and last.run:
            with contextlib.suppress(AnnaRunError):
                status = store.get(last.run).status
        try:
            upcoming: datetime | None = next_fire(reg.cron, reg.timezone, now)
        except (ValueError, StopIteration):
            upcoming = None
        found.append(
            EntryState(
                registration=reg,
                next_fire=upcoming,
                last=last,
                last_status=status,
                missed=tuple(f.at for f in fires if f.outcome == "missed")[-MISSED_KEPT:],
                skipped=tuple(f.at for f in fires if f.outcome == "skipped")[-MISSED_KEPT:],
            )
        )
    return found


def _utc(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


# -- firing ----------------------------------------------------------------------------------------
class Scheduler:
    """Decides the fire times that have come, once per entry and time across every scheduler of
    the store. ``start(registration, run_id, at)`` starts a run (it must not block long);
    ``clock`` gives the time (a fixed one in tests)."""

    def __init__(
        self,
        store: Store,
        start: Callable[[Registration, str, datetime], None],
        *,
        clock: Callable[[], datetime] = utc_now,
        grace_s: float = GRACE_S,
    ) -> None:
        self.store = store
        self.book = store.schedules()
        self.start = start
        self.clock = clock
        self.grace = timedelta(seconds=grace_s)
        self.me = runner_identity()

    def tick(self) -> list[Fire]:
        """Decide what has come due by now; returns the decisions this scheduler took."""
        now = self.clock()
        taken: list[Fire] = []
        for reg in self.book.entries():
            try:
                taken.extend(self._entry(reg, now))
            except ValueError:
                continue  # an entry cronsim cannot read: project.py lets only valid ones through
        return taken

    def seconds_to_next(self, limit: float = 30.0) -> float:
        """How long to sleep before the next fire time of any entry (at most ``limit``)."""
        now = self.clock()
        wait = limit
        for reg in self.book.entries():
            with contextlib.suppress(ValueError, StopIteration):
                wait = min(wait, (next_fire(reg.cron, reg.timezone, now) - now).total_seconds())
        return max(0.05, wait)

    def _entry(self, reg: Registration, now: datetime) -> list[Fire]:
        since = self.book.last_decided(reg.id) or parse_iso(reg.registered_at)
        times = fire_times(reg.cron, reg.timezone, since, now)
        if not times:
            return []
        *earlier, latest = times
        taken = [f for at in earlier[-MISSED_KEPT:] if (f := self._claim(reg, at, "missed"))]
        if now - latest > self.grace:
            return taken + [f for f in [self._claim(reg, latest, "missed")] if f]
        going = self._still_going(reg, now)
        if going is not None:
            return taken + [f for f in [self._claim(reg, latest, "skipped", going)] if f]
        run_id = new_suuid()
        fire = self._claim(reg, latest, "started", run_id)
        if fire is not None:
            self.start(reg, run_id, latest)
            taken.append(fire)
        return taken

    def _claim(self, reg: Registration, at: datetime, outcome: str, run: str | None = None) -> Fire | None:
        fire = Fire(entry=reg.id, at=at, outcome=outcome, run=run, decided_at=now_iso(), by=self.me)
        return fire if self.book.claim(fire) else None

    def _still_going(self, reg: Registration, now: datetime) -> str | None:
        """The run id of the entry's previous scheduled run when it has not ended."""
        started = [f for f in self.book.fires(reg.id) if f.outcome == "started" and f.run]
        if not started:
            return None
        last = started[-1]
        try:
            record = self.store.get(last.run)
        except NotFound:
            # started, no record yet: going while young (the child is preparing it)
            young = not last.decided_at or now - parse_iso(last.decided_at) < timedelta(seconds=STALE_START_S)
            return last.run if young else None
        if record.is_final:
            return None
        # running: going while its anna-run process lives (a killed one must not block the entry)
        return last.run if record.status == "queued" or runner_alive(record.runner) else None


# -- a scheduled run ----------------------------------------------------------------------------------
def run_scheduled(store: Store, entry_id: str, run_id: str, reporter: Reporter) -> RunRecord:
    """Run the registered entry ``entry_id`` as run ``run_id``: its registered package, the file's
    variables, ``"trigger": "schedule"``. A run that cannot even be prepared is recorded failed,
    so the listing says what became of the fire time."""
    from .engine import connect
    from .run import execute

    reg = store.schedules().get(entry_id)
    if reg is None:
        raise NotFound(f"no schedule {entry_id} in the store {store.location}")
    with tempfile.TemporaryDirectory(prefix="anna-run-schedule-") as tmp:
        try:
            request, source = fire_request(store, reg, run_id, Path(tmp))
            prepared = prepare(request, reporter, source)
        except (AnnaRunError, OSError) as exc:
            return _refused(store, reg, run_id, _why(exc))
        try:
            final = execute(prepared, connect(), store, reporter)
        finally:
            prepared.cleanup()
            marked = _marked_scheduled(store, run_id)  # however the run ended (cancelled: raised)
        return marked or final


def fire_request(store: Store, reg: Registration, run_id: str, tmp: Path) -> tuple[RunRequest, FromStore]:
    """The request and source of one fire of ``reg``: its registered package (extracted under
    ``tmp`` far enough to read its askanna.yml), the file's variables, ``"trigger": "schedule"``."""
    from .package import Package

    package_path = store.package_path(reg.package_sha256)
    project_file = _extract(package_path, tmp)
    size = package_path.stat().st_size
    package = Package(sha256=reg.package_sha256, size=size, files=0, path=package_path, reused=True)
    source = FromStore(
        project_file=project_file, package=package, project_id=reg.project, project_root=reg.project_root
    )
    return RunRequest(job=reg.job, store=store.location, run_id=run_id, trigger="schedule"), source


def _why(exc: BaseException) -> str:
    return exc.message if isinstance(exc, AnnaRunError) else f"{type(exc).__name__}: {exc}"


def _marked_scheduled(store: Store, run_id: str) -> RunRecord | None:
    """The run's record with ``"trigger": "schedule"`` (until run.first_record copies the
    request's trigger itself)."""
    try:
        record = store.get(run_id)
    except AnnaRunError:
        return None
    if record.trigger is None:
        record = store.save_record(record.evolve(trigger="schedule")) or record
    return record


def _refused(store: Store, reg: Registration, run_id: str, reason: str) -> RunRecord:
    now = now_iso()
    record = RunRecord(
        id=run_id,
        job=reg.job,
        project=reg.project,
        project_root=reg.project_root,
        status="failed",
        reason=f"schedule: {reason}",
        created_at=now,
        finished_at=now,
        trigger="schedule",
    )
    return store.save_record(record) or record


def _extract(package: Path, dest: Path) -> Path:
    """The package's tree under ``dest`` (a build context needs it all); its askanna.yml."""
    with tarfile.open(package) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python < 3.10.12: the package is our own canonical tar (no links out, no devices)
            tar.extractall(dest)
    for name in PROJECT_FILES:
        if (dest / name).is_file():
            return dest / name
    raise NotFound("the registered code package holds no askanna.yml")


# -- the service -----------------------------------------------------------------------------------
def serve(
    store: Store,
    stop: threading.Event,
    say: Callable[[str], None],
    *,
    grace_s: float = 10.0,
) -> None:
    """Start due runs until ``stop`` is set, each in an ``anna-run`` process of its own (its output
    in the run's runner.log). When stopped, the runs still going are stopped like Ctrl-C (recorded
    cancelled, containers removed) and waited for."""
    children: dict[str, subprocess.Popen] = {}

    def start(reg: Registration, run_id: str, at: datetime) -> None:
        cmd = [sys.executable, "-m", "anna_run.cli", "_scheduled-run", "--store", store.location, reg.id, run_id]
        try:
            with store.run_files(run_id).open_runner_log() as log:
                children[run_id] = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
                )
        except OSError as exc:  # the fire time is taken: its run says why it never ran
            _refused(store, reg, run_id, f"could not start: {exc.strerror or exc}")
            say(f"{_utc(at)} {reg.job}: run {run_id} could not start: {exc.strerror or exc}")
            return
        say(f"{_utc(at)} {reg.job} ({reg.cron}, {reg.timezone}): started run {run_id}")

    def reap() -> None:
        for run_id, child in list(children.items()):
            if child.poll() is not None:
                del children[run_id]

    _loop(Scheduler(store, start), stop, say, "scheduler", reap)
    for run_id, child in children.items():
        if child.poll() is None:
            say(f"stopping run {run_id}")
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
    for child in children.values():
        try:
            child.wait(timeout=grace_s + 30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def beat(store: Store, stop: threading.Event, say: Callable[[str], None], queue: str, reporter: Reporter) -> None:
    """Queue due runs on the runner hosts' ``queue`` until ``stop`` is set: each fire is submitted
    as `anna-run submit` does, from the registered package, and runs on whichever host takes it.
    A fire that cannot be queued (broker down, a secret and no key) is recorded failed."""
    from .hosts.submit import submit

    def start(reg: Registration, run_id: str, at: datetime) -> None:
        try:
            with tempfile.TemporaryDirectory(prefix="anna-run-beat-") as tmp:
                request, source = fire_request(store, reg, run_id, Path(tmp))
                submit(request, queue, reporter, source=source)
        except (AnnaRunError, OSError) as exc:
            with contextlib.suppress(AnnaRunError):
                if not _recorded(store, run_id):  # submit records a run it could not queue
                    _refused(store, reg, run_id, f"not queued: {_why(exc)}")
            say(f"{_utc(at)} {reg.job}: run {run_id} not queued: {_why(exc)}")
            return
        say(f"{_utc(at)} {reg.job} ({reg.cron}, {reg.timezone}): queued run {run_id} on {queue}")

    _loop(Scheduler(store, start), stop, say, f"beat (queue {queue})")


def _recorded(store: Store, run_id: str) -> bool:
    try:
        store.get(run_id)
    except NotFound:
        return False
    return True


def _loop(
    scheduler: Scheduler,
    stop: threading.Event,
    say: Callable[[str], None],
    name: str,
    between: Callable[[], None] | None = None,
) -> None:
    """Tick ``scheduler`` until ``stop`` is set, saying what it decided other than a start."""
    say(f"{name} on {scheduler.store.location}: {len(scheduler.book.entries())} schedule(s)")
    while not stop.is_set():
        try:
            decided = scheduler.tick()
        except AnnaRunError as exc:  # e.g. the store briefly unwritable: try again next tick
            say(f"error: {exc.message}")
            decided = []
        for fire in decided:
            if fire.outcome != "started":
                say(
                    f"{_utc(fire.at)} {fire.entry}: {fire.outcome}"
                    + (f" (run {fire.run} still going)" if fire.run else "")
                )
        if between is not None:
            between()
        stop.wait(min(1.0, scheduler.seconds_to_next()))
