"""Schedule registrations and their fire decisions, kept in the store as plain JSON files.

Layout under the store's ``schedules/`` folder::

    entries/<id>.json           a Registration: job, cron, timezone, the package it runs
    fires/<id>/<UTC time>.json  one decision per entry and fire time: started, skipped, missed

A fire file is created with ``O_CREAT | O_EXCL``: whichever scheduler creates it decides that
fire time, every other one sees it exists and leaves the time alone. So an entry fires at most
once per time however many schedulers share the store, and the listing of what happened (last
run, missed, skipped) is read back from the same files.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..fsio import atomic_write, fsync_folder

OUTCOMES = ("started", "skipped", "missed")
KEEP_FIRES = 200  # fire files kept per entry; older ones are removed when a new one is written
_STAMP = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Registration:
    """One schedule entry of one job, registered against a code package in the store."""

    id: str  # derived from project, job and cron: enabling again replaces, never doubles
    project: str  # project id
    project_root: str  # where the project lived when it was enabled
    job: str
    cron: str  # as normalised by project.py: five fields or an alias such as "@daily"
    timezone: str  # IANA name; fire times follow it, daylight-saving changes included
    package_sha256: str
    package_size: int
    registered_at: str  # ISO time, UTC

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Registration:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Fire:
    """What was decided for one entry at one fire time."""

    entry: str
    at: datetime  # the fire time, UTC
    outcome: str  # started | skipped | missed
    run: str | None = None  # the run started (started), or the one still going (skipped)
    decided_at: str = ""
    by: str = ""  # host:pid of the scheduler that decided

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": _iso(self.at)}


class ScheduleBook:
    """The schedules of one store. Raises StoreError when the folder cannot be written."""

    def __init__(self, folder: Path) -> None:
        self._entries = folder / "entries"
        self._fires = folder / "fires"

    # -- registrations ---------------------------------------------------------------------------
    def put(self, registration: Registration) -> None:
        try:
            self._entries.mkdir(parents=True, exist_ok=True)
            atomic_write(self._entries / f"{registration.id}.json", registration.to_json())
        except OSError as exc:
            raise StoreError(f"cannot register a schedule in {self._entries}: {exc.strerror or exc}") from exc

    def remove(self, entry_id: str) -> bool:
        """Unregister ``entry_id``; its fire history goes too. True when it was registered."""
        try:
            (self._entries / f"{entry_id}.json").unlink()
        except FileNotFoundError:
            return False
        folder = self._fires / entry_id
        for path in folder.glob("*.json"):
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()
        return True

    def entries(self) -> list[Registration]:
        """Every registration, by project, job and cron; a damaged file is left out."""
        found = []
        for path in sorted(self._entries.glob("*.json")):
            with contextlib.suppress(OSError, ValueError, TypeError):
                found.append(Registration.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        return sorted(found, key=lambda r: (r.project_root, r.job, r.cron))

    def get(self, entry_id: str) -> Registration | None:
        try:
            return Registration.from_dict(json.loads((self._entries / f"{entry_id}.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    # -- fire decisions ----------------------------------------------------------------------------
    def claim(self, fire: Fire) -> bool:
        """Record ``fire`` unless a decision for its entry and time exists. True: this caller
        decided it (and must act on it); False: another scheduler did."""
        folder = self._fires / fire.entry
        path = folder / f"{fire.at.astimezone(timezone.utc).strftime(_STAMP)}.json"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot record a schedule's fire in {folder}: {exc.strerror or exc}") from exc
        try:
            os.write(fd, json.dumps(fire.to_dict()).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_folder(folder)
        self._prune(folder)
        return True

    def fires(self, entry_id: str) -> list[Fire]:
        """The decisions kept for ``entry_id``, oldest first. A file still being written by its
        claimer reads as an empty decision at its time (it exists: the time is taken)."""
        found = []
        for path in sorted((self._fires / entry_id).glob("*.json")):
            try:
                at = datetime.strptime(path.stem, _STAMP).replace(tzinfo=timezone.utc)
            except ValueError:
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            found.append(
                Fire(
                    entry=entry_id,
                    at=at,
                    outcome=data.get("outcome", "started"),
                    run=data.get("run"),
                    decided_at=data.get("decided_at", ""),
                    by=data.get("by", ""),
                )
            )
        return found

    def last_decided(self, entry_id: str) -> datetime | None:
        names = sorted(p.stem for p in (self._fires / entry_id).glob("*.json"))
        for name in reversed(names):
            with contextlib.suppress(ValueError):
                return datetime.strptime(name, _STAMP).replace(tzinfo=timezone.utc)
        return None

    def _prune(self, folder: Path) -> None:
        paths = sorted(folder.glob("*.json"))
        for path in paths[:-KEEP_FIRES]:
            with contextlib.suppress(OSError):
                path.unlink()


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
