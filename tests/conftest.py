"""Fixtures shared by the suite: the real engine, the test images, projects in tmp_path and a
real `anna-run` process to drive."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from anna_run.ids import suuid_from_digest

REPO = Path(__file__).resolve().parent.parent
BUSYBOX = "anna-run/busybox:latest"
PYTHON = "anna-run/python:3.11"


@pytest.fixture(scope="session")
def api():
    """The real engine. Its absence is a failure, not a skip: `make test` provisions one."""
    from anna_run.engine import connect
    from anna_run.errors import EngineError

    try:
        client = connect()
        client.ping()
    except EngineError as exc:
        pytest.fail(f"no container engine: {exc.message} ({exc.hint}) — run `make test`", pytrace=False)
    return client


def _ensure_image(api, tag: str, build_script: str) -> str:
    """``tag``, built by the repo's ``build_script`` when the engine does not have it."""
    from docker.errors import ImageNotFound

    try:
        api.inspect_image(tag)
    except ImageNotFound:
        subprocess.run(["bash", str(REPO / build_script)], check=True)
    return tag


@pytest.fixture(scope="session")
def busybox(api) -> str:
    """A 2 MB shell-only image, built offline from Debian's busybox-static when missing."""
    return _ensure_image(api, BUSYBOX, "images/busybox/build.sh")


@pytest.fixture(scope="session")
def python_image(api) -> str:
    return _ensure_image(api, PYTHON, "scripts/images.sh")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Env:
    """A project folder and a store folder, and `anna-run` run for real against them."""

    def __init__(self, root: Path, store: Path) -> None:
        self.root = root
        self.store = store

    def project(self, yml: str, files: dict[str, str | bytes] | None = None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "askanna.yml").write_text(textwrap.dedent(yml))
        for name, content in (files or {}).items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        return self.root

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANNA_RUN_")}
        env.update(ANNA_RUN_STORE=str(self.store), NO_COLOR="1")
        env.update(extra)
        return env

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "anna_run.cli", *args]

    def run(
        self, *args: str, input: str | bytes | None = None, cwd: Path | None = None, timeout: float = 120, **env: str
    ) -> Result:
        proc = subprocess.run(
            self.cmd(*args),
            cwd=cwd or self.root,
            env=self.environ(**env),
            input=input.encode() if isinstance(input, str) else input,
            capture_output=True,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))

    def popen(self, *args: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.cmd(*args),
            cwd=self.root,
            env=self.environ(**env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def records(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.store / "runs").glob("*/run.json"))]

    def last(self) -> dict:
        res = self.run("show", "--json")
        assert res.returncode == 0, res.output
        return json.loads(res.stdout)

    def run_dir(self, run_id: str) -> Path:
        return self.store / "runs" / run_id


def host_paths(binds: list[str] | None) -> list[str]:
    """Bind mounts of host paths (Podman lists named volumes as `name:/path` binds too)."""
    return [b for b in binds or [] if b.startswith("/")]


def run_resources(api, root: Path) -> set[str]:
    """Containers and volumes of runs of the project at ``root`` (not its cache volumes). The
    second label is checked here: Podman does not AND several label filters on volumes."""
    label = {"label": project_label(root)}
    containers = {c["Id"] for c in api.containers(all=True, filters=label)}
    volumes = {
        v["Name"]
        for v in (api.volumes(filters=label) or {}).get("Volumes") or []
        if "io.anna-run.run" in (v.get("Labels") or {})
    }
    return containers | volumes


def project_label(root: Path) -> str:
    digest = hashlib.sha256(str(root.resolve()).encode()).digest()
    return f"io.anna-run.project={suuid_from_digest(digest)}"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    environment = Env(tmp_path / "project", tmp_path / "store")
    yield environment
    # The project's dependency-cache volumes outlive its runs by design, and --keep keeps a
    # run's container and payload volume: none of that may outlive the test.
    if environment.root.exists():
        from anna_run.engine import connect

        api = connect()
        for container in api.containers(all=True, filters={"label": project_label(environment.root)}):
            api.remove_container(container["Id"], force=True, v=True)  # left by --keep
        filters = {"label": project_label(environment.root)}
        for volume in (api.volumes(filters=filters) or {}).get("Volumes") or []:
            api.remove_volume(volume["Name"], force=True)


