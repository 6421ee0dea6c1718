"""Reading commands, the local store and several anna-run processes at once."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time

BB = "anna-run/busybox:latest"


def _project(env):
    return env.project(f"""
        environment: {{image: {BB}}}
        ok:
          job: ['echo "line one"', 'mkdir -p out && echo 42 > out/r.txt']
          output: {{result: out/r.txt}}
        bad: {{job: [exit 3]}}
        """)


def test_runs_show_logs_result_json(env, busybox):
    _project(env)
    assert env.run("ok", "--network", "none", "--name", "first", "--description", "a try").returncode == 0
    assert env.run("bad", "--network", "none").returncode == 3
    runs = json.loads(env.run("runs", "--json").stdout)
    assert [r["job"] for r in runs] == ["bad", "ok"]  # newest first
    assert runs[1]["name"] == "first" and runs[1]["description"] == "a try"
    assert [r["job"] for r in json.loads(env.run("runs", "--json", "--status", "failed").stdout)] == ["bad"]
    assert [r["job"] for r in json.loads(env.run("runs", "--json", "--job", "ok").stdout)] == ["ok"]
    table = env.run("runs").stdout
    assert "ID" in table and runs[0]["id"] in table
    ok_id = runs[1]["id"]
    shown = json.loads(env.run("show", ok_id[:9], "--json").stdout)
    assert shown["id"] == ok_id
    assert "line one" in env.run("logs", ok_id).stdout
    assert env.run("logs", ok_id, "--stream", "stderr").stdout == ""
    assert env.run("result", ok_id).stdout == "42\n"
    out_file = env.root.parent / "r.txt"
    assert env.run("result", ok_id, "-o", str(out_file)).returncode == 0
    assert out_file.read_text() == "42\n"
    missing = env.run("show", "zzzz-nope")
    assert missing.returncode == 1 and "no run" in missing.stderr
    assert env.run("result", runs[0]["id"]).returncode == 1


def test_project_found_upward_and_by_flag(env, busybox, tmp_path):
    _project(env)
    sub = env.root / "deep" / "er"
    sub.mkdir(parents=True)
    assert env.run("ok", "--network", "none", cwd=sub).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert env.run("ok", "--network", "none", "--project", str(env.root), cwd=elsewhere).returncode == 0
    assert len(json.loads(env.run("runs", "--json", cwd=sub).stdout)) == 2
    assert env.run("runs", "--json", cwd=elsewhere).returncode == 0


def test_job_named_like_a_command(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        logs: {{job: [echo from-logs-job]}}
        """)
    res = env.run("run", "logs", "--network", "none")
    assert res.returncode == 0 and "from-logs-job" in res.stdout


def test_logs_follow_shows_lines_while_running(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        slow: {{job: ['echo first-line; sleep 3; echo last-line']}}
        """)
    proc = env.popen("slow", "--network", "none")
    try:
        deadline = time.monotonic() + 20
        while not env.records() and time.monotonic() < deadline:
            time.sleep(0.1)
        follower = subprocess.Popen(
            env.cmd("logs", "-f"), cwd=env.root, env=env.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        while (line := follower.stdout.readline()) and line != b"first-line\n":
            pass
        assert line == b"first-line\n"
        assert proc.poll() is None  # the run is still going
        rest, _ = follower.communicate(timeout=30)
        assert b"last-line" in rest and follower.returncode == 0
    finally:
        proc.wait(30)


def test_stored_log_is_capped_with_a_note(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        flood: {{job: ['yes 0123456789abcdef | head -c 3000000']}}
        """)
    res = env.run("flood", "--network", "none", "-q", ANNA_RUN_LOG_LIMIT="100000")
    assert res.returncode == 0
    rec = env.last()
    log = (env.run_dir(rec["id"]) / "log.txt").read_text()
    assert rec["log_truncated"] is True and len(log) < 101_000 and "log truncated" in log


def test_parallel_runs_into_one_store(env, busybox):
    _project(env)
    procs = [env.popen("ok", "--network", "none") for _ in range(6)]
    codes = [p.wait(120) for p in procs]
    assert codes == [0] * 6
    runs = json.loads(env.run("runs", "--json").stdout)
    assert len(runs) == 6 and len({r["id"] for r in runs}) == 6
    assert all(r["status"] == "succeeded" for r in runs)


