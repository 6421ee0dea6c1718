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
import shutil
import socket
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import AnnaRunError, Cancelled, ConfigError, EngineError
from .orphans import runner_identity
from .progress import Reporter
from .project import (
    Job,
    Project,
    check_relative_path,
    find_project_file,
    load_project,
    parse_duration,
    parse_memory,
)
from .record import BlobRef, CommandResult, ImageInfo, RunRecord, now_iso
from .store import open_store
from .store.base import Store
from .variables import (
    PAYLOAD_PATH,
    Masker,
    PayloadInfo,
    Variables,
    builtin_variables,
    check_arithmetic,
    new_suuid,
    parse_assignments,
    parse_env_file,
    read_payload,
    render,
    render_command,
    resolve,
    suuid_from_digest,
)

if TYPE_CHECKING:
    from .package import Package  # imported where packaging happens: it is not cheap

# The pip and XDG caches of a root user: a second `pip install` of the same requirements is
# served from here instead of downloading or building again.
DEFAULT_CACHE = ("/root/.cache",)


def grace_s() -> float:
    """Seconds between SIGTERM and SIGKILL when a run is stopped."""
    try:
        return max(0.0, float(os.environ.get("ANNA_RUN_GRACE", "10")))
    except ValueError:
        return 10.0


@dataclass(frozen=True)
class RunRequest:
    """What the user asked for: a job and the run options (SPEC §6)."""

    job: str
    project: Path | None = None
    payload: str | None = None  # a path, or "-" for stdin
    variables: tuple[str, ...] = ()  # K=V
    secrets: tuple[str, ...] = ()  # K=V
    env_files: tuple[Path, ...] = ()
    store: str | None = None
    image: str | None = None
    pull: str | None = None
    timeout: str | None = None
    cpus: float | None = None
    memory: str | None = None
    gpus: str | None = None
    network: str | None = None
    keep: bool = False
    name: str | None = None
    description: str | None = None
    token: str = ""
    run_id: str | None = None  # set when the id must be known before the run (--detach)
    no_cache: bool = False  # no dependency cache volumes


@dataclass(frozen=True)
class Settings:
    image: str
    pull: str
    timeout: float | None
    cpus: float | None
    memory: int | None
    gpus: int | str | None
    network: str
    timezone: str
    cache: tuple[str, ...]  # container paths kept in the project's cache volumes; () with --no-cache
    build: str | None = None  # environment.build, when the image is built from the project
    build_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pin:
    """What a rerun (or a runner host's run of a submitted job) takes from elsewhere instead of
    from the working tree: the code package from the store, and for a rerun the original image."""

    rerun_of: str | None
    package: Package
    image: ImageInfo | None  # None: resolved by the pull policy, as for a new run
    project_root: str


@dataclass
class Prepared:
    """A validated run: every check passed, nothing created yet."""

    request: RunRequest
    project: Project
    job: Job
    project_id: str
    run_id: str
    payload_file: Path | None
    payload: PayloadInfo | None
    user_vars: dict[str, dict[str, str]]
    shell_commands: list[str]
    settings: Settings
    warnings: list[str] = field(default_factory=list)
    _tmp: Path | None = None
    pin: Pin | None = None  # a rerun: the code, image and place of the original run

    def cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


