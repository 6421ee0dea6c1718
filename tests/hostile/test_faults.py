"""Faults around a run: the engine, the store, the runner itself and the user pulling the plug."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time

import pytest
from anna_run.collect import BACKGROUND_MIN
from anna_run.fsio import TEMP_PREFIX
from conftest import project_label

from .support import (
    BB,
    assert_clean,
    assert_error,
    engine_proxy_class,
    engine_socket,
    interrupt,
    leftovers,
    line_seen,
    remount_read_only,
    run_ids,
    step_started,
    tmpfs,
    wait_for_container,
)

MB = 1 << 20


def _one_record(env) -> dict:
    [record] = env.records()
    return record


def _big_project(env, size: int = 300 << 20) -> None:
    """A project with a `size`-byte (sparse) data file: packaging and the copy in take a while."""
    env.project(f"""
        environment: {{image: {BB}}}
        slow:
          job: ['echo started >&2; sleep 60']
        """)
    with open(env.root / "data.bin", "wb") as f:
        f.truncate(size)


# -- the engine ---------------------------------------------------------------------------------
@pytest.mark.case("FA-01", exit=125)
def test_engine_stops_mid_run(env, busybox, api, case, tmp_path):
    proxy = engine_proxy_class()(tmp_path / "engine.sock", engine_socket())
    env.project(f"""
        environment: {{image: {BB}}}
        long: {{job: ['echo started; sleep 60']}}
        """)
    proc = env.popen("long", "--network", "none", DOCKER_HOST=f"unix://{tmp_path / 'engine.sock'}")
    try:
        container = wait_for_container(api, {"label": project_label(env.root)})
        time.sleep(0.5)
        proxy.close()
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    from conftest import Result

    res = Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
    assert_error(res, case.exit, "lost the job container")
    record = _one_record(env)
    assert record["status"] == "failed" and record["reason"].startswith("engine: lost the job container")
    # The container outlived the connection; `gc` (with the engine back) removes what is left.
    gc = env.run("gc", "--json")
    assert gc.returncode == 0
    deadline = time.monotonic() + 30
    while api.containers(all=True, filters={"id": container["Id"]}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not api.containers(all=True, filters={"id": container["Id"]})


@pytest.mark.case("FA-02", exit=125)
def test_no_engine_at_start(env, ours, case):
    env.project(f"""
        environment: {{image: {BB}}}
        train: {{job: [echo hi]}}
        """)
    before = ours()
    res = env.run("train", "--network", "none", DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert_error(res, case.exit, "no container engine answers")
    assert "hint: start Docker" in res.stderr
    assert not env.store.exists() and ours() == before


# -- the store ----------------------------------------------------------------------------------
@pytest.mark.case("FA-03", exit=125)
def test_store_full_while_packaging(env, busybox, ours, case):
    env.project(f"""
        environment: {{image: {BB}}}
        train: {{job: [echo hi]}}
        """)
    (env.root / "data.bin").write_bytes(os.urandom(3 << 20))
    before = ours()
    with tmpfs(env.store, "1m"):
        res = env.run("train", "--network", "none")
        assert_error(res, case.exit, "cannot write package", "No space left on device")
        assert leftovers(env.store) == [] and run_ids(env) == []
        assert list((env.store / "packages").iterdir()) == []
    assert ours() == before


@pytest.mark.case("FA-04", exit=125)
def test_store_full_while_writing_the_log(env, busybox, ours, case):
    env.project(f"""
        environment: {{image: {BB}}}
        chatty: {{job: ['head -c 6000000 /dev/zero | tr "\\0" a; echo; echo job-done']}}
        """)
    before = ours()
    with tmpfs(env.store, "2m"):
        res = env.run("chatty", "--network", "none")
        assert_error(res, case.exit, "cannot write the run's log", "No space left on device")
        assert "job-done" in res.stdout  # the live output went on
        record = _one_record(env)
        assert record["status"] == "failed" and record["reason"].startswith("cannot write the run's log")
        assert leftovers(env.store) == []
    assert ours() == before


@pytest.mark.case("FA-05", exit=125)
@pytest.mark.parametrize("big_mb", [4, 12], ids=["written-inline", "written-in-background"])
def test_store_full_while_collecting(env, busybox, ours, case, big_mb):
    # Files from 8 MB are written and hashed in a thread while the next chunk arrives.
    assert big_mb * MB < BACKGROUND_MIN if big_mb == 4 else big_mb * MB >= BACKGROUND_MIN
    env.project(f"""
        environment: {{image: {BB}}}
        art:
          job: ['mkdir out && echo a > out/a.txt && head -c {big_mb}m /dev/urandom > out/big.bin && echo z > out/z.txt']
          output: {{result: out/a.txt, artifact: [out/]}}
        """)
    before = ours()
    with tmpfs(env.store, "2m"):
        res = env.run("art", "--network", "none")
        assert_error(res, case.exit, "cannot write the run's outputs", "No space left on device")
        record = _one_record(env)
        assert record["status"] == "failed" and record["reason"].startswith("cannot write the run's outputs")
        assert record["result"] is None and record["artifacts"] == []
        run_dir = env.run_dir(record["id"])
        assert not (run_dir / "artifacts").exists() and not (run_dir / "result").exists()  # all or nothing
        assert leftovers(env.store) == []
    assert ours() == before


@pytest.mark.case("FA-06", exit=125)
def test_store_read_only(env, busybox, ours, case):
    env.project(f"""
        environment: {{image: {BB}}}
        train: {{job: [echo hi]}}
        """)
    before = ours()
    with tmpfs(env.store, "16m"):
        assert env.run("train", "--network", "none").returncode == 0
        (env.root / "changed.txt").write_text("a new package is needed")
        remount_read_only(env.store)
        res = env.run("train", "--network", "none")
        assert_error(res, case.exit, "cannot write", "Read-only file system")
        assert len(run_ids(env)) == 1 and leftovers(env.store) == []
    assert ours() == before


@pytest.mark.case("FA-07", exit=125)
def test_record_cannot_be_written(env, busybox, ours, case):
    env.project(f"""
        environment: {{image: {BB}}}
        train: {{job: [echo hi]}}
        """)
    before = ours()
    with tmpfs(env.store / "runs", "1m"):
        remount_read_only(env.store / "runs")
        res = env.run("train", "--network", "none")
        assert_error(res, case.exit, "cannot write the run record", "Read-only file system")
        assert run_ids(env) == [] and leftovers(env.store) == []
    assert ours() == before  # no record, so no container either


# -- the runner ---------------------------------------------------------------------------------
@pytest.mark.case("FA-08", exit=0)
def test_runner_killed_mid_run(env, busybox, api, case):
    env.project(f"""
        environment: {{image: {BB}}}
        long: {{job: [sleep 120]}}
        """)
    proc = env.popen("long", "--network", "none")
    container = wait_for_container(api, {"label": project_label(env.root)})
    proc.kill()  # SIGKILL: no clean-up at all
    proc.wait(10)
    assert _one_record(env)["status"] == "running"
    runs = env.run("runs", "--json")  # the next command notices
    assert_clean(runs, case.exit)
    [noticed] = json.loads(runs.stdout)
    assert noticed["status"] == "failed" and noticed["reason"] == "runner lost"
    assert _one_record(env)["status"] == "failed"  # recorded, not only shown
    gc = env.run("gc")
    assert_clean(gc, case.exit)
    assert noticed["id"] in gc.stdout
    assert not api.containers(all=True, filters={"id": container["Id"]})


@pytest.mark.case("FA-09", exit=0)
def test_ten_runs_into_one_store_at_once(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        ok:
          job: ['mkdir -p out && echo "$AA_RUN_SUUID" > out/id.txt']
          output: {{result: out/id.txt}}
        """)
    procs = [env.popen("ok", "--network", "none") for _ in range(10)]
    codes = [p.wait(240) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert codes == [case.exit] * 10
    records = env.records()
    assert len(records) == 10 and all(r["status"] == "succeeded" for r in records)
    for record in records:
        result = env.run_dir(record["id"]) / "result" / "out" / "id.txt"
        assert result.read_text() == record["id"] + "\n"
    listed = json.loads(env.run("runs", "--json").stdout)
    assert sorted(r["id"] for r in listed) == sorted(r["id"] for r in records)
    assert len(list((env.store / "packages").glob("*.tar"))) == 1  # one content, stored once
    assert leftovers(env.store) == []


# -- Ctrl-C, phase by phase ----------------------------------------------------------------------
def _cancelled_cleanly(env, ours, before, got, code) -> None:
    assert got.returncode == code, got.stderr[-3000:]
    assert "Traceback" not in got.stderr and "internal error" not in got.stderr
    errors = [line for line in got.stderr.splitlines() if line.startswith("anna-run: error:")]
    assert len(errors) == 1 and "cancelled" in errors[0], got.stderr[-3000:]
    assert got.after_signal_s < 30
    assert ours() == before
    assert leftovers(env.store) == []


@pytest.mark.case("FA-10", exit=130)
def test_ctrl_c_while_packaging(env, busybox, ours, case):
    _big_project(env)
    before = ours()
    got = interrupt(env, "slow", "--network", "none", when=step_started("package"))
    _cancelled_cleanly(env, ours, before, got, case.exit)
    assert "anna-run: copy:" not in got.stderr and "files," not in got.stderr  # it was packaging
    assert run_ids(env) == []  # before any record: nothing but blobs may exist
    assert list((env.store / "packages").glob("*.tar")) == []


@pytest.mark.case("FA-11", exit=130)
def test_ctrl_c_while_copying_in(env, busybox, ours, case):
    _big_project(env)
    before = ours()
    got = interrupt(env, "slow", "--network", "none", when=step_started("copy"))
    _cancelled_cleanly(env, ours, before, got, case.exit)
    assert "anna-run: run:" not in got.stderr  # it was copying
    record = _one_record(env)
    assert record["status"] == "cancelled" and record["reason"] == "cancelled by the user"


@pytest.mark.case("FA-12", exit=130)
def test_ctrl_c_while_running(env, busybox, ours, case):
    _big_project(env, size=1 << 20)
    before = ours()
    got = interrupt(env, "slow", "--network", "none", when=line_seen("started", then_wait=0.5), ANNA_RUN_GRACE="2")
    _cancelled_cleanly(env, ours, before, got, case.exit)
    record = _one_record(env)
    assert record["status"] == "cancelled" and record["commands"][0]["exit_code"] is not None


@pytest.mark.case("FA-13", exit=130)
def test_ctrl_c_while_collecting(env, busybox, ours, case):
    env.project(f"""
        environment: {{image: {BB}}}
        art:
          job: ['mkdir out && echo a > out/a.txt && dd if=/dev/zero of=out/big.bin bs=1M count=768 2>/dev/null']
          output: {{result: out/a.txt, artifact: [out/]}}
        """)
    before = ours()
    parts = str(env.store / "runs" / "*" / "artifacts" / "out" / f"{TEMP_PREFIX}*")  # a file half written
    got = interrupt(env, "art", "--network", "none", when=lambda lines: bool(glob.glob(parts)))
    _cancelled_cleanly(env, ours, before, got, case.exit)
    record = _one_record(env)
    assert record["status"] == "cancelled" and record["artifacts"] == []
    run_dir = env.run_dir(record["id"])
    assert not (run_dir / "artifacts").exists() and not (run_dir / "result").exists()


@pytest.mark.case("FA-14", exit=130)
def test_sigterm_is_a_cancel(env, busybox, ours, case):
    _big_project(env, size=1 << 20)
    before = ours()
    got = interrupt(env, "slow", "--network", "none", when=line_seen("started", then_wait=0.5), sig=signal.SIGTERM)
    _cancelled_cleanly(env, ours, before, got, case.exit)
    assert _one_record(env)["status"] == "cancelled"


@pytest.mark.case("FA-15", exit=0)
def test_reader_of_the_output_goes_away(env, busybox, case):
    """`anna-run job | head -1`: the job, its record and its stored log do not depend on our stdout."""
    env.project(f"""
        environment: {{image: {BB}}}
        lines: {{job: ['for i in $(seq 1 3000); do echo "line $i"; done; sleep 1; seq 1 3000; echo last-line']}}
        """)
    proc = subprocess.Popen(
        env.cmd("lines", "--network", "none"),
        cwd=env.root,
        env=env.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline()  # one line, then the reader leaves
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    stderr = err.decode(errors="replace")
    assert proc.returncode == case.exit, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    record = _one_record(env)
    assert record["status"] == "succeeded"
    assert (env.run_dir(record["id"]) / "log.txt").read_text().endswith("last-line\n")