@pytest.fixture
def ours(api, env):
    """Ids of the containers and volumes anna-run made for this test's project (by its label, so
    runs of other tests or other suites on the same engine do not count)."""

    return lambda: run_resources(api, env.root)


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="anna-run-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def podman(busybox, tmp_path_factory) -> Iterator[str]:
    """Podman's Docker-compatible API on a private socket (rootful, as CI runs), with the busybox
    test image loaded into it; yields the DOCKER_HOST value. Stopped by its PID afterwards."""
    import signal
    import time

    if shutil.which("podman") is None:
        if os.environ.get("CI"):
            pytest.fail("podman is not installed; .ci/run installs Debian's podman", pytrace=False)
        pytest.skip("podman is not installed on this machine (CI installs Debian's podman)")
    base = tmp_path_factory.mktemp("podman")
    # Rootful Podman in a container sandbox cannot set RLIMIT_NOFILE: no default ulimits.
    (base / "containers.conf").write_text("[containers]\ndefault_ulimits = []\n")
    sock = base / "podman.sock"
    with open(base / "service.log", "wb") as log:
        proc = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{sock}"],
            env={**os.environ, "CONTAINERS_CONF": str(base / "containers.conf")},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    host = f"unix://{sock}"
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not sock.exists():
            pytest.fail(f"podman system service did not start: {(base / 'service.log').read_text()[-2000:]}")
        saved = subprocess.run(["docker", "save", BUSYBOX], check=True, capture_output=True).stdout
        podman_client(host).load_image(saved)
        yield host
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def podman_client(host: str):
    import docker

    return docker.APIClient(base_url=host, version="auto", timeout=120)


# -- SeaweedFS: a real S3 server for the S3 store ---------------------------------------------------