# -- validation ----------------------------------------------------------------------------------
def prepare(request: RunRequest, reporter: Reporter) -> Prepared:
    """Validate project, job, payload, variables and options; create nothing."""
    project = load_project(find_project_file(request.project))
    job = project.job(request.job)
    warnings = list(project.warnings)
    tmp = None
    payload_file, payload = None, None
    if request.payload is not None:
        payload_file, tmp = _payload_file(request.payload)
        try:
            payload = read_payload(payload_file)
        except BaseException:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        warnings.extend(payload.warnings)
    try:
        return _prepare_rest(request, reporter, project, job, warnings, payload_file, payload, tmp)
    except BaseException:
        if tmp:  # the copy of a payload read from stdin: nothing may stay behind
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _prepare_rest(
    request: RunRequest,
    reporter: Reporter,
    project: Project,
    job: Job,
    warnings: list[str],
    payload_file: Path | None,
    payload: PayloadInfo | None,
    tmp: Path | None,
) -> Prepared:
    """The checks after the payload is read: variables, commands, options, outputs, image."""
    user_vars = {
        "project": dict(project.variables),
        "env_file": _env_files(request.env_files),
        "cli": parse_assignments(request.variables, option="--var"),
        "secrets": parse_assignments(request.secrets, option="--secret"),
        "payload": dict(payload.variables) if payload else {},
    }
    run_id = request.run_id or new_suuid()
    known = set().union(*user_vars.values()) | set(_builtins_probe(run_id))
    shell_commands = []
    arithmetic: set[str] = set()
    for i, command in enumerate(job.commands):
        text, notes = render_command(command, known, where=f"job '{job.name}' command {i + 1}", arithmetic=arithmetic)
        shell_commands.append(text)
        warnings.extend(notes)
    settings = _settings(request, project, job)
    prepared = Prepared(
        request,
        project,
        job,
        project_id(project),
        run_id,
        payload_file,
        payload,
        user_vars,
        shell_commands,
        settings,
        warnings,
        tmp,
    )
    # Render what is rendered on the host once now, with a stand-in package id that cannot
    # change a path's shape, so a bad output path or image is a config error before anything.
    variables = _variables(prepared, package_id="0000-0000-0000-0000")
    masker = variables.masker()
    with masked_errors(masker):  # a secret in an output path or image name stays out of the message
        _render_outputs(prepared, variables)
        check_arithmetic(arithmetic, variables, where=f"job '{job.name}'")
    prepared.warnings = [masker.mask(warning) for warning in warnings]
    for warning in prepared.warnings:
        reporter.warning(warning)
    return prepared


@contextlib.contextmanager
def masked_errors(masker: Masker) -> Iterator[None]:
    """Secrets masked in the message of an AnnaRunError raised inside (they are printed and recorded)."""
    try:
        yield
    except AnnaRunError as exc:
        exc.message = masker.mask(exc.message)
        exc.args = (exc.message, *exc.args[1:])
        if exc.hint:
            exc.hint = masker.mask(exc.hint)
        raise


def _payload_file(ref: str) -> tuple[Path, Path | None]:
    if ref != "-":
        path = Path(ref)
        if not path.is_file():
            raise ConfigError(f"payload {ref}: no such file")
        return path, None
    tmp = Path(tempfile.mkdtemp(prefix="anna-run-payload-"))
    path = tmp / "payload.json"
    with open(path, "wb") as f:
        shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
    return path, tmp


