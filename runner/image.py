"""The job's image: present locally per the pull policy, pulled when asked, recorded by digest."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import EngineError
from .progress import Reporter
from .record import ImageInfo

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
        from .engine import _short

        raise EngineError(f"cannot inspect image {name}: {_short(exc)}") from None
    if present is None and pull == "never":
        raise EngineError(
            f"image {name} is not present on the engine and the pull policy is 'never'",
            hint="pull or build it first, or use --pull if-not-present",
        )
    if present is None or pull == "always":
        _pull(api, name, reporter, credentials)
        present = api.inspect_image(name)
    digests = present.get("RepoDigests") or []
    return ImageInfo(name=name, digest=digests[0] if digests else None, id=present["Id"])


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
        for event in api.pull(repo, tag=tag, stream=True, decode=True, auth_config=auth):
            if "error" in event:
                raise _PullFailed(str(event.get("error")))
            status = event.get("status", "")
            if status and "id" not in event:
                reporter.info(f"pull {name}: {status}")

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


def _split(name: str) -> tuple[str, str | None]:
    if "@" in name:
        return name, None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
        return repo, tag
    return name, "latest"
