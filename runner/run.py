"""A run, top to bottom: validate, package, image, sandbox, script, logs, collect, record.

Everything that can be wrong with the input is found in ``prepare`` before anything is
created (no container, image or store entry); ``execute`` then does the run and always
leaves a final record, whatever way it ends.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, codecache
from .errors import AnnaRunError, Cancelled, EngineError
from .ids import suuid_from_digest
from .inputs import input_members, input_refs, resolve_inputs
from .orphans import runner_identity
from .record import BlobRef, CommandResult, ImageInfo, RunRecord, now_iso
from .report import MaskedReporter, Reporter, counted
from .request import (
    DEFAULT_CACHE,
    FromStore,
    PreparedRun,
    Rendered,
    RunRequest,
    Settings,
    masked_errors,
    prepare,
    render_outputs,
)
from .store import open_store
from .store.base import Store
from .users import FALLBACK_HOME, ROOT, User, resolve_user
from .variables import PAYLOAD_PATH, Masker, Variables

if TYPE_CHECKING:
    from .package import Package  # imported where packaging happens: it is not cheap
    from .project import Job


def grace_s() -> float:
    """Seconds between SIGTERM and SIGKILL when a run is stopped."""
    try:
        return max(0.0, float(os.environ.get("ANNA_RUN_GRACE", "10")))
    except ValueError:
        return 10.0


# -- the run -------------------------------------------------------------------------------------
def run_job(request: RunRequest, reporter: Reporter) -> RunRecord:
    """Check, then run. Returns the final record; raises ConfigError before anything is created,
    EngineError when the engine fails (the run is recorded first), Cancelled on Ctrl-C."""
    from .engine import connect

    prepared = prepare(request, reporter)
    try:
        engine = connect()  # no engine: an error before the store is opened or anything packed
        store = open_store(request.store, reporter=reporter)
        return execute(prepared, engine, store, reporter)
    finally:
        prepared.cleanup()


@dataclass(frozen=True)
class Staged:
    """What a run's container needs from the store: its code package and payload, in the store."""

    package: Package
    payload: BlobRef | None
    variables: Variables  # with the real package id
    inputs: tuple[RunRecord, ...] = ()  # the earlier runs whose outputs the job reads


def stage(prepared: PreparedRun, store: Store, reporter: Reporter) -> Staged:
    """Put the run's code package and payload in the store (unchanged ones are not sent again).
    The input runs are looked up first: one the store lacks is a ConfigError before anything."""
    inputs = resolve_inputs(store, prepared.input_runs)
    package = _package(prepared, store, reporter)
    store.publish_package(package.path, package.sha256)  # S3: up once, unless already there
    payload = None
    if prepared.payload is not None and prepared.payload_file is not None:
        info = prepared.payload
        store.add_payload(prepared.payload_file, info.sha256)
        payload = BlobRef(id=suuid_from_digest(info.sha256), sha256=info.sha256, size=info.size)
    return Staged(package, payload, prepared.variables_for(package.sha256), inputs)


