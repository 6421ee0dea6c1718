"""Who the job runs as: ``user:`` / ``--user`` when given, else the image's own ``USER``.

A numeric ``uid[:gid]`` needs nothing from the image. A name is looked up in the image's
``/etc/passwd`` and ``/etc/group`` (read through the archive API from a never-started
container, once per image and name: the answer is kept in the store's cache), and a name the
image does not know is a clear error before the job's container is made.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, EngineError
from .fsio import atomic_write

if TYPE_CHECKING:
    import docker

# The home of a user the image has no home for: made by anna-run, owned by that user, so
# pip, the XDG caches and dotfiles work whoever the user is.
FALLBACK_HOME = "/.anna-run/home"


@dataclass(frozen=True)
class User:
    """The job's user: ``spec`` is what the engine is told (None: the image's default, root)."""

    uid: int
    gid: int
    home: str
    spec: str | None  # for `create_container(user=...)`

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    @property
    def shown(self) -> str:
        return f"{self.uid}:{self.gid}"


ROOT = User(0, 0, "/root", None)


def resolve_user(api: docker.APIClient, image: str, spec: str | None, cache_file: Path | None = None) -> User:
    """The user ``spec`` (or, when None, the image's own ``USER``) as uid, gid and home.

    Raises ConfigError for a name the image does not know, EngineError when the image
    cannot be read."""
    if spec is None:
        from .image import image_user

        spec = image_user(api, image)
        if spec in ("", "0", "root", "0:0", "root:root"):
            return ROOT
    name, _, group = spec.partition(":")
    if name.isdigit() and (not group or group.isdigit()):
        uid = int(name)
        gid = int(group) if group else uid
        if uid == 0:
            return User(0, gid, "/root", spec)
        return User(uid, gid, FALLBACK_HOME, spec)
    return _by_name(api, image, spec, name, group, cache_file)


def _by_name(api, image: str, spec: str, name: str, group: str, cache_file: Path | None) -> User:
    image_id = _image_id(api, image)
    key = f"{image_id}|{spec}"
    cached = _read_cache(cache_file).get(key)
    if cached is not None:
        return User(cached["uid"], cached["gid"], cached["home"], spec)
    passwd, groups = _account_files(api, image)
    entry = passwd.get(name) if not name.isdigit() else next((e for e in passwd.values() if e[0] == int(name)), None)
    if entry is None and not name.isdigit():
        raise ConfigError(
            f"user {spec!r}: the image {image} has no user {name!r} in its /etc/passwd",
            hint='give a uid instead (user: "1000:1000"), or a user the image has',
        )
    uid, gid, home = entry if entry is not None else (int(name), int(name), FALLBACK_HOME)
    if group:
        if group.isdigit():
            gid = int(group)
        elif group in groups:
            gid = groups[group]
        else:
            raise ConfigError(f"user {spec!r}: the image {image} has no group {group!r} in its /etc/group")
    if home in ("", "/", "/nonexistent") or not home.startswith("/"):
        home = FALLBACK_HOME
    user = User(uid, gid, home if uid else "/root", spec)
    _write_cache(cache_file, key, user)
    return user


def _image_id(api, image: str) -> str:
    try:
        return api.inspect_image(image)["Id"]
    except Exception as exc:
        from .engine import short_message

        raise EngineError(f"cannot inspect image {image}: {short_message(exc)}") from None


def _account_files(api, image: str) -> tuple[dict[str, tuple[int, int, str]], dict[str, int]]:
    """The image's users (name → uid, gid, home) and groups (name → gid), read from a container
    that is created and never started."""
    from .engine import helper_container

    try:
        with helper_container(api, image) as helper:
            passwd = _file_of(api, helper, "/etc/passwd")
            group = _file_of(api, helper, "/etc/group")
    except Exception as exc:
        from .engine import short_message

        raise EngineError(f"cannot read the users of image {image}: {short_message(exc)}") from None
    users: dict[str, tuple[int, int, str]] = {}
    for line in passwd.splitlines():
        parts = line.split(":")
        if len(parts) >= 6 and parts[2].isdigit() and parts[3].isdigit():
            users.setdefault(parts[0], (int(parts[2]), int(parts[3]), parts[5]))
    groups = {}
    for line in group.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            groups.setdefault(parts[0], int(parts[2]))
    return users, groups


def _file_of(api, container: str, path: str) -> str:
    from docker.errors import NotFound

    try:
        stream, _ = api.get_archive(container, path)
    except NotFound:
        return ""
    data = b"".join(stream)
    if len(data) > 8 << 20:
        return ""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.next()
        extracted = tar.extractfile(member) if member is not None and member.isfile() else None
        return extracted.read().decode("utf-8", "replace") if extracted else ""


def _read_cache(cache_file: Path | None) -> dict:
    if cache_file is None:
        return {}
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache_file: Path | None, key: str, user: User) -> None:
    if cache_file is None:
        return
    data = _read_cache(cache_file)
    data[key] = {"uid": user.uid, "gid": user.gid, "home": user.home}
    with contextlib.suppress(OSError):
        atomic_write(cache_file, json.dumps(data, sort_keys=True))