S3_ACCESS_KEY = "anna-run-test"
S3_SECRET_KEY = "anna-run-test-secret-7f3a9c"
S3_BUCKET = "anna-run-test"
# Every port `weed mini` opens, given a free one so parallel test sessions never collide
# (the gRPC ports would otherwise be the HTTP ports + 10000).
_WEED_PORTS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def _free_ports(count: int) -> list[int]:
    import socket

    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedFS:
    """`weed mini` (master, volume, filer, S3 gateway) bound to 127.0.0.1 on free ports, its data
    and its log in ``root``; telemetry, admin UI, WebDAV, Iceberg and Lance off. ``stop()`` and
    ``start()`` again keep the same ports and data (an outage, then the server back)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "weed.log"
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.data.mkdir(parents=True, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "anna-run-test",
                    "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        self.config = root / "s3.json"
        self.config.write_text(json.dumps(identities))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def environ(self) -> dict[str, str]:
        return {
            "ANNA_RUN_S3_ENDPOINT": self.endpoint,
            "ANNA_RUN_S3_ACCESS_KEY": S3_ACCESS_KEY,
            "ANNA_RUN_S3_SECRET_KEY": S3_SECRET_KEY,
        }

    def client(self):
        """A plain minio client (no retries of its own: a readiness probe must not wait them out)."""
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(maxsize=16, retries=False, timeout=urllib3.Timeout(connect=5, read=60))
        return Minio(f"127.0.0.1:{self.ports['s3.port']}", S3_ACCESS_KEY, S3_SECRET_KEY, secure=False, http_client=http)

    def _command(self) -> list[str]:
        weed = Path(sys.executable).parent / "weed"
        if not weed.exists():
            weed = Path(shutil.which("weed") or "weed")
        flags = [f"-{name}={port}" for name, port in self.ports.items()]
        return [
            str(weed),
            "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.config}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            *flags,
        ]

    def start(self, timeout: float = 60) -> None:
        import time

        fresh_ports = not self.ports
        for _ in range(3):
            if fresh_ports:
                self.ports = dict(zip(_WEED_PORTS, _free_ports(len(_WEED_PORTS)), strict=True))
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._ready():
                    return
                time.sleep(0.1)
            self.stop()
            if not fresh_ports:
                break  # a restart must keep its ports: no second try on others
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        pytest.fail(f"SeaweedFS did not start (log {self.log}):\n{tail}", pytrace=False)

    def _ready(self) -> bool:
        import io

        try:
            client = self.client()
            if not client.bucket_exists(S3_BUCKET):
                client.make_bucket(S3_BUCKET)
            client.put_object(S3_BUCKET, "ready-probe", io.BytesIO(b"ok"), 2)
            return True
        except Exception:
            return False

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL — by the PID we started, nothing else."""
        import signal

        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)
        for name, port in self.ports.items():  # the unix sockets weed made for our ports
            kind = name.split(".")[0]
            suffix = "-grpc" if name.endswith(".grpc") else ""
            Path(f"/tmp/seaweedfs-{kind}{suffix}-{port}.sock").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """One SeaweedFS S3 server for the session (bucket S3_BUCKET); tests use their own prefix."""
    root = Path(tempfile.mkdtemp(prefix="anna-run-weed-"))  # short: unix socket paths are limited
    server = SeaweedFS(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def own_seaweedfs() -> Iterator[SeaweedFS]:
    """A SeaweedFS of the test's own, to stop and start (outages) without disturbing the others."""
    root = Path(tempfile.mkdtemp(prefix="anna-run-weed-"))
    server = SeaweedFS(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


class S3Env(Env):
    """An Env whose store is s3://S3_BUCKET/<prefix of this test> on a SeaweedFS server; the
    local spool lives in the test's own XDG_CACHE_HOME."""

    def __init__(self, root: Path, server: SeaweedFS, prefix: str, cache: Path) -> None:
        super().__init__(root, cache / "unused-store")
        self.server = server
        self.prefix = prefix
        self.url = f"s3://{S3_BUCKET}/{prefix}"
        self.cache = cache

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in super().environ().items() if not k.startswith("AWS_")}
        env.update(self.server.environ())
        env.update(ANNA_RUN_STORE=self.url, XDG_CACHE_HOME=str(self.cache), ANNA_RUN_S3_RETRIES="2")
        env.update(extra)
        return env

    def spool(self) -> Path:
        from anna_run.store.spool import spool_root

        return spool_root(self.server.endpoint, S3_BUCKET, self.prefix, cache_home=self.cache)

    def records(self) -> list[dict]:
        """The records still in the local spool (runs going on, or not uploaded yet)."""
        return [json.loads(p.read_text()) for p in sorted((self.spool() / "runs").glob("*/run.json"))]

    def run_dir(self, run_id: str) -> Path:
        raise AssertionError("an S3 run has no folder of its own: read it with the commands")

    def keys(self, under: str = "") -> list[str]:
        prefix = f"{self.prefix}/{under}"
        return sorted(o.object_name for o in self.server.client().list_objects(S3_BUCKET, prefix, recursive=True))


@pytest.fixture
def s3_env(seaweedfs: SeaweedFS, tmp_path: Path, request: pytest.FixtureRequest) -> S3Env:
    import uuid

    prefix = f"t/{request.node.name[:40].strip('[]').replace('[', '-')}-{uuid.uuid4().hex[:8]}"
    prefix = "".join(c if c.isalnum() or c in "-/_" else "-" for c in prefix)
    return S3Env(tmp_path / "project", seaweedfs, prefix, tmp_path / "cache")


@pytest.fixture
def make_s3_store(seaweedfs: SeaweedFS, tmp_path: Path):
    """In-process S3Store objects on the session server, each on a fresh prefix and spool."""
    import uuid

    from anna_run.store.s3 import S3Store
    from anna_run.store.s3_config import S3Config

    def make(server: SeaweedFS | None = None, prefix: str | None = None, **config: object) -> S3Store:
        server = server or seaweedfs
        prefix = prefix or f"u/{uuid.uuid4().hex[:12]}"
        fields: dict = {
            "endpoint": server.endpoint.removeprefix("http://"),
            "secure": False,
            "access_key": S3_ACCESS_KEY,
            "secret_key": S3_SECRET_KEY,
            "attempts": 3,
        }
        fields.update(config)
        spool = tmp_path / "spool" / uuid.uuid4().hex[:8]  # a spool of its own: another host
        store = S3Store(S3_BUCKET, prefix, S3Config(**fields), spool)
        store.bucket.backoff = 0.05
        return store

    return make


# -- Redis: the runner hosts' broker ------------------------------------------------------------------


class RedisServer:
    """Debian's `redis-server` on 127.0.0.1 and a free port, its log in ``root``; stopped by the
    PID we started. No persistence, unless ``appendonly`` (AOF in ``root``): then ``stop()`` and
    ``start()`` again are a restart on the same port that keeps the data."""

    def __init__(self, root: Path, appendonly: bool = False) -> None:
        self.root = root
        self.port = 0
        self.appendonly = appendonly
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=30)

    def start(self, timeout: float = 20) -> None:
        import time

        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)", pytrace=False)
        self.port = self.port or _free_ports(1)[0]
        log = self.root / "redis.log"
        aof = "yes" if self.appendonly else "no"
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", aof]
        args += ["--daemonize", "no", "--dir", str(self.root), "--logfile", str(log)]
        self.proc = subprocess.Popen(
            [binary, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if self.client().ping():
                    return
            except Exception:
                time.sleep(0.05)
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        self.stop()
        pytest.fail(f"redis-server did not start:\n{tail}", pytrace=False)

    def stop(self) -> None:
        import signal

        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    root = Path(tempfile.mkdtemp(prefix="anna-run-redis-"))
    server = RedisServer(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test (a test's workers are gone by its teardown)."""
    redis_server.client().flushall()
    return redis_server.url


def write_sdist(path) -> None:
    """A tiny source distribution: pip must build a wheel from it (and caches that wheel)."""
    import io
    import tarfile

    files = {
        "slowpkg-1.0/setup.py": (
            'from setuptools import setup\nsetup(name="slowpkg", version="1.0", packages=["slowpkg"])\n'
        ),
        "slowpkg-1.0/PKG-INFO": "Metadata-Version: 1.0\nName: slowpkg\nVersion: 1.0\n",
        "slowpkg-1.0/slowpkg/__init__.py": "VALUE = 1\n",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))


# -- schedules -------------------------------------------------------------------------------------
EVERY_MINUTE = """
    environment: {image: anna-run/busybox:latest}
    tick:
      job: ["echo tick $AA_JOB_NAME"]
      network: none
      schedule: "* * * * *"
"""


def scheduled_success(env: Env, services: list[subprocess.Popen], within: float = 75) -> tuple[dict | None, list]:
    """Wait at most ``within`` s for a run with ``"trigger": "schedule"`` to succeed, then stop the
    ``services`` (schedulers, beats) with SIGTERM: (that run or None, their (stdout, stderr))."""
    started = time.monotonic()
    run = None
    try:
        while time.monotonic() - started < within:
            done = [r for r in env.records() if r.get("trigger") == "schedule" and r["status"] == "succeeded"]
            if done:
                run = done[0]
                break
            time.sleep(0.5)
    finally:
        for proc in services:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=60) for proc in services]
    return run, outputs


def assert_claimed_once(env: Env, entry_id: str) -> list[str]:
    """Every scheduled run was started by a claimed fire time, one claim per entry and time;
    returns the started runs' ids."""
    folder = env.store / "schedules" / "fires" / entry_id
    fires = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    started = [f["run"] for f in fires if f["outcome"] == "started"]
    runs = [r["id"] for r in env.records() if r.get("trigger") == "schedule"]
    assert sorted(runs) == sorted(started) and len(set(started)) == len(started)
    return started
