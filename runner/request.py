"""What a run is asked to be, and the one place that turns it into a prepared run.

``prepare(request, reporter, source)`` runs every check of a run, in one order, before anything
is created: the project and the job, the payload, the variable sources, the commands (unknown
``{{ }}``, the ``$(( ))`` guard), the settings, the output paths, the image reference and the
build args. It is the only constructor of :class:`PreparedRun`, and every way of starting a run
goes through it: ``run`` and ``run --detach`` and ``submit`` with the working tree
(:class:`FromTree`), ``rerun`` and a runner host's run with a package already in the store
(:class:`FromStore`). The variables and the masker are resolved here, once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import AnnaRunError, Cancelled, ConfigError
from .ids import new_suuid, suuid_from_digest
from .payload import PayloadInfo, read_payload
from .project import USER_SPEC, Job, Project, check_relative_path, find_project_file, load_project
from .units import parse_duration, parse_memory
from .variables import (
    Masker,
    Variables,
    builtin_variables,
    check_arithmetic,
    parse_assignments,
    parse_env_file,
    render,
    render_command,
    resolve,
)

if TYPE_CHECKING:
    from .package import Package
    from .record import ImageInfo
    from .report import Reporter

# The pip and XDG caches of a root user: a second `pip install` of the same requirements is
# served from here instead of downloading or building again.
DEFAULT_CACHE = ("/root/.cache",)

# The package id the checks render with before the package exists: same shape as a real one,
# so a path or image name that is bad with it is bad with the real one.
STAND_IN_PACKAGE_ID = "0000-0000-0000-0000"

# The variable sources a user gives, lowest precedence first (SPEC §2).
SOURCES = ("project", "env_file", "cli", "secrets", "payload")


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
    user: str | None = None  # uid[:gid] or name[:group]; None: the job's user:, else the image's
    keep: bool = False
    name: str | None = None
    description: str | None = None
    token: str = ""
    run_id: str | None = None  # set when the id must be known before the run (--detach, submit)
    no_cache: bool = False  # no dependency cache volumes
    input_runs: tuple[str, ...] = ()  # --input-run: earlier runs whose outputs the job reads
    trigger: str | None = None  # what started the run, kept in the record: cli | submit | rerun | schedule

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (paths as text, tuples as lists); :meth:`from_json` reads it back."""
        data = asdict(self)
        data["project"] = str(self.project) if self.project is not None else None
        data["env_files"] = [str(path) for path in self.env_files]
        for name in ("variables", "secrets", "input_runs"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRequest:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["project"] = Path(values["project"]) if values.get("project") else None
        values["env_files"] = tuple(Path(p) for p in values.get("env_files") or ())
        values["variables"] = tuple(values.get("variables") or ())
        values["secrets"] = tuple(values.get("secrets") or ())
        values["input_runs"] = tuple(values.get("input_runs") or ())
        return cls(**values)

    def dumps(self) -> str:
        return json.dumps(self.to_json())


@dataclass(frozen=True)
class Settings:
    """The run's settings, precedence applied (options over the job over the project's)."""

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
    user: str | None = None  # as given (--user, then the job's user:); None: the image's own USER


@dataclass(frozen=True)
class FromTree:
    """The code is the working tree the request names (or the one around the current folder)."""


@dataclass(frozen=True)
class FromStore:
    """The code is a package already in the store: a rerun, or a runner host's run of a
    submitted job. The package is extracted far enough to read its askanna.yml."""

    project_file: Path  # the package's askanna.yml, extracted
    package: Package
    project_id: str
    project_root: str  # where the project lived when it was first run or submitted
    payload_file: Path | None = None
    env_values: dict[str, str] = field(default_factory=dict)  # the --env-file values, read at submit
    rerun_of: str | None = None
    image: ImageInfo | None = None  # a rerun: the original image, by id or digest


@dataclass(frozen=True)
class Rendered:
    """What is rendered on the host: the output paths, the image name, the registry login."""

    image: str
    result: str | None
    artifacts: tuple[str, ...]
    credentials: tuple[str, str] | None


@dataclass(frozen=True)
class PreparedRun:
    """A run every check has passed; nothing is created yet. ``variables`` carry a stand-in
    package id until :meth:`variables_for` gives the real one."""

    request: RunRequest
    project: Project
    job: Job
    project_id: str
    project_root: str
    run_id: str
    payload_file: Path | None
    payload: PayloadInfo | None
    sources: dict[str, dict[str, str]]  # the user's variables by source (SOURCES)
    shell_commands: tuple[str, ...]
    settings: Settings
    variables: Variables
    masker: Masker
    warnings: tuple[str, ...]  # masked
    source: FromTree | FromStore
    input_runs: tuple[str, ...] = ()  # the job's input.runs, rendered, then --input-run
    temp_dir: Path | None = None  # a copy of a payload read from stdin, removed by cleanup()

    @property
    def user_names(self) -> set[str]:
        return set().union(*self.sources.values())

    @property
    def pinned_package(self) -> Package | None:
        return self.source.package if isinstance(self.source, FromStore) else None

    def variables_for(self, package_sha256: str) -> Variables:
        """The run's variables with the real package id."""
        package_id = suuid_from_digest(package_sha256)
        return resolve(**self.sources, builtins=self._builtins(package_id))

    def rendered(self, variables: Variables) -> Rendered:
        return render_outputs(self, variables)

    def cleanup(self) -> None:
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _builtins(self, package_id: str) -> dict[str, str]:
        return _builtins(self.request, self.run_id, self.job, self.project_id, self.payload, self.settings, package_id)


def prepare(request: RunRequest, reporter: Reporter, source: FromTree | FromStore | None = None) -> PreparedRun:
    """Check everything about ``request`` and return the prepared run; create nothing.

    Raises ConfigError (exit 2) for anything wrong with the input, with secrets masked in its
    message; Cancelled when interrupted. The warnings found go to ``reporter``, masked.
    """
    source = source or FromTree()
    temp_dir = None
    try:
        if isinstance(source, FromStore):
            project = load_project(source.project_file)
            project_id, project_root = source.project_id, source.project_root
            payload_file = source.payload_file
        else:
            project = load_project(find_project_file(request.project))
            project_id, project_root = project_id_of(project), str(project.root)
            payload_file, temp_dir = _payload_file(request.payload)
        prepared = _checked(request, project, project_id, project_root, payload_file, source, temp_dir)
    except KeyboardInterrupt:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
        raise Cancelled("cancelled") from None
    except BaseException:
        if temp_dir is not None:  # the copy of a payload read from stdin: nothing may stay behind
            shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    for warning in prepared.warnings:
        reporter.warning(warning)
    return prepared


def _checked(
    request: RunRequest,
    project: Project,
    project_id: str,
    project_root: str,
    payload_file: Path | None,
    source: FromTree | FromStore,
    temp_dir: Path | None,
) -> PreparedRun:
    job = project.job(request.job)
    warnings = list(project.warnings)
    payload = None
    if payload_file is not None:
        payload = read_payload(payload_file)
        warnings.extend(payload.warnings)
    sources = {
        "project": dict(project.variables),
        "env_file": dict(source.env_values) if isinstance(source, FromStore) else _env_files(request.env_files),
        "cli": parse_assignments(request.variables, option="--var"),
        "secrets": parse_assignments(request.secrets, option="--secret"),
        "payload": dict(payload.variables) if payload else {},
    }
    run_id = request.run_id or new_suuid()
    settings = settings_for(request, project, job)
    builtins = _builtins(request, run_id, job, project_id, payload, settings, STAND_IN_PACKAGE_ID)
    variables = resolve(**sources, builtins=builtins)
    masker = variables.masker()
    with masked_errors(masker):  # a secret in an output path or image name stays out of the message
        known = set(variables.as_dict())
        shell_commands = []
        arithmetic: set[str] = set()
        for i, command in enumerate(job.commands):
            where = f"job '{job.name}' command {i + 1}"
            text, notes = render_command(command, known, where=where, arithmetic=arithmetic)
            shell_commands.append(text)
            warnings.extend(notes)
        prepared = PreparedRun(
            request=request,
            project=project,
            job=job,
            project_id=project_id,
            project_root=project_root,
            run_id=run_id,
            payload_file=payload_file,
            payload=payload,
            sources=sources,
            shell_commands=tuple(shell_commands),
            settings=settings,
            variables=variables,
            masker=masker,
            warnings=tuple(masker.mask(warning) for warning in warnings),
            source=source,
            temp_dir=temp_dir,
            input_runs=_input_runs(request, job, variables),
        )
        render_outputs(prepared, variables)
        check_arithmetic(arithmetic, variables, where=f"job '{job.name}'")
    return prepared


def _input_runs(request: RunRequest, job: Job, variables: Variables) -> tuple[str, ...]:
    from .inputs import check_refs

    values = variables.as_dict()
    where = f"job '{job.name}' input.runs"
    rendered = [render(ref, values, where=where).strip() for ref in job.input_runs]
    return check_refs([ref for ref in rendered if ref] + list(request.input_runs), where=where)


def _builtins(
    request: RunRequest,
    run_id: str,
    job: Job,
    project_id: str,
    payload: PayloadInfo | None,
    settings: Settings,
    package_id: str,
) -> dict[str, str]:
    return builtin_variables(
        token=request.token,
        run_id=run_id,
        job=job.name,
        project_id=project_id,
        package_id=package_id,
        payload_id=suuid_from_digest(payload.sha256) if payload else None,
        timezone=settings.timezone,
    )


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


def _payload_file(ref: str | None) -> tuple[Path | None, Path | None]:
    """The payload's file and, for one read from stdin, the temporary folder holding its copy."""
    if ref is None:
        return None, None
    if ref != "-":
        path = Path(ref)
        if not path.is_file():
            raise ConfigError(f"payload {ref}: no such file")
        return path, None
    tmp = Path(tempfile.mkdtemp(prefix="anna-run-payload-"))
    path = tmp / "payload.json"
    try:
        with open(path, "wb") as f:
            shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path, tmp


def _env_files(paths: tuple[Path, ...]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in paths:
        merged.update(parse_env_file(path))
    return merged


def settings_for(request: RunRequest, project: Project, job: Job) -> Settings:
    """The settings of a run: each option over the job's value over the project's."""
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
    user = request.user.strip() if request.user is not None else job.user
    if user is not None and USER_SPEC.fullmatch(user) is None:
        raise ConfigError(f"--user {user!r}: give uid[:gid] or name[:group], e.g. --user 1000:1000")
    image = request.image or env.image or ""
    build = None if request.image else env.build
    cache = () if request.no_cache else tuple(dict.fromkeys((*DEFAULT_CACHE, *job.cache)))
    return Settings(
        image=image,
        pull=pull,
        timeout=timeout,
        cpus=cpus,
        memory=memory,
        gpus=gpus,
        network=network,
        timezone=project.timezone_for(job),
        cache=cache,
        build=build,
        build_args=env.build_args if build else (),
        user=user,
    )


def _int_option(value: str, option: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{option} {value!r}: a whole number or 'all'") from None
    if number < 0:
        raise ConfigError(f"{option} must not be negative")
    return number


def project_id_of(project: Project) -> str:
    """Stable for the project on this machine: derived from where its file lives."""
    digest = hashlib.sha256(str(project.root.resolve()).encode()).digest()
    return suuid_from_digest(digest)


def render_outputs(prepared: PreparedRun, variables: Variables) -> Rendered:
    """The output paths, the image name and the registry login, rendered and checked."""
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
    pinned = isinstance(prepared.source, FromStore) and prepared.source.image is not None
    if prepared.settings.build is None and not pinned:
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


def with_run_id(request: RunRequest) -> RunRequest:
    """The request with its run id fixed now (for a run whose id is printed before it starts)."""
    return request if request.run_id else replace(request, run_id=new_suuid())


__all__ = [
    "FromStore",
    "FromTree",
    "PreparedRun",
    "Rendered",
    "RunRequest",
    "Settings",
    "masked_errors",
    "prepare",
    "render_outputs",
    "settings_for",
]
