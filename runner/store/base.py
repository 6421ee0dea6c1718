"""The Store protocol: where packages, payloads and runs live, whatever the backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ..errors import ConfigError
from ..record import RunRecord


class Store(Protocol):
    """A run store. A run writes into ``run_dir(id)`` (final place or spool) and publishes with
    ``save_record``; readers only see what a record names."""

    location: str

    def packages_dir(self) -> Path: ...
    def add_payload(self, src: Path, sha256: str) -> Path: ...
    def payload_path(self, sha256: str) -> Path: ...
    def cache_dir(self) -> Path: ...
    def run_dir(self, run_id: str) -> Path: ...
    def save_record(self, record: RunRecord) -> None: ...
    def get(self, run_ref: str) -> RunRecord: ...
    def list_runs(
        self,
        *,
        project: str | None = None,
        job: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]: ...
    def iter_log(self, run_id: str, stream: str = "log") -> Iterator[bytes]: ...


def default_store_location() -> str:
    env = os.environ.get("ANNA_RUN_STORE")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "anna-run")


def open_store(location: str | None = None) -> Store:
    """Open the store named by ``--store``/``ANNA_RUN_STORE``, else the default directory."""
    location = location or default_store_location()
    if location.startswith("s3://"):
        raise ConfigError(
            f"store {location!r}: the S3 store is not available in this version",
            hint="use a directory path for --store / ANNA_RUN_STORE",
        )
    if "://" in location:
        raise ConfigError(f"store {location!r}: not a directory path nor an s3:// URL")
    from .local import LocalStore

    return LocalStore(Path(location).expanduser())
