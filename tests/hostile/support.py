"""Helpers of the hostile suite: measured runs, interrupted runs, clean-error checks, tmpfs stores."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the shared conftest
from conftest import REPO, Env, Result

sys.path.insert(0, str(REPO))  # bench/: the one peak-RSS measure
from bench.rows import rss_measured

BB = "anna-run/busybox:latest"
PY = "anna-run/python:3.11"
MB = 1 << 20
RSS_LIMIT_MB = 150


@dataclass(frozen=True)
class Case:
    id: str
    exit: int


def output_lines(stdout: str) -> list[str]:
    """The job's own output lines, without the `$ command` echo lines."""
    return [line for line in stdout.splitlines() if not line.startswith("$ ")]


# -- one clear error ---------------------------------------------------------------------------
def assert_error(res: Result, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one `anna-run: error:` line holding every needle, no traceback,
    no internal error. Returns the error line."""
    assert res.returncode == code, res.output[-3000:]
    assert "Traceback" not in res.output, res.output[-3000:]
    assert "internal error" not in res.stderr, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("anna-run: error:")]
    assert len(errors) == 1, res.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def assert_clean(res: Result, code: int) -> None:
    """A run that ended as it should: exit ``code``, no traceback, no internal error."""
    assert res.returncode == code, res.output[-3000:]
    assert "Traceback" not in res.output and "internal error" not in res.stderr, res.output[-3000:]


def run_ids(env: Env) -> list[str]:
    runs = env.store / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.exists() else []


def nothing_created(env: Env, ours: Callable[[], set[str]], before: set[str], runs_before: int = 0) -> None:
    """No container or volume of this project appeared, and no run was recorded."""
    assert ours() == before
    assert len(run_ids(env)) == runs_before


def leftovers(store: Path) -> list[Path]:
    """Half-written files: temporaries of atomic writes, packaging and collection."""
    if not store.exists():
        return []
    return [p for p in store.rglob("*") if p.name.startswith((".tmp-", ".anna-run-")) or p.name.endswith(".part")]


# -- measured runs ------------------------------------------------------------------------------
# A wrapper process runs anna-run and writes its peak RSS: RUSAGE_CHILDREN of the wrapper covers
# exactly the one anna-run process it waited for.
def run_measured(
    env: Env,
    *args: str,
    rss_file: Path,
    input: bytes | None = None,
    quiet_stdout: bool = False,
    timeout: float = 300,
    **extra: str,
) -> tuple[Result, float]:
    """``env.run`` with the peak RSS of the anna-run process in MB. ``quiet_stdout`` throws the
    job's output away instead of holding it in this process (for floods)."""
    proc = subprocess.run(
        rss_measured(env.cmd(*args), rss_file),
        cwd=env.root,
        env=env.environ(**extra),
        input=input,
        stdout=subprocess.DEVNULL if quiet_stdout else subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=timeout,
    )
    result = Result(
        proc.returncode,
        "" if quiet_stdout else proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
    return result, int(rss_file.read_text()) / 1024


# -- interrupted runs ---------------------------------------------------------------------------
@dataclass
class Interrupted:
    returncode: int
    stderr: str
    after_signal_s: float


def interrupt(
    env: Env,
    *args: str,
    when: Callable[[list[str]], bool],
    sig: int = signal.SIGINT,
    timeout: float = 120,
    **extra: str,
) -> Interrupted:
    """Start `anna-run ARGS`, send ``sig`` as soon as ``when(stderr lines so far)`` holds (it is
    also asked every 20 ms, for conditions on the store), and wait for the end."""
    proc = subprocess.Popen(
        env.cmd(*args),
        cwd=env.root,
        env=env.environ(**extra),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.decode(errors="replace") for line in proc.stderr))
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not when(list(lines)):
            assert proc.poll() is None, "anna-run ended before the moment to interrupt it:\n" + "".join(lines)
            assert time.monotonic() < deadline, "the moment to interrupt never came:\n" + "".join(lines)
            time.sleep(0.02)
        proc.send_signal(sig)
        sent = time.monotonic()
        proc.wait(timeout)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
    return Interrupted(proc.returncode, "".join(lines), took)


def line_seen(text: str, then_wait: float = 0.0) -> Callable[[list[str]], bool]:
    """True ``then_wait`` seconds after a stderr line ``text`` came (the job's own output)."""
    seen: list[float] = []

    def when(lines: list[str]) -> bool:
        if not seen and f"{text}\n" in lines:
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= then_wait

    return when


def step_started(step: str) -> Callable[[list[str]], bool]:
    """True once the plain reporter said the step began (`anna-run: copy: ...`)."""
    return lambda lines: any(line.startswith(f"anna-run: {step}:") for line in lines)


# -- root-only faults ---------------------------------------------------------------------------
def need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("mounting a tmpfs for the store needs root, and CI runs as root", pytrace=False)
        pytest.skip("mounting a tmpfs for the store needs root (CI runs as root)")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` for the test's life; always unmounted."""
    need_root()
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


# -- the engine going away ----------------------------------------------------------------------
def engine_proxy_class() -> type:
    """The cuttable unix-socket proxy of tests/integration/test_ends.py (one proxy, one place)."""
    path = REPO / "tests" / "integration" / "test_ends.py"
    spec = importlib.util.spec_from_file_location("_anna_run_test_ends", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EngineProxy


def engine_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert host.startswith("unix://"), "the engine-loss cases proxy a local unix socket"
    return host[len("unix://") :]


def wait_for_container(api, run_filter: dict, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = api.containers(filters={**run_filter, "status": "running"})
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no running container for {run_filter}")
