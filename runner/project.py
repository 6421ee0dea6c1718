"""askanna.yml → a validated, typed `Project` of `Job`s.

The file is only *composed* into a YAML node tree (nothing is constructed from tags), by the
hardened loader of :mod:`.yamlsafe`. The tree is then walked node by node so that every error
names the file, line and column of the value at fault.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import ConfigError
from .units import duration_seconds, memory_bytes
from .yamlsafe import compose_file

DEFAULT_IMAGE = "python:3.11-slim"
RESERVED_NAMES: frozenset[str] = frozenset(
    {"push-target", "environment", "cluster", "image", "worker", "variables"}  # the seed
    | {"askanna", "job", "project", "notifications", "timezone"}  # AskAnna's code
)
PULL_POLICIES = ("if-not-present", "always", "never")
PROJECT_FILE_NAMES = ("askanna.yml", "askanna.yaml")
JOB_KEYS = (
    "job", "output", "environment", "timeout", "resources", "network",
    "cache", "timezone", "schedule", "notifications", "description", "user", "input",
)  # fmt: skip

_T = "tag:yaml.org,2002:"
# uid[:gid] or name[:group], as `docker run --user` takes them (names as useradd allows).
USER_SPEC = re.compile(r"(?:\d{1,10}|[a-z_][a-z0-9_.-]{0,31}\$?)(?::(?:\d{1,10}|[a-z_][a-z0-9_.-]{0,31}))?")
_V = TypeVar("_V")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TEMPLATE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}|\{\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\}\}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)*\.[^@\s.]{2,}")
_TZ_SHAPE = re.compile(r"UTC|[A-Za-z_]+(?:/[A-Za-z0-9_+\-]+)+")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class Environment:
    image: str | None = None
    pull: str | None = None
    credentials: Credentials | None = None
    build: str | None = None
    build_args: tuple[str, ...] = ()  # variable names passed to the build as --build-arg


@dataclass(frozen=True)
class Output:
    result: str | None = None
    artifacts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resources:
    cpus: float | None = None
    memory: int | None = None  # bytes
    gpus: int | str | None = None  # an int >= 0, or "all"


@dataclass(frozen=True)
class Notifications:
    all: tuple[str, ...] = ()  # email addresses, or ${VAR} / {{ VAR }} templates
    error: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    name: str
    commands: tuple[str, ...]
    output: Output = Output()
    environment: Environment | None = None  # the job's own; replaces the project's
    timeout: float | None = None  # seconds
    resources: Resources = Resources()
    network: str | None = None  # "bridge" | "none"; None means the default (bridge)
    cache: tuple[str, ...] = ()  # absolute container paths
    timezone: str | None = None
    schedule: tuple[str, ...] = ()  # "m h d M w" cron strings, or aliases such as "@daily"
    notifications: Notifications | None = None
    user: str | None = None  # uid[:gid] or name[:group]; None: the image's own USER
    input_runs: tuple[str, ...] = ()  # earlier runs whose outputs the job reads (ids, may be templated)
    line: int = 0  # 1-based line of the job's key in the file


@dataclass(frozen=True)
class Project:
    root: Path  # the (absolute) directory holding the file
    file: Path  # as given
    jobs: tuple[Job, ...]  # in file order
    variables: tuple[tuple[str, str], ...] = ()
    environment: Environment | None = None
    timezone: str | None = None
    notifications: Notifications | None = None
    warnings: tuple[str, ...] = ()  # each prefixed "file:line:col: "
    # Top-level keys that are not jobs (a string, a number, empty), with "file:line:col: why",
    # so asking to run one says what it is instead of "unknown job".
    not_jobs: tuple[tuple[str, str], ...] = ()

    def job_names(self) -> tuple[str, ...]:
        return tuple(job.name for job in self.jobs)

    def job(self, name: str) -> Job:
        """The job called `name`; ConfigError (listing the jobs there are) when none is."""
        for job in self.jobs:
            if job.name == name:
                return job
        names = ", ".join(self.job_names()) or "(none)"
        for other, why in self.not_jobs:
            if other == name:
                raise ConfigError(why, hint=f"{_JOB_HINT}; jobs in this project: {names}")
        if name in RESERVED_NAMES:
            hint = f"jobs in this project: {names}"
            raise ConfigError(f"{name!r} is a reserved name in {self.file}, not a job", hint=hint)
        raise ConfigError(f"unknown job {name!r} in {self.file}; jobs: {names}", hint=f"jobs in this project: {names}")

    def environment_for(self, job: Job) -> Environment:
        """The job's environment, else the project's, else the default; never without an image
        unless it is built (a built image must not be tagged as the default image)."""
        env = job.environment or self.environment or default_environment()
        if env.image is None and env.build is None:
            env = replace(env, image=default_environment().image)
        return env

    def timezone_for(self, job: Job) -> str:
        return job.timezone or self.timezone or "UTC"


def default_environment() -> Environment:
    """The environment of a project that declares none (read at call time, so tests and
    runner hosts can override the image through ANNA_RUN_DEFAULT_IMAGE)."""
    return Environment(image=os.environ.get("ANNA_RUN_DEFAULT_IMAGE") or DEFAULT_IMAGE)


def find_project_file(project: Path | None = None, cwd: Path | None = None) -> Path:
    """The project file: in or at `project` when given (--project), else the nearest
    askanna.yml/askanna.yaml in `cwd` (default: the current directory) or a parent of it."""
    base = cwd if cwd is not None else Path.cwd()
    if project is not None:
        path = project if project.is_absolute() else base / project
        if path.is_file():
            return path
        if not path.is_dir():
            raise ConfigError(f"--project {project}: no such file or directory")
        found = _project_file_in(path)
        if found is None:
            raise ConfigError(
                f"no askanna.yml or askanna.yaml in {path}", hint="create askanna.yml or pass --project DIR"
            )
        return found
    start = base.absolute()
    for directory in (start, *start.parents):
        found = _project_file_in(directory)
        if found is not None:
            return found
    raise ConfigError(
        f"no askanna.yml found in {start} or any directory above it",
        hint="create askanna.yml or pass --project DIR",
    )


def _project_file_in(directory: Path) -> Path | None:
    for name in PROJECT_FILE_NAMES:  # .yml first: when both exist, it wins
        if (directory / name).is_file():
            return directory / name
    return None


def load_project(file: Path) -> Project:
    """Read, compose and validate `file`; every problem is a ConfigError naming file:line:col."""
    name = str(file)
    root = compose_file(file)
    if root is None or (isinstance(root, ScalarNode) and root.tag == _T + "null"):
        raise ConfigError("the file is empty; it needs at least one job", file=name, hint=_JOB_HINT)
    return _Walker(name).project(root, file)


_JOB_HINT = "a job is a name holding a mapping with a `job:` list of commands"


# --- values shared with the command line ----------------------------------------------------


def check_relative_path(
    path: str, *, what: str, file: str | None = None, line: int | None = None, column: int | None = None
) -> None:
    """Refuse a path that could point outside the project once joined to it. Template parts
    ({{ X }}, ${X}) pass as written: their values are checked again where they are used."""
    problem = None
    if not path.strip():
        problem = "is empty"
    elif any(c in path for c in "\x00\n\r"):
        problem = "contains a NUL or newline character"
    elif path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", path):
        problem = "is absolute; use a path relative to the project directory"
    elif ".." in re.split(r"[/\\]", path):
        problem = "contains '..'; use a path inside the project directory"
    if problem:
        raise ConfigError(f"{what} {path!r} {problem}", file=file, line=line, column=column)


# --- walking --------------------------------------------------------------------------------


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _T + "null"


def _is_str(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _T + "str"


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    kinds = {"null": "empty", "bool": "a boolean", "int": "a number", "float": "a number", "str": "a string"}
    kinds |= {"timestamp": "a date", "binary": "binary data"}
    return kinds.get(node.tag.removeprefix(_T), f"a value tagged {node.tag}")


_Pairs = list[tuple[str, Node, Node]]


class _Walker:
    """Turns the node tree into typed values, collecting warnings and raising located errors."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.warnings: list[str] = []
        self.not_jobs: list[tuple[str, str]] = []
        self._constructor = SafeConstructor()

    def error(self, message: str, node: Node, hint: str | None = None) -> ConfigError:
        mark = node.start_mark
        return ConfigError(message, file=self.file, line=mark.line + 1, column=mark.column + 1, hint=hint)

    def warn(self, message: str, node: Node) -> None:
        mark = node.start_mark
        self.warnings.append(f"{self.file}:{mark.line + 1}:{mark.column + 1}: {message}")

    # -- generic shapes

    def string(self, node: Node, what: str) -> str:
        if _is_str(node):
            return node.value
        hint = "put it in quotes to make it a string" if isinstance(node, ScalarNode) else None
        raise self.error(f"{what} must be a string, not {_kind(node)}", node, hint)

    def strings(self, node: Node, what: str) -> list[tuple[str, Node]]:
        """A string or a list of strings, each with its node."""
        items = node.value if isinstance(node, SequenceNode) else [node]
        return [(self.string(item, what), item) for item in items]

    def scalar(self, node: Node, what: str) -> Any:
        if not isinstance(node, ScalarNode):
            raise self.error(f"{what} must be a single value, not {_kind(node)}", node)
        try:
            return self._constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            raise self.error(f"{what}: cannot read this value ({exc})", node) from None

    def mapping(self, node: Node, what: str, seen: frozenset[int] = frozenset()) -> _Pairs:
        """(key, key node, value node) in order, with merge keys (<<: *defaults) applied."""
        if not isinstance(node, MappingNode):
            raise self.error(f"{what} must be a mapping, not {_kind(node)}", node)
        if id(node) in seen:  # `&a {<<: *a}` would otherwise merge forever
            raise self.error("a merge key (<<) refers to the mapping that contains it", node)
        merged: dict[str, tuple[Node, Node]] = {}
        own: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                raise self.error(f"keys must be plain values, not {_kind(key)}", key)
            if key.tag != _T + "merge":
                own[key.value] = (key, value)
                continue
            for source in value.value if isinstance(value, SequenceNode) else [value]:
                for name, k, v in self.mapping(source, "a merge key (<<) value", seen | {id(node)}):
                    merged.setdefault(name, (k, v))  # the first source wins, as YAML says
        pairs = {name: kv for name, kv in merged.items() if name not in own} | own
        return [(name, key, value) for name, (key, value) in pairs.items()]

    def fields(self, node: Node, what: str, known: tuple[str, ...]) -> dict[str, Node]:
        """A mapping's non-null values by key, warning about keys not in `known`."""
        found: dict[str, Node] = {}
        for name, key, value in self.mapping(node, what):
            if name not in known:
                self.warn(f"unknown key {name!r} in {what} (ignored); known: {', '.join(known)}", key)
            elif not _is_null(value):
                found[name] = value
        return found

    def path(self, node: Node, what: str) -> str:
        path = self.string(node, what)
        mark = node.start_mark
        check_relative_path(path, what=what, file=self.file, line=mark.line + 1, column=mark.column + 1)
        return path

    # -- the file

    def project(self, root: Node, file: Path) -> Project:
        if not isinstance(root, MappingNode):
            raise self.error(f"the top level must be a mapping of job names to jobs, not {_kind(root)}", root)
        jobs: list[Job] = []
        variables: tuple[tuple[str, str], ...] = ()
        environment = timezone = notifications = None
        for name, key, value in self.mapping(root, "the file"):
            if not _is_str(key):
                raise self.error(f"job names must be strings, not {_kind(key)} ({key.value!r})", key)
            if name not in RESERVED_NAMES:
                if job := self.top_level_job(name, key, value):
                    jobs.append(job)
                continue
            # only a `job:` *list* makes it a job: `variables: {job: x}` is a variable named job
            if isinstance(value, MappingNode) and any(
                n == "job" and isinstance(v, SequenceNode) for n, _, v in self.mapping(value, name)
            ):
                reserved = ", ".join(sorted(RESERVED_NAMES))
                raise self.error(f"{name!r} is a reserved name and cannot be a job name", key, f"reserved: {reserved}")
            if _is_null(value):
                continue
            if name == "environment":
                environment = self.environment(value, "environment")
            elif name == "variables":
                variables = self.variables(value)
            elif name == "timezone":
                timezone = self.timezone(value)
            elif name == "notifications":
                notifications = self.notifications(value, "notifications")
            # push-target, cluster, image, worker, askanna, job, project: AskAnna's, not ours
        if not jobs:
            self.warn("no jobs are defined", root)
        return Project(
            root=file.absolute().parent,
            file=file,
            jobs=tuple(jobs),
            variables=variables,
            environment=environment,
            timezone=timezone,
            notifications=notifications,
            warnings=tuple(self.warnings),
            not_jobs=tuple(self.not_jobs),
        )

    def top_level_job(self, name: str, key: Node, value: Node) -> Job | None:
        if isinstance(value, MappingNode):
            return self.job(name, key, value)
        if _is_null(value):
            self.warn(f"{name!r} is empty; not a job", key)
        elif isinstance(value, SequenceNode) and value.value:
            raise self.error(
                f"{name!r} is a list, but a job is a mapping with its commands under `job:`",
                key,
                hint="put the commands under `job:`",
            )
        # A scalar (e.g. a URL) is some tool's setting, not a job; said so only if it is run.
        mark = key.start_mark
        why = f"{name!r} is {_kind(value)}, not a job" if not _is_null(value) else f"{name!r} is empty, not a job"
        self.not_jobs.append((name, f"{self.file}:{mark.line + 1}:{mark.column + 1}: {why}"))
        return None

    def variables(self, node: Node) -> tuple[tuple[str, str], ...]:
        found = []
        for name, key, value in self.mapping(node, "variables"):
            if not _VAR_NAME.fullmatch(name):
                raise self.error(f"variable name {name!r} is not valid; use letters, digits and _ (not first)", key)
            found.append((name, self.variable_value(value, name)))
        return tuple(found)

    def variable_value(self, node: Node, name: str) -> str:
        tag = node.tag.removeprefix(_T) if isinstance(node, ScalarNode) else ""
        if tag == "null":
            return ""
        if tag == "bool":
            return "true" if self.scalar(node, name) else "false"
        if tag in ("str", "int", "float", "timestamp"):
            return node.value  # numbers and dates as written, not as Python prints them
        raise self.error(f"variable {name!r} must be a string, number or boolean, not {_kind(node)}", node)

    # -- a job

    def job(self, name: str, key: Node, node: MappingNode) -> Job:
        if not name.strip():
            raise self.error("a job name must not be empty", key)
        if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in name):
            raise self.error(f"job name {name!r} contains a control character", key)
        fields = self.fields(node, f"job {name!r}", JOB_KEYS)
        if "job" not in fields:
            hint = "add `job:` with the list of commands to run"
            raise self.error(f"job {name!r} has no commands (`job:` is missing or empty)", key, hint)
        get = fields.get
        return Job(
            name=name,
            commands=self.commands(fields["job"]),
            output=self.output(get("output")),
            environment=_maybe(get("environment"), lambda n: self.environment(n, "environment")),
            timeout=_maybe(get("timeout"), self.timeout),
            resources=self.resources(get("resources")),
            network=_maybe(get("network"), self.network),
            cache=tuple(self.cache_path(path, n) for path, n in self.strings(get("cache", _NONE), "cache")),
            timezone=_maybe(get("timezone"), self.timezone),
            schedule=self.schedule(get("schedule")),
            notifications=_maybe(get("notifications"), lambda n: self.notifications(n, "notifications")),
            user=_maybe(get("user"), self.user),
            input_runs=_maybe(get("input"), self.input_runs) or (),
            line=key.start_mark.line + 1,
        )

    def commands(self, node: Node) -> tuple[str, ...]:
        if not isinstance(node, SequenceNode):
            hint = "write each command as a list item under `job:`, e.g. `- python train.py`"
            raise self.error(f"`job:` must be a list of commands, not {_kind(node)}", node, hint)
        if not node.value:
            raise self.error("`job:` is an empty list; it needs at least one command", node)
        commands = []
        for item in node.value:
            if not _is_str(item):
                hint = "quote the command" + (
                    "; a ': ' inside it makes YAML read a mapping" if isinstance(item, MappingNode) else ""
                )
                raise self.error(f"command must be a string, not {_kind(item)}", item, hint)
            if not item.value.strip():
                raise self.error("command is empty", item)
            commands.append(item.value)
        return tuple(commands)

    def output(self, node: Node | None) -> Output:
        if node is None:
            return Output()
        fields = self.fields(node, "output", ("result", "artifact", "paths"))
        result = _maybe(fields.get("result"), lambda n: self.path(n, "output.result"))
        artifact = self.strings(fields.get("artifact", _NONE), "output.artifact")
        artifacts = [self.path(n, "output.artifact") for _, n in artifact]
        if "paths" in fields:  # AskAnna <= 0.5's artifact list, still in old projects
            self.warn("output.paths is deprecated; read as output.artifact (rename it to artifact)", fields["paths"])
            paths = [self.path(n, "output.paths") for _, n in self.strings(fields["paths"], "output.paths")]
            artifacts += [path for path in paths if path not in artifacts]
        return Output(result=result, artifacts=tuple(artifacts))

    def environment(self, node: Node, what: str) -> Environment:
        if _is_str(node):
            hint = f"write `{what}: {{image: {node.value}}}`"
            raise self.error(f"{what} must be a mapping, not a string", node, hint)
        fields = self.fields(node, what, ("image", "pull", "credentials", "build", "build_args"))
        image = pull = credentials = build = None
        build_args: list[str] = []
        if "image" in fields and not (image := self.string(fields["image"], "image")).strip():
            raise self.error("image must not be empty", fields["image"])
        if "pull" in fields and (pull := self.string(fields["pull"], "pull")) not in PULL_POLICIES:
            raise self.error(f"pull must be one of {', '.join(PULL_POLICIES)}, not {pull!r}", fields["pull"])
        if "credentials" in fields:
            credentials = self.credentials(fields["credentials"])
        if "build" in fields:
            build = self.path(fields["build"], "environment.build")
        for name, item in self.strings(fields.get("build_args", _NONE), "environment.build_args"):
            if not _VAR_NAME.fullmatch(name):
                raise self.error(f"build_args names variables; {name!r} is not a variable name", item)
            build_args.append(name)
        if build_args and build is None:
            raise self.error("build_args needs build: a folder or Dockerfile to build", fields["build_args"])
        return Environment(image=image, pull=pull, credentials=credentials, build=build, build_args=tuple(build_args))

    def credentials(self, node: Node) -> Credentials:
        fields = self.fields(node, "credentials", ("username", "password"))
        missing = [key for key in ("username", "password") if key not in fields]
        if missing:
            raise self.error(f"credentials need both username and password; missing {missing[0]}", node)
        return Credentials(self.string(fields["username"], "username"), self.string(fields["password"], "password"))

    def timeout(self, node: Node) -> float:
        if isinstance(node, ScalarNode) and node.tag == _T + "int" and ":" in node.value:
            # YAML 1.1 reads 1:30 as the base-60 number 90: almost never what was meant
            raise self.error(f"timeout {node.value} is ambiguous; write e.g. 1h30m or 90s", node)
        try:
            return duration_seconds(self.scalar(node, "timeout"))
        except ValueError as exc:
            raise self.error(f"timeout: {exc}", node) from None

    def resources(self, node: Node | None) -> Resources:
        if node is None:
            return Resources()
        fields = self.fields(node, "resources", ("cpus", "memory", "gpus"))
        cpus = memory = gpus = None
        if "cpus" in fields:
            cpus = self.scalar(fields["cpus"], "cpus")
            if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not 0 < cpus < math.inf:
                raise self.error(f"cpus must be a number above 0, not {fields['cpus'].value!r}", fields["cpus"])
            cpus = float(cpus)
        if "memory" in fields:
            try:
                memory = memory_bytes(self.scalar(fields["memory"], "memory"))
            except ValueError as exc:
                raise self.error(f"memory: {exc}", fields["memory"]) from None
        if "gpus" in fields:
            gpus = self.scalar(fields["gpus"], "gpus")
            valid_int = isinstance(gpus, int) and not isinstance(gpus, bool) and gpus >= 0
            if not valid_int and gpus != "all":
                raise self.error(f"gpus must be a whole number >= 0 or 'all', not {gpus!r}", fields["gpus"])
        return Resources(cpus=cpus, memory=memory, gpus=gpus)

    def network(self, node: Node) -> str:
        network = self.string(node, "network")
        if network == "host":
            hint = "host networking would give the job the host's network stack"
            raise self.error("network 'host' is not allowed; use bridge or none", node, hint)
        if network not in ("bridge", "none"):
            raise self.error(f"network must be bridge or none, not {network!r}", node)
        return network

    def input_runs(self, node: Node) -> tuple[str, ...]:
        fields = self.fields(node, "input", ("runs",))
        if "runs" not in fields:
            return ()
        return tuple(text.strip() for text, _ in self.strings(fields["runs"], "input.runs") if text.strip())

    def user(self, node: Node) -> str:
        text = node.value if isinstance(node, ScalarNode) else None
        if not isinstance(text, str) or USER_SPEC.fullmatch(text.strip()) is None:
            hint = 'a uid, uid:gid, a name or name:group, e.g. user: "1000:1000"'
            shown = _kind(node) if text is None else repr(text)
            raise self.error(f"user must be a user of the image, not {shown}", node, hint)
        return text.strip()

    def cache_path(self, path: str, node: Node) -> str:
        problem = None
        if any(c in path for c in "\x00\n\r"):
            problem = "contains a NUL or newline character"
        elif not path.startswith("/"):
            problem = "must be an absolute path in the container, such as /root/.cache/pip"
        elif not path.strip("/"):
            problem = "cannot be / itself"
        elif ".." in path.split("/"):
            problem = "must not contain '..'"
        if problem:
            raise self.error(f"cache path {path!r} {problem}", node)
        return path

    def timezone(self, node: Node) -> str:
        name = self.string(node, "timezone")
        try:
            zoneinfo.ZoneInfo(name)
            return name
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            pass
        # A host without a tz database cannot judge; the container has its own, so accept
        # anything shaped like an IANA name there.
        if _TZ_SHAPE.fullmatch(name) and not zoneinfo.available_timezones():
            return name
        raise self.error(f"unknown timezone {name!r}; use an IANA name such as Europe/Amsterdam or UTC", node)

    def dropped(self, exc: ConfigError) -> None:
        """An entry that cannot affect the run being started (a schedule, a notification) is,
        as in AskAnna, dropped with a warning rather than refusing the whole file."""
        self.warnings.append(f"{exc.message} (ignored)")

    def schedule(self, node: Node | None) -> tuple[str, ...]:
        if node is None:
            return ()
        entries = node.value if isinstance(node, SequenceNode) else [node]
        found = []
        for entry in entries:
            try:
                found.append(self.schedule_entry(entry))
            except ConfigError as exc:
                self.dropped(exc)
        return tuple(found)

    def schedule_entry(self, node: Node) -> str:
        if isinstance(node, MappingNode):
            fields = {}
            for name, key, value in self.mapping(node, "schedule entry"):
                if name not in _CRON_NAMES:
                    raise self.error(f"unknown key {name!r} in schedule; use {', '.join(_CRON_NAMES)}", key)
                raw = self.scalar(value, name)
                if isinstance(raw, bool) or not isinstance(raw, (int, str)):
                    raise self.error(f"schedule {name} must be a number or a string, not {_kind(value)}", value)
                fields[name] = "".join(str(raw).split())  # "1, 2" is one field, not two
            # AskAnna's rule: a missing minute or hour is 0 ({hour: 5} is 05:00, not 05:00-05:59)
            defaults = {"minute": "0", "hour": "0"}
            text = " ".join(fields.get(name, defaults.get(name, "*")) for name in _CRON_NAMES)
        else:
            text = self.string(node, "schedule entry")
        try:
            return _cron(text)
        except ValueError as exc:
            raise self.error(f"schedule entry {text!r}: {exc}", node) from None

    def notifications(self, node: Node, what: str) -> Notifications | None:
        """The recipients; a bad entry (unknown key, not an address) is dropped with a warning."""
        if not isinstance(node, MappingNode):
            self.dropped(self.error(f"{what} must be a mapping, not {_kind(node)}", node))
            return None
        lists: dict[str, tuple[str, ...]] = {"all": (), "error": ()}
        for name, key, value in self.mapping(node, what):
            if name not in lists:
                self.dropped(self.error(f"unknown key {name!r} in {what}; use all and/or error", key))
            elif not _is_null(value):
                lists[name] = self.emails(value, f"{what}.{name}")
        return Notifications(all=lists["all"], error=lists["error"])

    def emails(self, node: Node, what: str) -> tuple[str, ...]:
        if not isinstance(node, MappingNode):
            self.dropped(self.error(f"{what} must be a mapping such as {{email: [...]}}, not {_kind(node)}", node))
            return ()
        found: list[str] = []
        for name, key, value in self.mapping(node, what):
            if name != "email":
                self.dropped(self.error(f"unknown key {name!r} in {what}; use email", key))
                continue
            if _is_null(value):
                continue
            items = value.value if isinstance(value, SequenceNode) else [value]
            for item in items:
                try:
                    found += self.addresses(item)
                except ConfigError as exc:
                    self.dropped(exc)
        return tuple(found)

    def addresses(self, node: Node) -> list[str]:
        found = []
        for address in (part.strip() for part in self.string(node, "email").split(",")):
            if not (_EMAIL.fullmatch(address) or _TEMPLATE.fullmatch(address)):
                hint = "use name@example.com, or ${VAR} / {{ VAR }} for a variable holding it"
                raise self.error(f"{address!r} is not an email address", node, hint)
            found.append(address)
        return found


