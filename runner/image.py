"""The job's image: present locally per the pull policy, pulled when asked, recorded by digest."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, EngineError
from .fsio import atomic_write
from .record import ImageInfo
from .report import Reporter

if TYPE_CHECKING:
    import docker

    from .project import Credentials


def ensure_image(
    api: docker.APIClient,
    name: str,
    *,
    pull: str,
    reporter: Reporter,
    credentials: Credentials | None = None,
) -> ImageInfo:
    """Make ``name`` present per ``pull`` (if-not-present, always, never) and describe it."""
    from docker.errors import ImageNotFound

    present = None
    try:
        present = api.inspect_image(name)
    except ImageNotFound:
        present = None
    except Exception as exc:
        from .engine import short_message

        raise EngineError(f"cannot inspect image {name}: {short_message(exc)}") from None
    if present is None and pull == "never":
        raise EngineError(
            f"image {name} is not present on the engine and the pull policy is 'never'",
            hint="pull or build it first, or use --pull if-not-present",
        )
    if present is None or pull == "always":
        _pull(api, name, reporter, credentials)
        present = api.inspect_image(name)
    digests = present.get("RepoDigests") or []
    _remember_user(present)
    return ImageInfo(name=name, digest=digests[0] if digests else None, id=present["Id"])


# The USER of images this process inspected, by id: who a job runs as by default, known
# without a second inspect of the same image.
_USERS: dict[str, str] = {}


def _remember_user(inspected: dict) -> None:
    _USERS[inspected["Id"]] = (inspected.get("Config") or {}).get("User") or ""


def image_user(api: docker.APIClient, image: str) -> str:
    """The image's own USER ("" for root), from this process's inspect of it when there was one."""
    if image in _USERS:
        return _USERS[image]
    try:
        inspected = api.inspect_image(image)
    except Exception as exc:
        from .engine import short_message

        raise EngineError(f"cannot inspect image {image}: {short_message(exc)}") from None
    _remember_user(inspected)
    return _USERS[inspected["Id"]]


def ensure_pinned(api: docker.APIClient, image: ImageInfo, *, reporter: Reporter) -> ImageInfo:
    """The exact image of an earlier run: by id when the engine still has it, else pulled by its
    repo digest (which names the same content); anything else is a clear error, never a
    look-alike image under the same tag."""
    from docker.errors import ImageNotFound

    if image.id:
        try:
            api.inspect_image(image.id)
            return image
        except ImageNotFound:
            pass
    if not image.digest:
        raise EngineError(
            f"the image of that run ({image.name}, {image.id}) is gone from the engine and has no repo digest to pull",
            hint="build or load that image again; a locally built image is identified by its id only",
        )
    _pull(api, image.digest, reporter, None)
    found = api.inspect_image(image.digest)
    if image.id and found["Id"] != image.id:
        raise EngineError(f"pulling {image.digest} gave image {found['Id']}, not the run's {image.id}")
    return ImageInfo(name=image.name, digest=image.digest, id=found["Id"])


def _pull(api: docker.APIClient, name: str, reporter: Reporter, credentials: Credentials | None) -> None:
    from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

    auth = {"username": credentials.username, "password": credentials.password} if credentials else None
    repo, tag = _split(name)

    @retry(
        retry=retry_if_exception(_transient),
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.5, max=8),
        reraise=True,
    )
    def attempt() -> None:
        layers: dict[str, tuple[int, int]] = {}  # layer id -> (bytes done, bytes total)
        for event in api.pull(repo, tag=tag, stream=True, decode=True, auth_config=auth):
            if "error" in event:
                raise _PullFailed(str(event.get("error")))
            status, detail = event.get("status", ""), event.get("progressDetail") or {}
            if "id" not in event:
                if status:
                    reporter.info(f"pull {name}: {status}")
            elif status == "Downloading" and detail.get("total"):
                layers[event["id"]] = (detail.get("current", 0), detail["total"])
                done, total = (sum(values) for values in zip(*layers.values(), strict=True))
                reporter.bytes_done("pull", done, total)

    reporter.step_started("pull", name)
    try:
        attempt()
    except Exception as exc:
        raise EngineError(f"cannot pull image {name}: {_reason(exc)}") from None
    reporter.step_done("pull", name)


class _PullFailed(Exception):
    pass


def _transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    permanent = ("not found", "unauthorized", "denied", "manifest unknown", "invalid reference")
    return not any(word in text for word in permanent)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    low = text.lower()
    if "not found" in low or "manifest unknown" in low:
        return f"not found ({text[:200]})"
    if "unauthorized" in low or "denied" in low:
        return f"unauthorized ({text[:200]})"
    if any(w in low for w in ("timeout", "dial tcp", "no such host", "connection", "i/o")):
        return f"registry unreachable ({text[:200]})"
    return text[:300]


# The reference grammar of the engines (distribution/reference): [host[:port]/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:]+\])"
_REFERENCE = re.compile(
    rf"(?:{_HOST}(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::\w[\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?",
    re.ASCII,
)


def valid_reference(name: str) -> bool:
    """Whether ``name`` is an image reference the engine accepts (``python:3.11-slim``,
    ``registry:5000/team/img@sha256:...``); anything else is refused before it reaches the engine."""
    if _REFERENCE.fullmatch(name) is None:
        return False
    repository = name.split("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    return len(repository) <= 255


def _split(name: str) -> tuple[str, str | None]:
    if "@" in name:
        return name, None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
        return repo, tag
    return name, "latest"


BUILD_REPO = "anna-run/build"


def build_image(
    api: docker.APIClient,
    project_root: Path,
    build: str,
    *,
    build_args: dict[str, str],
    labels: dict[str, str],
    reporter: Reporter,
    cache_file: Path | None = None,
) -> ImageInfo:
    """Build ``build`` (a folder holding a Dockerfile, or a Dockerfile) from the project, tagged
    by the sha256 of its context: an unchanged context makes no build call at all."""
    context, dockerfile = _build_context(project_root, build)
    digest = context_digest(context, dockerfile, build_args, cache_file)
    tag = f"{BUILD_REPO}:{digest}"
    from docker.errors import ImageNotFound

    try:
        found = api.inspect_image(tag)
        reporter.step_done("build", f"{tag[:30]}… unchanged context, no build")
        return ImageInfo(name=tag, digest=None, id=found["Id"])
    except ImageNotFound:
        pass
    reporter.step_started("build", f"{build} → {tag[:30]}…")
    error = None
    try:
        stream = api.build(
            path=str(context),
            dockerfile=dockerfile,
            tag=tag,
            rm=True,
            forcerm=True,
            decode=True,
            buildargs=build_args or None,
            labels={**labels, "io.anna-run.build": digest},
            pull=False,
        )
        for event in stream:
            if "error" in event:
                error = str(event.get("error", "")).strip()
            elif text := event.get("stream"):
                reporter.log_line("stderr", text)
    except Exception as exc:
        from .engine import short_message

        raise EngineError(f"cannot build the image from {build}: {short_message(exc)}") from None
    if error:
        raise EngineError(f"the image build from {build} failed: {error}")
    found = api.inspect_image(tag)
    reporter.step_done("build", tag)
    return ImageInfo(name=tag, digest=None, id=found["Id"])


def _build_context(project_root: Path, build: str) -> tuple[Path, str]:
    root = project_root.resolve()
    target = (project_root / build).resolve()
    if target != root and root not in target.parents:
        raise ConfigError(f"environment.build {build!r} leaves the project")
    if target.is_dir():
        if not (target / "Dockerfile").is_file():
            raise ConfigError(f"environment.build {build!r}: no Dockerfile in that folder")
        return target, "Dockerfile"
    if target.is_file():
        return target.parent, target.name
    raise ConfigError(f"environment.build {build!r}: no such folder or Dockerfile")


def context_digest(context: Path, dockerfile: str, build_args: dict[str, str], cache_file: Path | None) -> str:
    """sha256 over what the build sees: the files .dockerignore lets through (names, exec bits,
    contents, link targets) and the build args. A stat cache skips reading an unchanged tree."""
    from docker.utils.build import exclude_paths

    files = sorted(exclude_paths(str(context), _dockerignore(context), dockerfile=dockerfile))
    stats = []
    for rel in files:
        st = os.lstat(context / rel)
        stats.append((rel, st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode))
    key = hashlib.sha256(json.dumps([stats, sorted(build_args.items()), dockerfile]).encode()).hexdigest()
    cache = _read_cache(cache_file)
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    digest.update(json.dumps([dockerfile, sorted(build_args.items())]).encode())
    for rel, _, _, _, mode in stats:
        path = context / rel
        digest.update(f"\0{rel}\0{mode & 0o111:o}\0".encode())
        if stat.S_ISLNK(mode):
            digest.update(os.readlink(path).encode())
        elif stat.S_ISREG(mode):
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    value = digest.hexdigest()
    if cache_file is not None:
        cache = dict(list(cache.items())[-50:])
        cache[key] = value
        with contextlib.suppress(OSError):
            atomic_write(cache_file, json.dumps(cache))
    return value


def _dockerignore(context: Path) -> list[str]:
    path = context / ".dockerignore"
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _read_cache(cache_file: Path | None) -> dict[str, str]:
    if cache_file is None:
        return {}
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
