"""One container's whole life, as a context manager: create, fill, start, stream, stop, remove.

The code and the payload go in through the engine's archive API and outputs come out the
same way, never through a bind mount of a host path, so a remote engine (DOCKER_HOST) or
Podman's Docker-compatible socket works the same. ``__exit__`` always removes what was
created (container and payload volume), on every path out, unless ``keep`` is set.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from .errors import EngineError

if TYPE_CHECKING:
    import docker

LABEL = "io.anna-run"
# Docker's default set minus NET_RAW (raw sockets), MKNOD, AUDIT_WRITE, SETPCAP, SETFCAP and
# SYS_CHROOT: what pip, apt and ordinary jobs need, and no more. SYS_ADMIN is never granted.
CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "NET_BIND_SERVICE")
PIDS_LIMIT = 4096
ENGINE_LOG_MAX = "10m"
PAYLOAD_DIR = "/input"
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27


@dataclass(frozen=True)
class SandboxSpec:
    image: str
    name: str
    environment: dict[str, str]
    labels: dict[str, str]
    entrypoint: list[str]
    working_dir: str = "/code"
    network: str = "bridge"
    cpus: float | None = None
    memory: int | None = None
    gpus: int | str | None = None
    pids_limit: int = PIDS_LIMIT
    volumes: tuple[tuple[str, str], ...] = ()  # (named volume, container path), read-write
    payload: bool = False  # mount a read-only payload volume at /input
    user: str | None = None  # uid[:gid] or name[:group]; None: the image's own USER


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None
    timed_out: bool = False
    oom: bool = False
    cancelled: bool = False
    runtime_s: float | None = None  # the engine's StartedAt..FinishedAt, when it says


@dataclass
class _Reader:
    thread: threading.Thread
    error: list[BaseException] = field(default_factory=list)


class Sandbox:
    """Owns one job container (and its payload volume) on an engine."""

    def __init__(self, api: docker.APIClient, spec: SandboxSpec, *, keep: bool = False) -> None:
        self.api = api
        self.spec = spec
        self.keep = keep
        self.id: str | None = None
        self.payload_volume: str | None = None
        self._started = False

    # -- life ---------------------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        try:
            if self.spec.payload:
                self.payload_volume = f"{self.spec.name}-payload"
                self.api.create_volume(self.payload_volume, labels=self.spec.labels)
            self.id = self.api.create_container(
                self.spec.image,
                name=self.spec.name,
                entrypoint=self.spec.entrypoint,
                command=[],
                environment=self.spec.environment,
                labels=self.spec.labels,
                working_dir=self.spec.working_dir,
                user=self.spec.user or None,
                stdin_open=False,
                tty=False,
                network_disabled=False,
                host_config=self._host_config(),
            )["Id"]
        except BaseException as exc:
            self._remove()
            raise _engine_error("cannot create the job container", exc) from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.keep:
            self._remove()

    def _host_config(self) -> dict[str, Any]:
        from docker.types import DeviceRequest, Mount

        spec = self.spec
        mounts = [Mount(path, volume, type="volume") for volume, path in spec.volumes]
        if self.payload_volume:
            mounts.append(Mount(PAYLOAD_DIR, self.payload_volume, type="volume", read_only=True, no_copy=True))
        device_requests = None
        if spec.gpus not in (None, 0):
            count = -1 if spec.gpus == "all" else int(spec.gpus)
            device_requests = [DeviceRequest(count=count, capabilities=[["gpu"]])]
        return self.api.create_host_config(
            init=True,
            privileged=False,
            cap_drop=["ALL"],
            cap_add=list(CAPABILITIES),
            security_opt=["no-new-privileges"],
            pids_limit=spec.pids_limit,
            network_mode=spec.network,
            nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
            mem_limit=spec.memory,
            memswap_limit=spec.memory,  # no swap beyond the limit: OOM is OOM
            mounts=mounts or None,
            device_requests=device_requests,
            # We read the output through attach; the engine's own copy of it (docker logs) is
            # capped, or an endless `yes` fills the host's disk at hundreds of MB a second.
            log_config={"Type": "json-file", "Config": {"max-size": ENGINE_LOG_MAX, "max-file": "1"}},
        )

    def _remove(self) -> None:
        if self.id is not None:
            with contextlib.suppress(Exception):
                self.api.remove_container(self.id, v=True, force=True)
        if self.payload_volume is not None:
            with contextlib.suppress(Exception):
                self.api.remove_volume(self.payload_volume, force=True)

    # -- filling ------------------------------------------------------------------------------
    def put_archive(self, path: str, data: bytes | Iterable[bytes]) -> None:
        """Stream a tar into the (created, not yet started) container at ``path``."""
        try:
            ok = self.api.put_archive(self.id, path, data)
        except BaseException as exc:
            raise _engine_error(f"cannot copy files into the container at {path}", exc) from None
        if not ok:
            raise EngineError(f"the engine refused the copy into the container at {path}")

    def put_payload(self, data: Iterable[bytes]) -> None:
        """Fill the read-only payload volume through a never-started helper container: the job
        container mounts it read-only, which the archive API cannot write through."""
        from docker.types import Mount

        from .engine import helper_container

        mount = Mount(PAYLOAD_DIR, self.payload_volume, type="volume", no_copy=True)
        try:
            with helper_container(self.api, self.spec.image, mounts=(mount,), labels=self.spec.labels) as helper:
                if not self.api.put_archive(helper, PAYLOAD_DIR, data):
                    raise EngineError("the engine refused the payload copy")
        except EngineError:
            raise
        except BaseException as exc:
            raise _engine_error("cannot copy the payload into its volume", exc) from None

    # -- running ------------------------------------------------------------------------------
    def run(
        self,
        on_output: Callable[[str, bytes], None],
        *,
        timeout: float | None,
        grace: float = 10.0,
    ) -> Outcome:
        """Start, stream output to ``on_output(stream, bytes)`` and wait for the end.

        Timeout: SIGTERM, ``grace`` seconds, SIGKILL. Ctrl-C (KeyboardInterrupt): the same stop,
        and a second Ctrl-C kills at once; the outcome is then ``cancelled``."""
        reader = self._attach(on_output)
        try:
            self.api.start(self.id)
        except BaseException as exc:
            raise _engine_error("cannot start the job container", exc) from None
        self._started = True
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = cancelled = False
        try:
            while reader.thread.is_alive():
                wait = 0.5 if deadline is None else min(0.5, max(0.0, deadline - time.monotonic()))
                reader.thread.join(wait)
                if deadline is not None and time.monotonic() >= deadline and reader.thread.is_alive():
                    timed_out = True
                    self.stop(grace)
                    break
        except KeyboardInterrupt:
            cancelled = True
            self._stop_on_interrupt(grace)
        reader.thread.join(grace + 5)
        exit_code = self._wait()
        state = self._state()
        if reader.error and not (timed_out or cancelled) and exit_code is None:
            raise _engine_error("lost the container's output", reader.error[0])
        return Outcome(
            exit_code=exit_code,
            timed_out=timed_out,
            oom=bool(state.get("OOMKilled")),
            cancelled=cancelled,
            runtime_s=container_runtime(state),
        )

    def _attach(self, on_output: Callable[[str, bytes], None]) -> _Reader:
        try:
            stream = self.api.attach(self.id, stdout=True, stderr=True, stream=True, logs=True, demux=True)
        except BaseException as exc:
            raise _engine_error("cannot attach to the job container", exc) from None

        def pump() -> None:
            try:
                for out, err in stream:
                    if out:
                        on_output("stdout", out)
                    if err:
                        on_output("stderr", err)
            except BaseException as exc:
                reader.error.append(exc)

        reader = _Reader(threading.Thread(target=pump, name="anna-run-logs", daemon=True))
        reader.thread.start()
        return reader

    def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (the engine does both)."""
        try:
            self.api.stop(self.id, timeout=max(0, round(grace)))
        except Exception as exc:
            raise _engine_error("cannot stop the job container", exc) from None

    def _stop_on_interrupt(self, grace: float) -> None:
        try:
            self.stop(grace)
        except KeyboardInterrupt:  # a second Ctrl-C: no more grace
            with contextlib.suppress(Exception):
                self.api.kill(self.id)

    def _wait(self) -> int | None:
        try:
            return int(self.api.wait(self.id, timeout=60)["StatusCode"])
        except Exception as exc:
            raise _engine_error("lost the job container", exc) from None

    def _state(self) -> dict[str, Any]:
        try:
            return self.api.inspect_container(self.id)["State"] or {}
        except Exception:
            return {}

    # -- reading back -------------------------------------------------------------------------
    def stat(self, path: str) -> dict[str, Any] | None:
        """The engine's stat of ``path`` inside the container, not following a final symlink;
        None when it does not exist. For a symlink, ``linkTarget`` is its resolved absolute path."""
        url = self.api._url("/containers/{0}/archive", self.id)
        try:
            res = self.api.head(url, params={"path": path})
        except Exception as exc:
            raise _engine_error("cannot read the container's files", exc) from None
        if res.status_code == 404:
            return None
        if res.status_code >= 400:
            return {"error": res.status_code}
        header = res.headers.get("X-Docker-Container-Path-Stat")
        return json.loads(base64.b64decode(header)) if header else None

    def get_archive(self, path: str) -> Generator[bytes, None, None]:
        """The tar of ``path`` in the container, streamed. Close the generator when not reading it
        to the end: the engine will not remove a container while a copy out of it is open."""
        url = self.api._url("/containers/{0}/archive", self.id)
        try:
            # docker-py's get_archive hides the response, which must be closed on every path out.
            res = self.api._get(url, params={"path": path}, stream=True, headers={"Accept-Encoding": "identity"})
            self.api._raise_for_status(res)
            self.api._disable_socket_timeout(self.api._get_raw_response_socket(res))
        except Exception as exc:
            raise _engine_error(f"cannot copy {path} out of the container", exc) from None
        return _archive_chunks(res, f"lost the copy of {path} out of the container")

    @contextlib.contextmanager
    def open_file(self, path: str) -> Iterator[IO[bytes] | None]:
        """A regular file's content as a binary stream straight from the archive API (read it
        line by line or in chunks: memory stays flat whatever its size); None when there is
        nothing to read: the path is absent, empty (one HEAD request, no copy) or no regular file
        (a symlink is never followed)."""
        import tarfile

        info = self.stat(path)
        if info is None or "error" in info or not info.get("size"):
            yield None
            return
        chunks = self.get_archive(path)
        try:
            with tarfile.open(fileobj=IterStream(chunks), mode="r|") as tar:
                member = tar.next()
                yield tar.extractfile(member) if member is not None and member.isfile() else None
        finally:
            chunks.close()

    def read_file(self, path: str, limit: int = 1 << 20) -> bytes:
        """A small file's content (e.g. the status file), at most ``limit`` bytes, streamed."""
        import tarfile

        if self.stat(path) is None:
            return b""
        chunks = self.get_archive(path)
        try:
            with tarfile.open(fileobj=IterStream(chunks), mode="r|") as tar:
                member = tar.next()
                if member is None or not member.isfile():
                    return b""
                fileobj = tar.extractfile(member)
                return fileobj.read(limit) if fileobj else b""
        finally:
            chunks.close()