def _env_files(paths: tuple[Path, ...]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in paths:
        merged.update(parse_env_file(path))
    return merged


def _builtins_probe(run_id: str) -> dict[str, str]:
    return builtin_variables(
        token="", run_id=run_id, job="", project_id="", package_id="", payload_id="x", timezone="UTC"
    )


def _settings(request: RunRequest, project: Project, job: Job) -> Settings:
    env = project.environment_for(job)
    network = request.network or job.network or "bridge"
    if network not in ("bridge", "none"):
        raise ConfigError(f"--network {network!r}: use 'bridge' or 'none'")
    pull = request.pull or env.pull or "if-not-present"
    if pull not in ("if-not-present", "always", "never"):
        raise ConfigError(f"--pull {pull!r}: use if-not-present, always or never")
    timeout = parse_duration(request.timeout, where="--timeout") if request.timeout else job.timeout
    memory = parse_memory(request.memory, where="--memory") if request.memory else job.resources.memory
    cpus = request.cpus if request.cpus is not None else job.resources.cpus
    if cpus is not None and cpus <= 0:
        raise ConfigError("--cpus must be a positive number")
    gpus: int | str | None = job.resources.gpus
    if request.gpus is not None:
        gpus = request.gpus if request.gpus == "all" else _int_option(request.gpus, "--gpus")
    image = request.image or env.image or ""
    build = None if request.image else env.build
    cache = () if request.no_cache else tuple(dict.fromkeys((*DEFAULT_CACHE, *job.cache)))
    return Settings(
        image,
        pull,
        timeout,
        cpus,
        memory,
        gpus,
        network,
        project.timezone_for(job),
        cache,
        build,
        env.build_args if build else (),
    )


def _int_option(value: str, option: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{option} {value!r}: a whole number or 'all'") from None
    if number < 0:
        raise ConfigError(f"{option} must not be negative")
    return number


def project_id(project: Project) -> str:
    """Stable for the project on this machine: derived from where its file lives."""
    digest = hashlib.sha256(str(project.root.resolve()).encode()).digest()
    return suuid_from_digest(digest)


def _variables(prepared: Prepared, package_id: str) -> Variables:
    payload = prepared.payload
    builtins = builtin_variables(
        token=prepared.request.token,
        run_id=prepared.run_id,
        job=prepared.job.name,
        project_id=prepared.project_id,
        package_id=package_id,
        payload_id=suuid_from_digest(payload.sha256) if payload else None,
        timezone=prepared.settings.timezone,
    )
    v = prepared.user_vars
    return resolve(
        project=v["project"],
        env_file=v["env_file"],
        cli=v["cli"],
        secrets=v["secrets"],
        payload=v["payload"],
        builtins=builtins,
    )


@dataclass(frozen=True)
class Rendered:
    image: str
    result: str | None
    artifacts: tuple[str, ...]
    credentials: tuple[str, str] | None


def _render_outputs(prepared: Prepared, variables: Variables) -> Rendered:
    values = variables.as_dict()
    job = prepared.job
    where = f"{prepared.project.file}: job '{job.name}'"
    result = None
    if job.output.result:
        result = render(job.output.result, values, where=f"{where} output.result")
        check_relative_path(result, what="output.result")
    artifacts = []
    for path in job.output.artifacts:
        rendered = render(path, values, where=f"{where} output.artifact")
        check_relative_path(rendered, what="output.artifact")
        artifacts.append(rendered)
    image = render(prepared.settings.image, values, where=f"{where} environment.image").strip()
    if prepared.settings.build is None:
        from .image import valid_reference

        if not valid_reference(image):
            hint = "e.g. python:3.11-slim or registry.example.com/team/image:tag (lower case)"
            raise ConfigError(f"{where}: image name {image!r} is not a valid image reference", hint=hint)
    for name in prepared.settings.build_args:
        if name not in values:
            raise ConfigError(f"{where}: build_args names {name!r}, which is not a variable")
    creds = prepared.project.environment_for(job).credentials
    credentials = None
    if creds is not None:
        credentials = (
            render(creds.username, values, where=f"{where} credentials.username"),
            render(creds.password, values, where=f"{where} credentials.password"),
        )
    return Rendered(image, result, tuple(artifacts), credentials)


# -- the run -------------------------------------------------------------------------------------
def run_job(request: RunRequest, reporter: Reporter) -> RunRecord:
    """Validate, then run. Returns the final record; raises ConfigError before anything starts,
    EngineError when the engine fails (the run is recorded first), Cancelled on Ctrl-C."""
    prepared = prepare(request, reporter)
    try:
        return execute(prepared, reporter)
    finally:
        prepared.cleanup()


def execute(prepared: Prepared, reporter: Reporter, *, store: Store | None = None) -> RunRecord:
    """Run a prepared request. ``store``: where it is recorded (default: the request's store);
    a runner host passes one that lets only the holder of the run's lease write it."""
    from .engine import connect

    api = connect()
    store = store if store is not None else open_store(prepared.request.store, reporter=reporter)
    record: RunRecord | None = None
    masker = _variables(prepared, package_id="0000-0000-0000-0000").masker()
    try:
        with masked_errors(masker):  # e.g. a pull error naming an image built from a secret
            package = _package(prepared, store, reporter)
            store.publish_package(package.path, package.sha256)  # S3: up once, unless already there
            variables = _variables(prepared, suuid_from_digest(package.sha256))
            rendered = _render_outputs(prepared, variables)
            payload_ref = _store_payload(prepared, store)
            image = _image(prepared, api, store, rendered, variables, reporter)
            record = _first_record(prepared, store, variables, package, payload_ref, image, rendered)
            store.save_record(record)
            record = _in_sandbox(prepared, api, store, record, variables, package, rendered, reporter)
    except KeyboardInterrupt:
        if record is not None:
            record = _finish(store, record, status="cancelled", reason="cancelled by the user")
        raise Cancelled("cancelled") from None
    except Cancelled as exc:
        if record is not None and not exc.recorded:  # else the sandbox recorded how far it got
            _finish(store, record, status="cancelled", reason="cancelled by the user")
        raise
    except EngineError as exc:
        if record is not None:
            _finish(store, record, status="failed", reason=f"engine: {exc.message}")
        raise
    except Exception as exc:  # a store fault or a bug: the record still says how the run ended
        if record is not None:
            message = exc.message if isinstance(exc, AnnaRunError) else f"internal error: {type(exc).__name__}: {exc}"
            _finish(store, record, status="failed", reason=message)
        raise
    return record


def _image(prepared: Prepared, api, store: Store, rendered: Rendered, variables: Variables, reporter: Reporter):
    """The image the job runs in: built from the project, or present per the pull policy."""
    from .image import build_image, ensure_image, ensure_pinned

    settings = prepared.settings
    if prepared.pin is not None and prepared.pin.image is not None:
        return ensure_pinned(api, prepared.pin.image, reporter=reporter)
    if settings.build is not None:
        values = variables.as_dict()
        return build_image(
            api,
            prepared.project.root,
            settings.build,
            build_args={name: values[name] for name in settings.build_args},
            labels={"io.anna-run.project": prepared.project_id},
            reporter=reporter,
            mask=variables.masker().mask,
            cache_file=store.cache_dir() / f"build-{prepared.project_id}.json",
        )
    credentials = None
    if rendered.credentials:
        from .project import Credentials

        credentials = Credentials(*rendered.credentials)
    return ensure_image(api, rendered.image, pull=settings.pull, reporter=reporter, credentials=credentials)


def _package(prepared: Prepared, store: Store, reporter: Reporter) -> Package:
    from .package import build_package

    if prepared.pin is not None:
        return prepared.pin.package
    reporter.step_started("package", str(prepared.project.root))
    root = prepared.project.root
    store_root = store.local_root  # the store's folder, or an S3 store's spool
    package = build_package(
        root,
        store.packages_dir(),
        cache_file=store.cache_dir() / f"stat-{prepared.project_id}.json",
        exclude=[store_root],
        progress=lambda done, total: reporter.bytes_done("package", done, total),
    )
    detail = f"{package.files} files, {package.size / 1e6:.1f} MB{' (unchanged)' if package.reused else ''}"
    reporter.step_done("package", detail)
    for warning in package.warnings:
        reporter.warning(warning)
    return package


def _store_payload(prepared: Prepared, store: Store) -> BlobRef | None:
    info = prepared.payload
    if info is None or prepared.payload_file is None:
        return None
    store.add_payload(prepared.payload_file, info.sha256)
    return BlobRef(id=suuid_from_digest(info.sha256), sha256=info.sha256, size=info.size)


def _first_record(prepared, store, variables, package, payload_ref, image, rendered) -> RunRecord:
    job = prepared.job
    user_names = set().union(*prepared.user_vars.values())
    masked = {k: v for k, v in variables.masked().items() if k in user_names}
    settings = prepared.settings
    return RunRecord(
        id=prepared.run_id,
        job=job.name,
        project=prepared.project_id,
        project_root=prepared.pin.project_root if prepared.pin else str(prepared.project.root),
        rerun_of=prepared.pin.rerun_of if prepared.pin else None,
        status="running",
        commands=tuple(CommandResult(command=c, exit_code=None) for c in _echoes(job, variables)),
        created_at=now_iso(),
        started_at=now_iso(),
        image=image,
        package=BlobRef(id=suuid_from_digest(package.sha256), sha256=package.sha256, size=package.size),
        payload=payload_ref,
        variables=masked,
        secret_names=tuple(sorted(variables.secret_names & user_names)),
        name=prepared.request.name,
        description=prepared.request.description,
        host=socket.gethostname(),
        runner_version=__version__,
        runner=runner_identity(),
        warnings=tuple(prepared.warnings),
        settings={
            "image": variables.masker().mask(rendered.image),
            "pull": settings.pull,
            "timeout_s": settings.timeout,
            "cpus": settings.cpus,
            "memory": settings.memory,
            "gpus": settings.gpus,
            "network": settings.network,
            "timezone": settings.timezone,
            "cache": list(settings.cache),
            "build": settings.build,
            "result": variables.masker().mask(rendered.result) if rendered.result else None,
            "artifacts": [variables.masker().mask(path) for path in rendered.artifacts],
        },
    )


def queued_record(prepared: Prepared) -> RunRecord:
    """The record of a run accepted but not started (``--detach``; runner hosts later)."""
    return RunRecord(
        id=prepared.run_id,
        job=prepared.job.name,
        project=prepared.project_id,
        project_root=str(prepared.project.root),
        status="queued",
        created_at=now_iso(),
        name=prepared.request.name,
        description=prepared.request.description,
        host=socket.gethostname(),
        runner_version=__version__,
    )


def _echoes(job: Job, variables: Variables) -> list[str]:
    masker = variables.masker()
    return [masker.mask(command) for command in job.commands]


def _in_sandbox(prepared, api, store, record, variables, package, rendered, reporter) -> RunRecord:
    from .collect import collect
    from .logsink import LogSink
    from .sandbox import LABEL, Sandbox, SandboxSpec
    from .script import STATUS_PATH, CommandStatus, build_script, entrypoint, parse_status

    settings = prepared.settings
    labels = {
        f"{LABEL}.run": record.id,
        f"{LABEL}.job": prepared.job.name,
        f"{LABEL}.project": prepared.project_id,
        f"{LABEL}.host": record.host,
        f"{LABEL}.runner": record.runner or "",
    }
    if prepared.request.keep:
        labels[f"{LABEL}.keep"] = "1"
    script = build_script(prepared.shell_commands, [c.command for c in record.commands])
    command, script_tar = entrypoint(script)
    spec = SandboxSpec(
        image=record.image.id or rendered.image,
        name=f"anna-run-{record.id}",
        environment=variables.as_dict(),
        labels=labels,
        entrypoint=command,
        network=settings.network,
        cpus=settings.cpus,
        memory=settings.memory,
        gpus=settings.gpus,
        payload=prepared.payload is not None,
        volumes=_cache_volumes(api, prepared),
    )
    run_dir = store.run_dir(record.id)
    sink = LogSink(run_dir, variables.masker, reporter)
    started = time.monotonic()
    try:
        with Sandbox(api, spec, keep=prepared.request.keep) as sandbox:
            record = record.evolve(container=sandbox.id)
            reporter.step_started("copy", f"code {package.size / 1e6:.1f} MB into the container")
            sandbox.put_archive("/code", _file_chunks(package.path, "package", package.size, reporter))
            if script_tar is not None:
                sandbox.put_archive("/", script_tar)
            if prepared.payload_file is not None:
                sandbox.put_payload(_single_file_tar(prepared.payload_file, "payload.json"))
            reporter.step_done("copy")
            reporter.step_started("run", f"{prepared.job.name} in {variables.masker().mask(rendered.image)}")
            outcome = sandbox.run(sink.write, timeout=settings.timeout, grace=grace_s())
            sink.close()
            sink.check()  # a store that filled up or went read-only: a store error, outputs not kept
            status_text = None
            if not _engine_says_all(prepared.job, outcome):
                status_text = sandbox.read_file(STATUS_PATH).decode(errors="replace")
            collected = None
            if not outcome.cancelled:
                reporter.step_started("collect", "result and artifacts")
                collected = collect(sandbox, run_dir, result=rendered.result, artifacts=rendered.artifacts)
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
    if outcome.cancelled:
        _finish(
            store,
            record,
            status="cancelled",
            reason="cancelled by the user",
            commands=commands,
            exit_code=outcome.exit_code,
            duration=time.monotonic() - started,
            sink=sink,
            collected=collected,
        )
        cancelled = Cancelled("cancelled; the container was stopped and removed")
        cancelled.recorded = True
        raise cancelled
    status, reason, exit_code = _verdict(outcome, collected, rendered, settings)
    # What the record says about paths is masked too ("result missing: out/<secret>.json").
    masker = variables.masker()
    reason = masker.mask(reason) if reason else reason
    collected.refused = [masker.mask(text) for text in collected.refused]
    collected.missing = [masker.mask(text) for text in collected.missing]
    return _finish(
        store,
        record,
        status=status,
        reason=reason,
        commands=commands,
        exit_code=exit_code,
        duration=time.monotonic() - started,
        sink=sink,
        collected=collected,
    )


def _engine_says_all(job: Job, outcome) -> bool:
    """A one-command job whose container ended by itself with 0: the command ran and exited 0,
    and the engine's run time is its duration, so the status file (one archive call, ~35 ms)
    has nothing to add."""
    return len(job.commands) == 1 and outcome.exit_code == 0 and not (outcome.timed_out or outcome.cancelled)


def _verdict(outcome, collected, rendered, settings) -> tuple[str, str | None, int | None]:
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


def _finish(store: Store, record: RunRecord, *, status: str, reason: str | None, **extra) -> RunRecord:
    sink = extra.pop("sink", None)
    collected = extra.pop("collected", None)
    duration = extra.pop("duration", None)
    changes = {"status": status, "reason": reason, "finished_at": now_iso(), "runner": None}
    if "commands" in extra:
        changes["commands"] = extra["commands"]
    if "exit_code" in extra:
        changes["exit_code"] = extra["exit_code"]
    if duration is not None:
        changes["duration_s"] = round(duration, 3)
    if sink is not None:
        changes["log_truncated"] = sink.truncated
    if collected is not None:
        changes["result"] = collected.result
        changes["artifacts"] = tuple(collected.artifacts)
        changes["refused"] = tuple(collected.refused)
        changes["warnings"] = record.warnings + tuple(f"not found: {p}" for p in collected.missing)
    final = record.evolve(**changes)
    try:
        final = store.save_record(final) or final  # as stored: S3 may say upload "pending"
    except AnnaRunError as exc:
        # A full store: stdout.log and stderr.log repeat log.txt; without them the record fits,
        # and says how the run ended instead of staying "running".
        full = isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOSPC
        if full and _drop_log_copies(store.run_dir(record.id)):
            with contextlib.suppress(AnnaRunError):
                final = store.save_record(final) or final
    return final


def _drop_log_copies(run_dir: Path) -> bool:
    dropped = False
    for name in ("stdout.log", "stderr.log"):
        with contextlib.suppress(OSError):
            (run_dir / name).unlink()
            dropped = True
    return dropped


def _cache_volumes(api, prepared: Prepared) -> tuple[tuple[str, str], ...]:
    """One named volume per cache path of the project, kept between its runs (labelled, so
    `gc` leaves them alone and `images prune` could find them)."""
    volumes = []
    for path in prepared.settings.cache:
        tag = hashlib.sha256(path.encode()).hexdigest()[:12]
        name = f"anna-run-cache-{prepared.project_id}-{tag}"
        labels = {"io.anna-run.cache": path, "io.anna-run.project": prepared.project_id}
        try:
            api.create_volume(name, labels=labels)
        except Exception as exc:
            from .engine import _short

            raise EngineError(f"cannot create the cache volume for {path}: {_short(exc)}") from None
        volumes.append((name, path))
    return tuple(volumes)


def _file_chunks(path: Path, step: str, total: int, reporter: Reporter) -> Iterator[bytes]:
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            done += len(chunk)
            reporter.bytes_done(step, done, total)
            yield chunk


def _single_file_tar(path: Path, name: str) -> Iterator[bytes]:
    """A tar of one read-only file, streamed: header, content, padding, end blocks."""
    size = path.stat().st_size
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o444, 946684800
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk
    yield b"\0" * ((512 - size % 512) % 512) + b"\0" * 1024


def exit_code_for(record: RunRecord) -> int:
    """SPEC §3.11: the job's own code, 0 on success, 124 timeout, 130 cancelled."""
    if record.status == "succeeded":
        return 0
    if record.status == "timeout":
        return 124
    if record.status == "cancelled":
        return 130
    if record.reason and record.reason.startswith("engine:"):
        return 125
    if record.exit_code:
        return record.exit_code
    return 1


__all__ = ["PAYLOAD_PATH", "RunRequest", "exit_code_for", "prepare", "run_job"]
