"""Where runs, packages and payloads live: a local folder or an S3 bucket, behind one interface.

``open_store`` picks the backend from the location; ``base.Store`` is the interface both
implement (``local.LocalStore``, ``s3.S3Store``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..report import Reporter
    from .base import Store

__all__ = ["default_store_location", "open_store"]


def default_store_location() -> str:
    env = os.environ.get("ANNA_RUN_STORE")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "anna-run")


def open_store(location: str | None = None, *, reporter: Reporter | None = None) -> Store:
    """Open the store named by ``--store``/``ANNA_RUN_STORE``, else the default directory.

    No network here: an S3 store connects on first use. ``reporter`` hears about transfers.
    Raises ConfigError for a malformed location or S3 setting.
    """
    location = location or default_store_location()
    if location.startswith("s3://") or location.lower().startswith("s3:"):
        from .s3 import open_s3_store

        return open_s3_store(location, reporter=reporter)
    if "://" in location:
        raise ConfigError(
            f"store {location!r}: not a directory path nor an s3:// URL",
            hint="use a folder, or s3://bucket/prefix (MinIO or any S3 API)",
        )
    from .local import LocalStore  # imported here: opening one backend loads only its code

    return LocalStore(Path(location).expanduser())