def container_runtime(state: dict[str, Any]) -> float | None:
    """Seconds from the engine's StartedAt to FinishedAt (RFC 3339, nanoseconds), or None."""
    try:
        start, end = parse_timestamp(state["StartedAt"]), parse_timestamp(state["FinishedAt"])
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    return round(end - start, 3) if end >= start else None


_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def parse_timestamp(text: str) -> float:
    """An engine timestamp as epoch seconds; nanosecond fractions (which Python's own parser
    does not read before 3.11) are kept to the microsecond."""
    from datetime import datetime

    match = _STAMP.fullmatch(text)
    if not match:
        raise ValueError(text)
    whole, fraction, zone = match.groups()
    base = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
    return base + (int(fraction[:6].ljust(6, "0")) / 1e6 if fraction else 0.0)


class IterStream(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = memoryview(chunk)
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]  # a view: no copy of the chunk's tail
        return n


def _archive_chunks(res: Any, what: str) -> Generator[bytes, None, None]:
    """The body of ``res``; a failure to read it is an EngineError (requests raises IOError
    subclasses, which a caller would take for a failure of its own disk). The response is closed
    however the reading ends, or the engine keeps the copy open and a removal waits on it."""
    try:
        yield from res.iter_content(1 << 20, False)
    except Exception as exc:
        raise _engine_error(what, exc) from None
    finally:
        res.close()


def is_symlink(stat: dict[str, Any]) -> bool:
    return bool(stat.get("mode", 0) & GO_MODE_SYMLINK)


def is_dir(stat: dict[str, Any]) -> bool:
    return bool(stat.get("mode", 0) & GO_MODE_DIR)


def _engine_error(what: str, exc: BaseException) -> BaseException:
    if isinstance(exc, KeyboardInterrupt | EngineError):
        return exc
    from .engine import explain_engine_error

    return explain_engine_error(exc, what)