class Recorder:
    """Saves a run's record, masked as a whole where it leaves the run."""

    def __init__(self, store: Store, masker: Masker) -> None:
        self.store = store
        self.mask = masker.mask

    def save(self, record: RunRecord) -> RunRecord:
        record = record.masked(self.mask)
        return self.store.save_record(record) or record  # as stored: S3 may say upload "pending"

    def finish(self, record: RunRecord, *, status: str, reason: str | None, **extra) -> RunRecord:
        """The final record: how the run ended, and what it left (logs, outputs)."""
        sink = extra.pop("sink", None)
        collected = extra.pop("collected", None)
        tracked = extra.pop("tracked", None)
        duration = extra.pop("duration", None)
        changes = {"status": status, "reason": reason, "finished_at": now_iso(), "runner": None}
        for key in ("commands", "exit_code"):
            if key in extra:
                changes[key] = extra[key]
        if duration is not None:
            changes["duration_s"] = round(duration, 3)
        if sink is not None:
            changes["log_truncated"] = sink.truncated
        if collected is not None:
            changes["result"] = collected.result
            changes["artifacts"] = tuple(collected.artifacts)
            changes["refused"] = tuple(collected.refused)
            changes["warnings"] = record.warnings + tuple(f"not found: {p}" for p in collected.missing)
        if tracked is not None:
            changes["metrics"], changes["tracked"] = tracked.metrics, tracked.tracked
            changes["warnings"] = changes.get("warnings", record.warnings) + tracked.warnings
        final = record.evolve(**changes)
        try:
            return self.save(final)
        except AnnaRunError as exc:
            # A full store: stdout.log and stderr.log repeat log.txt; without them the record fits,
            # and says how the run ended instead of staying "running".
            full = isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOSPC
            if full and self.store.run_files(record.id).drop_log_copies():
                with contextlib.suppress(AnnaRunError):
                    return self.save(final)
        return final


def execute(prepared: PreparedRun, engine, store: Store, reporter: Reporter) -> RunRecord:
    """Run a prepared run on ``engine`` (a docker APIClient), recorded in ``store`` (a runner
    host passes one that lets only the holder of the run's lease write it). Whatever way the run
    ends, its record says so. Everything the run says leaves masked: the reporter's text, the
    stored log, the record and the message of an error raised from here."""
    reporter = MaskedReporter(reporter, prepared.masker.mask)
    recorder = Recorder(store, prepared.masker)
    record: RunRecord | None = None
    try:
        with masked_errors(prepared.masker):  # e.g. a pull error naming an image built from a secret
            staged = stage(prepared, store, reporter)
            rendered = render_outputs(prepared, staged.variables)
            image = _image(prepared, engine, store, rendered, staged.variables, reporter)
            user = resolve_user(
                engine, image.id or rendered.image, prepared.settings.user, store.cache_file("users.json")
            )
            record = recorder.save(first_record(prepared, staged, image, rendered, user))
            record = _in_sandbox(prepared, engine, recorder, record, staged, rendered, user, reporter)
    except KeyboardInterrupt:
        if record is not None:
            record = recorder.finish(record, status="cancelled", reason="cancelled by the user")
        raise Cancelled("cancelled") from None
    except Cancelled as exc:
        if record is not None and not exc.recorded:  # else the sandbox recorded how far it got
            record = recorder.finish(record, status="cancelled", reason="cancelled by the user")
        raise
    except EngineError as exc:
        if record is not None:
            record = recorder.finish(record, status="failed", reason=f"engine: {exc.message}")
        raise
    except Exception as exc:  # a store fault or a bug: the record still says how the run ended
        if record is not None:
            message = exc.message if isinstance(exc, AnnaRunError) else f"internal error: {type(exc).__name__}: {exc}"
            record = recorder.finish(record, status="failed", reason=message)
        raise
    finally:
        if record is not None:
            record = notified(prepared, recorder, record, reporter)
    return record


def notified(prepared: PreparedRun, recorder: Recorder, record: RunRecord, reporter: Reporter) -> RunRecord:
    """Mail the run's end to its notifications addresses. A mail that cannot be sent is a warning
    in the run's log and record; the run's status and exit code never change because of mail."""
    from .notify import notify_run_end

    if not (prepared.job.notifications or prepared.project.notifications):
        return record
    if not record.is_final:  # the sandbox recorded the end itself (a cancel): read it back
        with contextlib.suppress(AnnaRunError):
            record = recorder.store.get(record.id)
        if not record.is_final:
            return record
    warning = notify_run_end(prepared.project, prepared.job, record, prepared.masker.mask)
    if warning is None:
        return record
    reporter.warning(warning)
    recorder.store.run_files(record.id).append_log(f"anna-run: warning: {warning}")
    return recorder.save(record.evolve(warnings=(*record.warnings, warning)))


