"""Fixtures shared by the suite: the real engine, the test images, projects in tmp_path and a
real `anna-run` process to drive."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from anna_run.variables import suuid_from_digest

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


@pytest.fixture(scope="session")
def busybox(api) -> str:
    """A 2 MB shell-only image, built offline from Debian's busybox-static when missing."""
    from docker.errors import ImageNotFound

    try:
        api.inspect_image(BUSYBOX)
    except ImageNotFound:
        subprocess.run(["bash", str(REPO / "images/busybox/build.sh")], check=True)
    return BUSYBOX


@pytest.fixture(scope="session")
def python_image(api) -> str:
    from docker.errors import ImageNotFound

    try:
        api.inspect_image(PYTHON)
    except ImageNotFound:
        subprocess.run(["bash", str(REPO / "scripts/images.sh")], check=True)
    return PYTHON


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
