"""The ends of a run: timeout, out of memory, Ctrl-C, the engine going away, a killed runner."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

from conftest import project_label

BB = "anna-run/busybox:latest"


def _wait_for_container(api, env, timeout: float = 30) -> dict:
    """The running container of this test's project (others may share the engine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = api.containers(filters={"label": project_label(env.root), "status": "running"})
        if running:
            return running[0]
        time.sleep(0.1)
    raise AssertionError("no anna-run container started")


def test_timeout_ends_a_job_that_ignores_sigterm(env, busybox, api):
    env.project(f"""
        environment: {{image: {BB}}}
        slow:
          job: ["trap '' TERM; echo started; sleep 30 & wait; sleep 30"]
          timeout: 1s
        """)
    start = time.monotonic()
    res = env.run("slow", "--network", "none", ANNA_RUN_GRACE="1")
    took = time.monotonic() - start
    assert res.returncode == 124, res.output
    rec = env.last()
    assert rec["status"] == "timeout" and "timed out" in rec["reason"]
    assert took < 20, took
    assert not api.containers(all=True, filters={"label": f"io.anna-run.run={rec['id']}"})


def test_timeout_flag_overrides_the_job(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        slow: {{job: [sleep 30], timeout: 1h}}
        """)
    res = env.run("slow", "--network", "none", "--timeout", "1s", ANNA_RUN_GRACE="1")
    assert res.returncode == 124 and env.last()["status"] == "timeout"


def test_out_of_memory_is_failed_oom(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        hog:
          job: ['x=$(head -c 200000000 /dev/zero | tr "\\\\0" a); echo survived']
          resources: {{memory: 32m}}
        """)
    res = env.run("hog", "--network", "none")
    rec = env.last()
    assert rec["status"] == "failed" and rec["reason"] == "oom", res.output
    assert res.returncode == rec["exit_code"] != 0


def test_ctrl_c_cancels_and_removes_the_container(env, busybox, api):
    env.project(f"""
        environment: {{image: {BB}}}
        wait: {{job: [echo started && sleep 60]}}
        """)
    proc = env.popen("wait", "--network", "none", ANNA_RUN_GRACE="2")
    try:
        container = _wait_for_container(api, env)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    rec = env.records()[0]
    assert rec["status"] == "cancelled"
    assert not api.containers(all=True, filters={"id": container["Id"]})
    assert b"Traceback" not in err


def test_second_ctrl_c_forces(env, busybox, api):
    env.project(f"""
        environment: {{image: {BB}}}
        stubborn: {{job: ["trap '' TERM INT; sleep 60 & wait; sleep 60"]}}
        """)
    proc = env.popen("stubborn", "--network", "none", ANNA_RUN_GRACE="30")
    try:
        _wait_for_container(api, env)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=25)
        took = time.monotonic() - start
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert took < 15
    assert env.records()[0]["status"] == "cancelled"


class EngineProxy:
    """A unix-socket proxy in front of the real engine that the test can cut mid-run."""

    def __init__(self, path: Path, upstream: str) -> None:
        self.path, self.upstream = path, upstream
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(16)
        self.conns: list[socket.socket] = []
        self.cut = False
        self.sent = 0  # bytes from the clients to the engine
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.upstream)
            self.conns += [client, upstream]
            for a, b, counted in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, counted), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, counted: bool = False) -> None:
        try:
            while data := a.recv(65536):
                if counted:
                    self.sent += len(data)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.cut = True
        with contextlib.suppress(OSError):  # shutdown wakes the blocked accept(): new connections are refused
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass


def test_engine_lost_mid_run(env, busybox, api, tmp_path):
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert host.startswith("unix://"), "this test proxies a local unix socket"
    proxy = EngineProxy(tmp_path / "engine.sock", host[len("unix://") :])
    env.project(f"""
        environment: {{image: {BB}}}
        long: {{job: [echo started && sleep 60]}}
        """)
    proc = env.popen("long", "--network", "none", DOCKER_HOST=f"unix://{tmp_path / 'engine.sock'}")
    try:
        container = _wait_for_container(api, env)
        time.sleep(0.5)
        proxy.close()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        for c in api.containers(all=True, filters={"label": "io.anna-run.run"}):
            if c["Id"] == container["Id"]:
                api.remove_container(c["Id"], force=True)
    assert proc.returncode == 125, err.decode()
    assert b"Traceback" not in err and b"engine" in err
    rec = env.records()[0]
    assert rec["status"] == "failed" and rec["reason"].startswith("engine:")


def test_killed_runner_is_noticed_and_gc_removes_its_container(env, busybox, api):
    env.project(f"""
        environment: {{image: {BB}}}
        long: {{job: [sleep 120]}}
        """)
    proc = env.popen("long", "--network", "none")
    container = _wait_for_container(api, env)
    proc.kill()  # SIGKILL: no clean-up at all
    proc.wait(10)
    rec = env.records()[0]
    assert rec["status"] == "running"
    # The next command notices the orphaned run.
    noticed = json.loads(env.run("runs", "--json").stdout)[0]
    assert noticed["status"] == "failed" and noticed["reason"] == "runner lost"
    # Someone else's container without our labels must survive gc.
    other = api.create_container(BB, command=["sleep", "1"], labels={"not-ours": "1"})["Id"]
    try:
        dry = env.run("gc", "--dry-run", "--json")
        assert any(item["run"] == rec["id"] for item in json.loads(dry.stdout))
        assert api.containers(all=True, filters={"id": container["Id"]})
        res = env.run("gc")
        assert res.returncode == 0 and rec["id"] in res.stdout
        assert not api.containers(all=True, filters={"id": container["Id"]})
        assert api.containers(all=True, filters={"id": other})
    finally:
        api.remove_container(other, force=True)
    shown = env.run("show", rec["id"], "--json")
    lost = json.loads(shown.stdout)
    assert lost["status"] == "failed" and lost["reason"] == "runner lost"


def test_timeout_holds_when_the_job_closes_its_output(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        quiet: {{job: ['exec >/dev/null 2>&1; sleep 30'], timeout: 2s}}
        """)
    start = time.monotonic()
    res = env.run("quiet", "--network", "none", ANNA_RUN_GRACE="1")
    assert res.returncode == 124 and time.monotonic() - start < 15, res.output
    assert env.last()["status"] == "timeout"