def _image(prepared: PreparedRun, api, store: Store, rendered: Rendered, variables: Variables, reporter: Reporter):
    """The image the job runs in: the original one (a rerun), built from the project, or present
    per the pull policy."""
    from .image import build_image, ensure_image, ensure_pinned

    settings = prepared.settings
    if isinstance(prepared.source, FromStore) and prepared.source.image is not None:
        return ensure_pinned(api, prepared.source.image, reporter=reporter)
    if settings.build is not None:
        values = variables.as_dict()
        return build_image(
            api,
            prepared.project.root,
            settings.build,
            build_args={name: values[name] for name in settings.build_args},
            labels={"io.anna-run.project": prepared.project_id},
            reporter=reporter,
            cache_file=store.cache_file(f"build-{prepared.project_id}.json"),
        )
    credentials = None
    if rendered.credentials:
        from .project import Credentials

        credentials = Credentials(*rendered.credentials)
    return ensure_image(api, rendered.image, pull=settings.pull, reporter=reporter, credentials=credentials)


def _package(prepared: PreparedRun, store: Store, reporter: Reporter) -> Package:

    if prepared.pinned_package is not None:
        return prepared.pinned_package
    reporter.step_started("package", str(prepared.project.root))
    package = store.pack(
        prepared.project.root,
        cache_key=prepared.project_id,
        progress=lambda done, total: reporter.bytes_done("package", done, total),
    )
    detail = f"{package.files} files, {package.size / 1e6:.1f} MB{' (unchanged)' if package.reused else ''}"
    reporter.step_done("package", detail)
    for warning in package.warnings:
        reporter.warning(warning)
    return package


def first_record(
    prepared: PreparedRun, staged: Staged, image: ImageInfo, rendered: Rendered, user: User = ROOT
) -> RunRecord:
    """The record of a run whose container is about to be made (status running)."""
    variables = staged.variables
    user_names = prepared.user_names
    settings = prepared.settings
    rerun_of = prepared.source.rerun_of if isinstance(prepared.source, FromStore) else None
    return RunRecord(
        id=prepared.run_id,
        job=prepared.job.name,
        project=prepared.project_id,
        project_root=prepared.project_root,
        rerun_of=rerun_of,
        trigger=prepared.request.trigger or "cli",
        inputs=input_refs(staged.inputs),
        status="running",
        commands=tuple(CommandResult(command=c, exit_code=None) for c in prepared.job.commands),
        created_at=now_iso(),
        started_at=now_iso(),
        image=image,
        package=_package_ref(staged.package),
        payload=staged.payload,
        variables={k: v for k, v in variables.masked().items() if k in user_names},
        secret_names=tuple(sorted(variables.secret_names & user_names)),
        name=prepared.request.name,
        description=prepared.request.description,
        host=socket.gethostname(),
        runner_version=__version__,
        runner=runner_identity(),
        warnings=prepared.warnings,
        settings={
            "image": rendered.image,
            "pull": settings.pull,
            "timeout_s": settings.timeout,
            "cpus": settings.cpus,
            "memory": settings.memory,
            "gpus": settings.gpus,
            "network": settings.network,
            "timezone": settings.timezone,
            "cache": [path for path, _ in cache_paths(settings, user)],
            "user": user.shown,
            "build": settings.build,
            "build_args": list(settings.build_args),
            "result": rendered.result,
            "artifacts": list(rendered.artifacts),
        },
    )


def queued_record(prepared: PreparedRun, staged: Staged | None = None) -> RunRecord:
    """The record of a run accepted but not started (``--detach``; ``submit``, with what it staged),
    masked."""
    record = RunRecord(
        id=prepared.run_id,
        job=prepared.job.name,
        project=prepared.project_id,
        project_root=prepared.project_root,
        status="queued",
        trigger=prepared.request.trigger or "cli",
        created_at=now_iso(),
        name=prepared.request.name,
        description=prepared.request.description,
        host=socket.gethostname(),
        runner_version=__version__,
    )
    if staged is not None:
        user_names = prepared.user_names
        record = record.evolve(
            package=_package_ref(staged.package),
            payload=staged.payload,
            variables={k: v for k, v in staged.variables.masked().items() if k in user_names},
            secret_names=tuple(sorted(staged.variables.secret_names & user_names)),
            warnings=prepared.warnings,
        )
    return record.masked(prepared.masker.mask)


