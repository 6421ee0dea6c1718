"""The code kept in the engine: an image per (base image, package, user) holding ``/code``.

The first run of a package puts it into the engine once: a container of the base image is
created (never started), the code and anna-run's setup (status area, home) go in through the
archive API, owned by the job's user, and the container is committed as
``anna-run/code:<key>``. Every later run of that package (a second run, a rerun, a runner
host's run, a scheduled run) creates its container from that image: nothing is sent, and the
job's ``/code`` is a private, writable copy-on-write layer, so what one run changes never
reaches the next. Only the archive API and commit are used, so a remote engine and Podman work.

The images are labelled (``io.anna-run.code``), listed by ``anna-run images``, removed first by
``images prune``, and bounded: past ``ANNA_RUN_CODE_CACHE_MB`` (default 4096) the least recently
used go. Packages below ``ANNA_RUN_CODE_CACHE_MIN_KB`` (default 1024) are sent each run instead:
for them a copy costs less than the commit that would save it. ``ANNA_RUN_CODE_CACHE_MB=0``
turns the cache off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import EngineError
from .fsio import atomic_write

if TYPE_CHECKING:
    import docker

    from .package import Package
    from .report import Reporter
    from .users import User

CODE_REPO = "anna-run/code"
CODE_LABEL = "io.anna-run.code"
SETUP_VERSION = "2"  # bump when what the setup puts in the image changes
DEFAULT_BOUND_MB = 4096
DEFAULT_MIN_KB = 1024


def bound_bytes() -> int:
    return _env_int("ANNA_RUN_CODE_CACHE_MB", DEFAULT_BOUND_MB) << 20


def min_package_bytes() -> int:
    return _env_int("ANNA_RUN_CODE_CACHE_MIN_KB", DEFAULT_MIN_KB) << 10


def _env_int(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ.get(name, default)))
    except ValueError:
        return default


def wanted(package: Package) -> bool:
    """Whether this package's runs start from a code image (else its code is sent each run)."""
    return bound_bytes() > 0 and package.size >= min_package_bytes()


def code_key(base_id: str, package_sha256: str, user: User) -> str:
    text = f"{SETUP_VERSION}|{base_id}|{package_sha256}|{user.uid}:{user.gid}|{user.home}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def code_image(
    api: docker.APIClient,
    base_id: str,
    package: Package,
    user: User,
    *,
    reporter: Reporter,
    usage_file: Path | None = None,
) -> str:
    """The id of the code image for this package on ``base_id`` for ``user``: found, or made now
    (the package sent once). Raises EngineError."""
    from docker.errors import ImageNotFound

    key = code_key(base_id, package.sha256, user)
    tag = f"{CODE_REPO}:{key}"
    try:
        image_id = api.inspect_image(tag)["Id"]
        _touch(usage_file, key)
        return image_id
    except ImageNotFound:
        pass
    except Exception as exc:
        from .engine import short_message

        raise EngineError(f"cannot inspect the code image {tag}: {short_message(exc)}") from None
    image_id = _make(api, base_id, package, user, key, reporter)
    _touch(usage_file, key)
    with contextlib.suppress(Exception):  # the bound is housekeeping: never fail a run for it
        evict(api, bound_bytes(), usage_file, keep=image_id)
    return image_id


def _make(api, base_id: str, package: Package, user: User, key: str, reporter: Reporter) -> str:
    from .engine import helper_container

    reporter.step_started("copy", f"code {package.size / 1e6:.1f} MB into the engine (once for this package)")
    try:
        with helper_container(api, base_id) as helper:
            image_id = _fill_and_commit(api, helper, base_id, package, user, key, reporter)
    except (EngineError, KeyboardInterrupt):
        raise
    except Exception as exc:
        from .engine import short_message

        raise EngineError(f"cannot keep the code in the engine: {short_message(exc)}") from None
    reporter.step_done("copy")
    return image_id


def _fill_and_commit(api, helper: str, base_id: str, package: Package, user: User, key: str, reporter: Reporter) -> str:
    """The code and the setup into ``helper``, owned by the user, then committed as the code image."""
    from .package import owned_copy
    from .report import counted
    from .script import setup_members

    setup = setup_members(user.uid, user.gid, user.home, None)
    tree = owned_copy(package.path, uid=user.uid, gid=user.gid, prefix="code", before=setup)
    if not api.put_archive(helper, "/", counted(tree, reporter, "package", package.size)):
        raise EngineError("the engine refused the code copy")
    labels = {
        CODE_LABEL: key,
        f"{CODE_LABEL}.base": base_id,
        f"{CODE_LABEL}.package": package.sha256,
        f"{CODE_LABEL}.size": str(package.size),
    }
    # LABEL as a change, not in the config: Podman's commit reads changes and ignores conf.
    # (one LABEL a label: Podman reads only the first of several on one line).
    changes = [f"LABEL {name}={value}" for name, value in labels.items()]
    return api.commit(helper, repository=CODE_REPO, tag=key, changes=changes)["Id"]


def _usage(usage_file: Path | None) -> dict[str, float]:
    if usage_file is None:
        return {}
    try:
        data = json.loads(usage_file.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int | float)} if isinstance(data, dict) else {}


def _touch(usage_file: Path | None, key: str) -> None:
    if usage_file is None:
        return
    usage = _usage(usage_file)
    usage[key] = time.time()
    with contextlib.suppress(OSError):
        atomic_write(usage_file, json.dumps(usage, sort_keys=True))


def code_images(api: docker.APIClient) -> list[dict]:
    """Our code images, each with its key, size (the package's), base and creation time."""
    found = []
    for image in api.images(filters={"label": CODE_LABEL}):
        labels = image.get("Labels") or {}
        key = labels.get(CODE_LABEL, "")
        try:
            size = int(labels.get(f"{CODE_LABEL}.size", "0"))
        except ValueError:
            size = 0
        found.append({"id": image["Id"], "key": key, "size": size, "created": image.get("Created", 0),
                      "name": f"{CODE_REPO}:{key}", "base": labels.get(f"{CODE_LABEL}.base")})  # fmt: skip
    return found


def evict(api: docker.APIClient, bound: int, usage_file: Path | None, *, keep: str | None = None) -> list[dict]:
    """Remove the least recently used code images until they fit in ``bound`` bytes; an image a
    container uses, and ``keep``, stay. Returns the images removed."""
    images = code_images(api)
    total = sum(i["size"] for i in images)
    if total <= bound:
        return []
    usage = _usage(usage_file)
    in_use = {c["ImageID"] for c in api.containers(all=True)}
    removed = []
    for image in sorted(images, key=lambda i: usage.get(i["key"], i["created"])):
        if total <= bound:
            break
        if image["id"] == keep or image["id"] in in_use:
            continue
        with contextlib.suppress(Exception):
            api.remove_image(image["id"], force=False)
            total -= image["size"]
            removed.append(image)
    return removed