def test_index_rebuilds_from_records(env, busybox):
    _project(env)
    assert env.run("ok", "--network", "none").returncode == 0
    (env.store / "index.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (env.store / f"index.sqlite{suffix}").unlink(missing_ok=True)
    assert len(json.loads(env.run("runs", "--json").stdout)) == 1
    db = sqlite3.connect(env.store / "index.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    res = env.run("runs", "--reindex")
    assert res.returncode == 0 and "reindexed 1" in res.stderr


def test_detach_returns_at_once_and_the_run_completes(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        bg: {{job: ['sleep 1; echo "x=$X"']}}
        """)
    start = time.monotonic()
    res = env.run("bg", "--detach", "--payload", "-", "--network", "none", input='{"X": "from-stdin"}')
    assert res.returncode == 0, res.output
    assert time.monotonic() - start < 5
    run_id = res.stdout.strip()
    assert json.loads(env.run("show", run_id, "--json").stdout)["status"] in ("queued", "running")
    follow = env.run("logs", "-f", run_id, timeout=60)
    assert "x=from-stdin" in follow.stdout
    assert json.loads(env.run("show", run_id, "--json").stdout)["status"] == "succeeded"


def test_detach_still_validates(env, ours):
    env.project(f"""
        environment: {{image: {BB}}}
        bg: {{job: ['echo {{{{ MISSING }}}}']}}
        """)
    before = ours()
    res = env.run("bg", "--detach")
    assert res.returncode == 2 and "MISSING" in res.stderr and res.stdout == ""
    assert ours() == before


def test_store_inside_the_project_is_never_packaged(env, busybox, tmp_path):
    _project(env)
    inner = env.root / ".anna-store"
    first = env.run("ok", "--network", "none", ANNA_RUN_STORE=str(inner))
    second = env.run("ok", "--network", "none", ANNA_RUN_STORE=str(inner))
    assert first.returncode == 0 and second.returncode == 0
    records = [json.loads(p.read_text()) for p in (inner / "runs").glob("*/run.json")]
    assert len({r["package"]["sha256"] for r in records}) == 1  # the store did not leak into the package


def test_default_store_follows_xdg_data_home(env, busybox, tmp_path):
    _project(env)
    xdg = tmp_path / "xdg"
    environ = env.environ(XDG_DATA_HOME=str(xdg))
    environ.pop("ANNA_RUN_STORE")
    proc = subprocess.run(env.cmd("ok", "--network", "none"), cwd=env.root, env=environ, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert len(list((xdg / "anna-run" / "runs").glob("*/run.json"))) == 1


def test_timezone_job_beats_global(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        timezone: Europe/Amsterdam
        here: {{job: ['echo "tz=$TZ"']}}
        there: {{job: ['echo "tz=$TZ"'], timezone: Asia/Tokyo}}
        """)
    assert "tz=Europe/Amsterdam" in env.run("here", "--network", "none").stdout
    assert env.last()["settings"]["timezone"] == "Europe/Amsterdam"
    assert "tz=Asia/Tokyo" in env.run("there", "--network", "none").stdout


def _run_in_pty(env, *args: str, **extra: str) -> bytes:
    import os
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: anna-run with a terminal on stdout and stderr
        os.chdir(env.root)
        os.execve(env.cmd()[0], env.cmd(*args), env.environ(TERM="xterm-256color", COLUMNS="100", **extra))
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    return b"".join(chunks)


def test_progress_on_a_terminal_and_plain_with_no_color(env, busybox):
    _project(env)
    (env.root / "big.bin").write_bytes(os.urandom(24 << 20))  # big enough for a progress bar
    environ = env.environ()
    environ.pop("NO_COLOR")
    env.environ = lambda **extra: {**environ, **extra}  # type: ignore[method-assign]
    rich = _run_in_pty(env, "ok", "--network", "none")
    assert b"\x1b[" in rich and b"succeeded" in rich
    plain = _run_in_pty(env, "ok", "--network", "none", NO_COLOR="1")
    assert b"succeeded" in plain and b"\x1b[" not in plain


def test_shell_completion_is_offered(env):
    res = env.run("--show-completion", "bash", cwd=env.root.parent)
    assert res.returncode == 0 and "complete" in res.stdout


def test_validate_warns_and_strict_refuses(env):
    env.project("""
        a:
          job: [echo a]
          colour: blue
          schedule: [{hour: 5, day: 5, month: 5}, {hour: 8, century: 2}, 'some rubbish, no cron']
        b: {job: [echo b]}
        """)
    plain = env.run("validate")
    assert plain.returncode == 0, plain.stderr
    warnings = [line for line in plain.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 3, plain.stderr
    assert "unknown key 'colour'" in warnings[0] and "askanna.yml:4:3:" in warnings[0]
    assert "'century'" in warnings[1] and "askanna.yml:5:53:" in warnings[1]
    assert "'some rubbish, no cron'" in warnings[2]
    assert "2 job(s): a, b" in plain.stdout
    strict = env.run("validate", "--strict")
    assert strict.returncode == 2
    assert "--strict: 3 warnings" in strict.stderr and "Traceback" not in strict.stderr
    as_json = env.run("validate", "--strict", "--json")
    assert as_json.returncode == 2 and len(json.loads(as_json.stdout)["warnings"]) == 3
    jobs = json.loads(env.run("jobs", "--json").stdout)
    assert jobs[0]["schedule"] == ["0 5 5 5 *"]


def test_validate_strict_passes_a_clean_file(env):
    env.project("""
        a: {job: [echo a], schedule: ['@daily']}
        """)
    res = env.run("validate", "--strict")
    assert res.returncode == 0 and "warning" not in res.stderr


def test_unknown_job_key_alone_fails_strict(env):
    env.project("""
        a: {job: [echo a], colour: blue}
        """)
    assert env.run("validate").returncode == 0
    assert env.run("validate", "--strict").returncode == 2