def _package_ref(package: Package) -> BlobRef:
    return BlobRef(id=suuid_from_digest(package.sha256), sha256=package.sha256, size=package.size)


def _in_sandbox(
    prepared: PreparedRun,
    api,
    recorder: Recorder,
    record: RunRecord,
    staged: Staged,
    rendered: Rendered,
    user: User,
    reporter: Reporter,
) -> RunRecord:
    from .collect import collect
    from .logsink import LogSink
    from .package import owned_copy
    from .sandbox import LABEL, Sandbox, SandboxSpec
    from .script import STATUS_PATH, CommandStatus, build_script, entrypoint, parse_status, setup_members

    settings = prepared.settings
    package = staged.package
    labels = {
        f"{LABEL}.run": record.id,
        f"{LABEL}.job": prepared.job.name,
        f"{LABEL}.project": prepared.project_id,
        f"{LABEL}.host": record.host,
        f"{LABEL}.runner": record.runner or "",
    }
    if prepared.request.keep:
        labels[f"{LABEL}.keep"] = "1"
    script = build_script(list(prepared.shell_commands), [c.command for c in record.commands])
    command, script_tar = entrypoint(script)
    base = record.image.id or rendered.image
    code = None  # the code image this run starts from, when the package is kept in the engine
    if record.image.id and codecache.wanted(package):
        usage = recorder.store.cache_file("code-images.json")
        code = codecache.code_image(api, record.image.id, package, user, reporter=reporter, usage_file=usage)
    spec = SandboxSpec(
        image=code or base,
        name=f"anna-run-{record.id}",
        environment=_environment(staged.variables, user, staged.inputs),
        user=prepared.settings.user,
        labels=labels,
        entrypoint=command,
        network=settings.network,
        cpus=settings.cpus,
        memory=settings.memory,
        gpus=settings.gpus,
        payload=prepared.payload is not None or bool(staged.inputs),
        volumes=_cache_volumes(api, prepared, user, base),
    )
    files = recorder.store.run_files(record.id)
    sink = LogSink(files, prepared.variables.masker, reporter)
    started = time.monotonic()
    try:
        with Sandbox(api, spec, keep=prepared.request.keep) as sandbox:
            record = record.evolve(container=sandbox.id)
            where = "kept in the engine" if code is not None else "into the container"
            reporter.step_started("copy", f"code {package.size / 1e6:.1f} MB {where}")
            if code is not None:  # the code and the setup are in the image already
                if script_tar is not None:
                    sandbox.put_archive("/", script_tar)
            elif user.is_root:
                sandbox.put_archive("/code", _file_chunks(package.path, "package", package.size, reporter))
                if script_tar is not None:
                    sandbox.put_archive("/", script_tar)
            else:  # one archive at /: the code and anna-run's files, owned by the job's user
                setup = setup_members(user.uid, user.gid, user.home, script if script_tar is not None else None)
                tree = owned_copy(package.path, uid=user.uid, gid=user.gid, prefix="code", before=setup)
                sandbox.put_archive("/", counted(tree, reporter, "package", package.size))
            if prepared.payload_file is not None or staged.inputs:
                sandbox.put_payload(_input_tar(recorder.store, prepared.payload_file, staged.inputs))
            reporter.step_done("copy")
            reporter.step_started("run", f"{prepared.job.name} in {rendered.image}")
            outcome = sandbox.run(sink.write, timeout=settings.timeout, grace=grace_s())
            sink.close()
            sink.check()  # a store that filled up or went read-only: a store error, outputs not kept
            tracked = _tracking(sandbox, files, prepared.masker, reporter)  # cancelled and timed out too
            status_text = None
            if not _engine_says_all(prepared.job, outcome):
                status_text = sandbox.read_file(STATUS_PATH).decode(errors="replace")
            collected = None
            if not outcome.cancelled:
                reporter.step_started("collect", "result and artifacts")
                collected = collect(sandbox, files, result=rendered.result, artifacts=rendered.artifacts)
                reporter.step_done("collect", f"{len(collected.artifacts)} artifact file(s)")
    finally:
        sink.close()
    if status_text is None:
        statuses = [CommandStatus(0, 0, outcome.runtime_s)]
    else:
        statuses = parse_status(status_text, len(prepared.job.commands), outcome.exit_code, outcome.runtime_s)
    commands = tuple(
        CommandResult(command=c.command, exit_code=s.exit_code, duration_s=s.duration_s)
        for c, s in zip(record.commands, statuses, strict=True)
    )
    ended = {
        "commands": commands,
        "exit_code": outcome.exit_code,
        "duration": time.monotonic() - started,
        "sink": sink,
        "tracked": tracked,
    }
    if outcome.cancelled:
        recorder.finish(record, status="cancelled", reason="cancelled by the user", **ended)
        cancelled = Cancelled("cancelled; the container was stopped and removed")
        cancelled.recorded = True
        raise cancelled
    status, reason, exit_code = verdict(outcome, collected, rendered, settings)
    ended["exit_code"] = exit_code
    return recorder.finish(record, status=status, reason=reason, collected=collected, **ended)


