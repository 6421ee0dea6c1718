"""RunRecord: what a run was and how it ended, frozen, and its run.json form."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any

STATUSES = ("queued", "running", "succeeded", "failed", "timeout", "cancelled")
FINAL_STATUSES = frozenset({"succeeded", "failed", "timeout", "cancelled"})
RECORD_VERSION = 1


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class CommandResult:
    command: str  # as written in askanna.yml, masked
    exit_code: int | None  # None: not reached
    duration_s: float | None = None


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative to the workspace (/code)
    size: int
    sha256: str


@dataclass(frozen=True)
class ImageInfo:
    name: str
    digest: str | None = None  # repo digest "name@sha256:..." when the image has one
    id: str | None = None  # the engine's image id (sha256:...)


@dataclass(frozen=True)
class InputRun:
    """An earlier run whose outputs this run read (lineage)."""

    run: str
    job: str = ""
    status: str = ""


@dataclass(frozen=True)
class BlobRef:
    id: str  # AskAnna-style short id derived from the content
    sha256: str
    size: int = 0


@dataclass(frozen=True)
class RunRecord:
    id: str
    job: str
    project: str  # project id
    status: str
    project_root: str = ""
    reason: str | None = None
    exit_code: int | None = None
    commands: tuple[CommandResult, ...] = ()
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    image: ImageInfo | None = None
    package: BlobRef | None = None
    payload: BlobRef | None = None
    variables: dict[str, str] = field(default_factory=dict)  # masked
    secret_names: tuple[str, ...] = ()
    result: FileInfo | None = None
    artifacts: tuple[FileInfo, ...] = ()
    refused: tuple[str, ...] = ()  # output paths refused (leaving the workspace), with why
    warnings: tuple[str, ...] = ()
    name: str | None = None
    description: str | None = None
    host: str = ""
    runner_version: str = ""
    runner: str | None = None  # host:pid:start of the anna-run process that owns a live run
    container: str | None = None
    rerun_of: str | None = None
    trigger: str | None = None  # what started the run: cli | submit | rerun | schedule (None: before this field)
    queue: str | None = None  # the runner-host queue of a submitted run (`anna-run submit`); None: local
    attempts: int = 1  # times a runner host started the run (2: taken over from a lost host); 0: queued
    worker: str | None = None  # the runner-host worker that ran (the last attempt of) a submitted run
    log_truncated: bool = False
    upload: str | None = None  # "pending": kept in the local spool until `anna-run sync` uploads it
    settings: dict[str, Any] = field(default_factory=dict)  # resolved run settings (image, limits...)
    inputs: tuple[InputRun, ...] = ()  # earlier runs whose result and artifacts this run read
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # tracked: name -> last, min, max, count
    tracked: dict[str, Any] = field(default_factory=dict)  # tracked variables: name -> last value
    version: int = RECORD_VERSION

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def evolve(self, **changes: Any) -> RunRecord:
        return replace(self, **changes)

    def masked(self, mask: Callable[[str], str]) -> RunRecord:
        """The record with ``mask`` applied to every text a run's input can reach (the reason,
        warnings, refused paths, echoed commands, names, the rendered settings and the image's
        name): the record is masked where it leaves the run, as a whole."""

        def text(value: Any) -> Any:
            if isinstance(value, str):
                return mask(value)
            if isinstance(value, list | tuple):
                return type(value)(text(v) for v in value)
            if isinstance(value, dict):
                return {mask(k): text(v) for k, v in value.items()}
            return value

        return replace(
            self,
            reason=text(self.reason),
            warnings=text(self.warnings),
            refused=text(self.refused),
            commands=tuple(replace(c, command=mask(c.command)) for c in self.commands),
            name=text(self.name),
            description=text(self.description),
            image=replace(self.image, name=mask(self.image.name)) if self.image else None,
            settings={key: text(value) for key, value in self.settings.items()},
            metrics=text(self.metrics),
            tracked=text(self.tracked),
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data: nested parts as dicts, lists of them as lists. Built
        field by field, not with ``asdict``, whose deep copy made ``runs --json`` of 10,000
        runs take 0.85 s; the dicts are new, their values shared (read them, don't change them)."""
        data = dict(vars(self))  # exactly the fields: a plain (not slotted) frozen dataclass
        for key in ("image", "package", "payload", "result"):
            if data[key] is not None:
                data[key] = dict(vars(data[key]))
        data["commands"] = [dict(vars(c)) for c in self.commands]
        data["artifacts"] = [dict(vars(a)) for a in self.artifacts]
        data["inputs"] = [dict(vars(i)) for i in self.inputs]
        data["variables"] = dict(self.variables)
        data["settings"] = dict(self.settings)
        data["metrics"] = dict(self.metrics)
        data["tracked"] = dict(self.tracked)
        return data

    def to_json(self) -> str:
        # json.dumps with an indent joins a list of every small piece it made: for a record of
        # 100,000 artifacts that list alone is ~100 MB. Written piece by piece: the same text.
        out = io.StringIO()
        for chunk in json.JSONEncoder(indent=2, ensure_ascii=False).iterencode(self.to_dict()):
            out.write(chunk)
        out.write("\n")
        return out.getvalue()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        if not isinstance(data, dict):
            raise ValueError("a run record must be a JSON object")
        kwargs = _known(cls, data)
        kwargs["commands"] = tuple(CommandResult(**_known(CommandResult, c)) for c in data.get("commands") or ())
        kwargs["artifacts"] = tuple(FileInfo(**_known(FileInfo, a)) for a in data.get("artifacts") or ())
        kwargs["inputs"] = tuple(InputRun(**_known(InputRun, i)) for i in data.get("inputs") or ())
        for key, kind in _NESTED:
            if (part := data.get(key)) is not None:
                kwargs[key] = kind(**_known(kind, part))
        for key in ("refused", "warnings", "secret_names"):
            kwargs[key] = tuple(data.get(key) or ())
        for key in ("metrics", "tracked"):  # absent in records written before tracking: defaults
            if key in kwargs and not isinstance(kwargs[key], dict):
                kwargs[key] = {}
        if len(kwargs) == len(_name_set(cls)):
            # Every field there (a record of this version, the usual case; the lists above are
            # always set, to what __init__ would default them to): set them as the
            # generated __init__ would, without its one object.__setattr__ per field (10,000
            # records listed: -40 ms). A record missing some goes through __init__ for defaults.
            record = object.__new__(cls)
            record.__dict__.update(kwargs)
            return record
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        return cls.from_dict(json.loads(text))


_NESTED = (("result", FileInfo), ("image", ImageInfo), ("package", BlobRef), ("payload", BlobRef))


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The keys ``cls`` knows: a record written by a newer anna-run still reads (forward compatible)."""
    names = _name_set(cls)
    if data.keys() <= names:  # the usual case, a record of this version: one set operation
        return dict(data)
    return {k: v for k, v in data.items() if k in names}


@functools.cache
def _name_set(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))
