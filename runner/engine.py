"""The container engine: a docker SDK client from the environment (DOCKER_HOST, contexts,
Podman's Docker-compatible socket), with the API version negotiated, never pinned."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .errors import EngineError

if TYPE_CHECKING:
    import docker

START_HINT = (
    "start Docker (`sudo systemctl start docker`, or Docker Desktop), point DOCKER_HOST at an engine, "
    "or run `make engine` in the anna-run checkout (as root it installs and starts one)"
)


@contextlib.contextmanager
def helper_container(
    api: docker.APIClient, image: str, *, mounts: tuple = (), labels: dict[str, str] | None = None
) -> Iterator[str]:
    """A container of ``image`` that is created and never started: a place where the archive API
    reads or writes an image's files (or, through ``mounts`` — docker ``Mount`` objects — a
    volume's). Its id is yielded; it is removed on every way out (named volumes stay)."""
    host_config = api.create_host_config(mounts=list(mounts) or None, network_mode="none")
    helper = api.create_container(image, command=["true"], entrypoint=[], labels=labels, host_config=host_config)
    try:
        yield helper["Id"]
    finally:
        with contextlib.suppress(Exception):
            api.remove_container(helper["Id"], force=True, v=True)


def connect(timeout: int = 120) -> docker.APIClient:
    """A low-level client bound to the engine the environment names; raises EngineError if none answers."""
    import docker
    from docker.errors import DockerException

    try:
        kwargs = docker.utils.kwargs_from_env()
        base_url = kwargs.pop("base_url", None) or _context_host() or None
        client = docker.APIClient(base_url=base_url, version="auto", timeout=timeout, **kwargs)
    except DockerException as exc:
        raise EngineError(f"no container engine answers: {short_message(exc)}", hint=START_HINT) from None
    except Exception as exc:  # requests' connection errors surface here during version negotiation
        raise EngineError(f"no container engine answers: {short_message(exc)}", hint=START_HINT) from None
    return client


def _context_host() -> str | None:
    """The host of the current `docker context`, when DOCKER_HOST is unset (docker-py ignores contexts)."""
    if os.environ.get("DOCKER_HOST"):
        return None
    try:
        from docker.context import ContextAPI

        ctx = ContextAPI.get_current_context()
        host = ctx.Host if ctx is not None else None
    except Exception:
        return None
    return host or None


def short_message(exc: BaseException) -> str:
    """The part of an engine error worth showing: without the SDK's wrapping, at most 300 characters."""
    text = str(exc)
    for marker in ("Error while fetching server API version: ", "Connection aborted.', "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip("()'\" ")[:300]


CATATONIT_HINT = (
    "Podman runs the job container's init process (anna-run asks for one, to reap zombies and pass "
    "signals) with its init binary, catatonit, which is not installed: install it (`apt-get install "
    "catatonit`, `dnf install catatonit`; some distributions call it podman-catatonit), or point "
    "`init_path` in the [containers] section of containers.conf at it"
)


def explain_engine_error(exc: BaseException, what: str = "the container engine failed") -> EngineError:
    """``exc`` (a docker SDK or connection error) as an EngineError saying ``what`` failed, with a
    hint where the engine's own words name a part of it that is missing (Podman's init binary)."""
    if isinstance(exc, EngineError):
        return exc
    text = str(exc)
    hint = None
    # Podman's words for a missing init binary: "container-init binary not found on the host: stat
    # /usr/libexec/podman/catatonit: ..." (older) and `lookup init binary: exec: "catatonit": ...`
    if "catatonit" in text or "init binary" in text:
        hint = CATATONIT_HINT
    return EngineError(f"{what}: {short_message(exc)}", hint=hint)