def _tracking(sandbox, files, masker: Masker, reporter: Reporter):
    """The metrics and variables the job tracked, read out of the container line by line, stored
    whole (masked) with the run and summed up for the record. Never changes how the run ended:
    a file that cannot be read is a warning."""
    from .script import TRACKING_PATHS
    from .store.base import TRACKING_FILES
    from .tracking import Tracked, limits_from_env, read_tracking

    limits = limits_from_env()
    found: dict[str, Any] = {}
    warnings: list[str] = []
    for kind, path in TRACKING_PATHS.items():
        try:
            with sandbox.open_file(path) as stream:
                if stream is None:
                    continue
                with files.open_tracking(kind) as out:
                    summary = read_tracking(stream, kind, TRACKING_FILES[kind], limits, out.write, masker)
        except (EngineError, OSError) as exc:
            warnings.append(f"tracked {kind} not read: {getattr(exc, 'message', exc)}")
            continue
        found[kind] = summary.stats if kind == "metrics" else summary.last
        warnings.extend(summary.warnings)
    for warning in warnings:
        reporter.warning(warning)
    return Tracked(metrics=found.get("metrics", {}), tracked=found.get("variables", {}), warnings=tuple(warnings))


def _engine_says_all(job: Job, outcome) -> bool:
    """A one-command job whose container ended by itself with 0: the command ran and exited 0,
    and the engine's run time is its duration, so the status file (one archive call, ~35 ms)
    has nothing to add."""
    return len(job.commands) == 1 and outcome.exit_code == 0 and not (outcome.timed_out or outcome.cancelled)


def verdict(outcome, collected, rendered: Rendered, settings: Settings) -> tuple[str, str | None, int | None]:
    """How a run that ended by itself went: (status, reason, exit code), from the container's
    outcome and what collecting its outputs found."""
    if outcome.timed_out:
        return "timeout", f"timed out after {settings.timeout:g} s", outcome.exit_code
    if outcome.oom:
        return "failed", "oom", outcome.exit_code
    if outcome.exit_code != 0:
        return "failed", f"command failed with exit code {outcome.exit_code}", outcome.exit_code
    if collected.result_problem:
        return "failed", collected.result_problem, 0
    if rendered.result and collected.result_missing:
        return "failed", f"result missing: {rendered.result}", 0
    return "succeeded", None, 0