# An empty list, so an absent optional list and a written one take the same path.
_NONE = SequenceNode(_T + "seq", [])


def _maybe(node: Node | None, parse: Callable[[Node], _V]) -> _V | None:
    return None if node is None else parse(node)


# --- cron -----------------------------------------------------------------------------------

_CRON_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_MONTHS = {name: i for i, name in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN"), 1)}
_MONTHS |= {name: i for i, name in enumerate(("JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 7)}
_DAYS = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_CRON_NAMES = ("minute", "hour", "day", "month", "weekday")
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("weekday", 0, 7, _DAYS),  # 0 and 7 are both Sunday
)


def _cron(text: str) -> str:
    """The normalised cron string or alias in `text`; ValueError saying what is wrong."""
    stripped = text.strip()
    if stripped.startswith("@"):
        if stripped.lower() not in _CRON_ALIASES:
            raise ValueError(f"unknown alias; use one of {', '.join(_CRON_ALIASES)}")
        return stripped.lower()
    fields = stripped.split()
    if len(fields) != 5:
        raise ValueError(f"a cron schedule has 5 fields (minute hour day month weekday), not {len(fields)}")
    for value, field in zip(fields, _CRON_FIELDS, strict=True):
        _cron_field(value, *field)
    return " ".join(fields)


def _cron_field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> None:
    for part in text.split(","):
        base, slash, step = part.partition("/")
        if slash and not (step.isascii() and step.isdigit() and 1 <= int(step) <= high):
            raise ValueError(f"{name} {part!r}: the step must be a number from 1 to {high}")
        if base == "*":
            continue
        start, dash, end = base.partition("-")
        first = _cron_value(start, name, low, high, names)
        if dash and first > _cron_value(end, name, low, high, names):
            raise ValueError(f"{name} {part!r}: the range runs backwards")


def _cron_value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    if text.upper() in names:
        return names[text.upper()]
    if not (text.isascii() and text.isdigit()):
        kind = "a number or a name" if names else "a number"
        raise ValueError(f"{name} {text!r} is not {kind}")
    if not low <= int(text) <= high:
        raise ValueError(f"{name} {text} is out of range {low}-{high}")
    return int(text)


# --- JSON Schema ----------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of askanna.yml, for editors (`anna-run schema`)."""
    text: dict[str, Any] = {"type": "string"}
    texts = {"anyOf": [text, {"type": "array", "items": text}]}
    cron = _object({key: {"type": ["string", "integer"]} for key in _CRON_NAMES}, additionalProperties=False)
    entry = {"anyOf": [text, cron]}
    gpus = {"anyOf": [{"type": "integer", "minimum": 0}, {"const": "all"}]}
    job = {
        "job": ("Commands, run in order in one shell.", {"type": "array", "minItems": 1, "items": text}),
        "output": (
            "result: one file; artifact: paths or globs.",
            _object({"result": text, "artifact": texts, "paths": {**texts, "deprecated": True}}),
        ),
        "environment": ("Replaces the project's environment.", {"$ref": "#/$defs/environment"}),
        "timeout": ("Wall-clock limit, e.g. 30m or 1h30m.", {"type": ["string", "number"]}),
        "resources": (
            "Container limits: cpus, memory (e.g. 4g), gpus (a count or all).",
            _object(
                {
                    "cpus": {"type": "number", "exclusiveMinimum": 0},
                    "memory": {"type": ["string", "integer"]},
                    "gpus": gpus,
                }
            ),
        ),
        "network": ("bridge (the default) or none.", {"enum": ["bridge", "none"]}),
        "cache": ("Container paths kept between runs.", {"type": "array", "items": {"pattern": "^/."}}),
        "timezone": ("IANA timezone (TZ) of this job.", text),
        "schedule": ("Cron strings, @daily-style aliases or mappings.", {"anyOf": [entry, {"items": entry}]}),
        "notifications": ("Who is emailed about runs.", {"$ref": "#/$defs/notifications"}),
        "description": ("Free text.", text),
        "user": ("The user the job runs as: uid[:gid] or name[:group]; default the image's USER.", text),
        "input": (
            "Earlier runs whose result and artifacts the job reads at /input/runs/<RUN>/.",
            _object({"runs": {"anyOf": [text, {"type": "array", "items": text}]}}),
        ),
    }
    recipients = _object({"email": texts}, additionalProperties=False)
    credentials = _object({"username": text, "password": text}, required=["username", "password"])
    ignored = {"description": "AskAnna's setting; ignored by anna-run."}
    variables = {"type": ["string", "number", "boolean", "null"]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "askanna.yml",
        "description": "An AskAnna project: jobs by name, plus project-wide settings.",
        **_object(
            {
                "environment": {"$ref": "#/$defs/environment"},
                "variables": _object({}, additionalProperties=variables, propertyNames={"pattern": "^[A-Za-z_]\\w*$"}),
                "timezone": {**text, "description": "IANA timezone of all jobs (default UTC)."},
                "notifications": {"$ref": "#/$defs/notifications"},
                **{
                    name: ignored for name in ("push-target", "cluster", "image", "worker", "askanna", "job", "project")
                },
            },
            additionalProperties=_object(
                {key: {**schema, "description": about} for key, (about, schema) in job.items()},
                required=["job"],
                description="A job: the commands to run and the files to keep.",
            ),
        ),
        "$defs": {
            "environment": _object(
                {
                    "image": text,
                    "pull": {"enum": list(PULL_POLICIES)},
                    "credentials": credentials,
                    "build": text,
                    "build_args": {"type": "array", "items": text},
                }
            ),
            "notifications": _object({"all": recipients, "error": recipients}, additionalProperties=False),
        },
    }


def _object(properties: dict[str, Any], **keywords: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, **keywords}