def cache_paths(settings: Settings, user: User) -> list[tuple[str, str]]:
    """(container path, volume tag) of each dependency cache: the default one where this user's
    cache lives, and a volume of its own for each user (a root-owned cache is no use to uid 1000)."""
    paths = []
    for path in settings.cache:
        if not user.is_root and path in DEFAULT_CACHE:
            path = f"{user.home}/.cache"
        key = path if user.is_root else f"{path}|{user.shown}"
        paths.append((path, hashlib.sha256(key.encode()).hexdigest()[:12]))
    return paths


def _cache_volumes(api, prepared: PreparedRun, user: User, image: str) -> tuple[tuple[str, str], ...]:
    """One named volume per cache path of the project (and user), kept between its runs
    (labelled, so `gc` leaves them alone and `images prune` could find them). A new volume of a
    non-root user is given to that user first."""
    volumes = []
    for path, tag in cache_paths(prepared.settings, user):
        name = f"anna-run-cache-{prepared.project_id}-{tag}"
        labels = {"io.anna-run.cache": path, "io.anna-run.project": prepared.project_id}
        try:
            new = not user.is_root and not _volume_exists(api, name)  # root: one call, as before
            api.create_volume(name, labels=labels)
            if new:
                _give_volume(api, name, image, user)
        except EngineError:
            raise
        except Exception as exc:
            from .engine import short_message

            raise EngineError(f"cannot create the cache volume for {path}: {short_message(exc)}") from None
        volumes.append((name, path))
    return tuple(volumes)


def _volume_exists(api, name: str) -> bool:
    from docker.errors import NotFound

    try:
        api.inspect_volume(name)
        return True
    except NotFound:
        return False


def _give_volume(api, volume: str, image: str, user: User) -> None:
    """Make the root of a new volume the user's: a never-started container mounts it, and a
    folder entry owned by the user is put over the mount point (no chown in the image needed)."""
    from docker.types import Mount

    from .engine import helper_container

    with helper_container(api, image, mounts=(Mount("/anna-run-cache", volume, type="volume"),)) as helper:
        info = tarfile.TarInfo("anna-run-cache")
        info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, 0o755, user.uid, user.gid, 946684800
        api.put_archive(helper, "/", info.tobuf(format=tarfile.PAX_FORMAT) + b"\0" * 1024)


def _environment(variables: Variables, user: User, inputs: tuple[RunRecord, ...] = ()) -> dict[str, str]:
    from .script import METRICS_PATH, VARIABLES_PATH

    environment = variables.as_dict()
    if inputs:
        environment["AA_INPUT_RUNS"] = " ".join(record.id for record in inputs)
    environment["ANNA_RUN_METRICS"] = METRICS_PATH
    environment["ANNA_RUN_VARIABLES"] = VARIABLES_PATH
    if user.home == FALLBACK_HOME:
        environment.setdefault("HOME", FALLBACK_HOME)
    return environment


def _file_chunks(path: Path, step: str, total: int, reporter: Reporter) -> Iterator[bytes]:
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            done += len(chunk)
            reporter.bytes_done(step, done, total)
            yield chunk


def _input_tar(store: Store, payload: Path | None, inputs: tuple[RunRecord, ...]) -> Iterator[bytes]:
    """What the read-only /input volume holds: the payload and the input runs' outputs."""
    yield from input_members(store, inputs)
    if payload is not None:
        yield from _single_file_tar(payload, "payload.json", end=False)
    yield b"\0" * 1024


def _single_file_tar(path: Path, name: str, *, end: bool = True) -> Iterator[bytes]:
    """A tar of one read-only file, streamed: header, content, padding, end blocks."""
    size = path.stat().st_size
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o444, 946684800
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk
    yield b"\0" * ((512 - size % 512) % 512) + (b"\0" * 1024 if end else b"")


__all__ = ["PAYLOAD_PATH", "Recorder", "Staged", "execute", "run_job", "stage"]
