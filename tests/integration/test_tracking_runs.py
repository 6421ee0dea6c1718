"""Tracking on the real engine (SPEC §7): a job appends JSON lines to $ANNA_RUN_METRICS and
$ANNA_RUN_VARIABLES; whatever way the run ends, they are stored with it and summed up in its
record, masked, bounded; `metrics`, `runs --metric` and `compare` show them."""

from __future__ import annotations

import json
import signal
import time

import pytest
from test_ends import _wait_for_container

BB = "anna-run/busybox:latest"
CODE_LABEL = "io.anna-run.code"

# The job's lines come from shell scripts in the project: no quoting through YAML.
TRACK_SH = """\
test -f "$ANNA_RUN_METRICS" && test -w "$ANNA_RUN_METRICS" && test -w "$ANNA_RUN_VARIABLES" && echo writable
for v in 0.5 0.75 0.7; do echo "{\\"name\\": \\"accuracy\\", \\"value\\": $v, \\"label\\": {\\"fold\\": 1}}" >> "$ANNA_RUN_METRICS"; done
echo '{"loss": 0.25, "stage": "done"}' >> "$ANNA_RUN_METRICS"
echo '{"name": "model", "value": "tree"}' >> "$ANNA_RUN_VARIABLES"
"""  # noqa: E501


def _job(env, script: str, *commands: str, image: str = BB, extra: str = "") -> None:
    listed = ", ".join(json.dumps(c) for c in ("sh job.sh", *commands))
    env.project(f"environment: {{image: {image}}}\n{extra}t: {{job: [{listed}]}}\n", {"job.sh": script})


def _project(env, last: str = "true", image: str = BB) -> None:
    _job(env, TRACK_SH, last, image=image)


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_tracked(env, record: dict) -> None:
    assert record["metrics"] == {
        "accuracy": {"last": 0.7, "min": 0.5, "max": 0.75, "count": 3},
        "loss": {"last": 0.25, "min": 0.25, "max": 0.25, "count": 1},
        "stage": {"last": "done", "count": 1},
    }
    assert record["tracked"] == {"model": "tree"}
    run_dir = env.run_dir(record["id"])
    assert _jsonl(run_dir / "metrics.jsonl")[0] == {"name": "accuracy", "value": 0.5, "label": {"fold": 1}}
    assert _jsonl(run_dir / "variables.jsonl") == [{"name": "model", "value": "tree"}]


def test_tracked_on_success(env, busybox):
    _project(env)
    res = env.run("t", "--network", "none")
    assert res.returncode == 0, res.output
    assert "writable" in res.stdout
    record = env.last()
    assert record["status"] == "succeeded" and record["warnings"] == []
    _assert_tracked(env, record)


def test_tracked_on_failure_and_the_status_is_the_jobs(env, busybox):
    _project(env, last="exit 3")
    res = env.run("t", "--network", "none")
    assert res.returncode == 3, res.output
    record = env.last()
    assert record["status"] == "failed" and record["exit_code"] == 3
    _assert_tracked(env, record)


def test_tracked_on_timeout(env, busybox):
    _project(env, last="sleep 30")
    res = env.run("t", "--network", "none", "--timeout", "2s", ANNA_RUN_GRACE="1")
    assert res.returncode == 124, res.output
    record = env.last()
    assert record["status"] == "timeout"
    _assert_tracked(env, record)


# Every way the container is filled: root with the code copied (and with a script too long for
# an argument, which travels as a file), root and non-root from a code image, non-root copied.
@pytest.mark.parametrize(
    ("user", "cache_min_kb", "long_script"),
    [
        ("", "100000", False),
        ("", "100000", True),
        ("", "0", False),
        ("1000:1000", "100000", False),
        ("1000:1000", "0", False),
    ],
    ids=["root-copy", "root-script-file", "root-code-image", "user-copy", "user-code-image"],
)
def test_the_files_are_there_and_writable_for_any_user(env, busybox, api, user, cache_min_kb, long_script):
    last = "id -u" if not long_script else "id -u # " + "x" * 120_000
    _project(env, last=last)
    args = ["--user", user] if user else []
    res = env.run("t", "--network", "none", *args, ANNA_RUN_CODE_CACHE_MIN_KB=cache_min_kb)
    record = env.last()
    try:
        assert res.returncode == 0, res.output
        assert "writable" in res.stdout and ("1000" if user else "0") in res.stdout.splitlines()
        _assert_tracked(env, record)
    finally:
        sha256 = record["package"]["sha256"]
        for image in api.images(filters={"label": f"{CODE_LABEL}.package={sha256}"}):
            api.remove_image(image["Id"], force=True)


def test_bad_lines_are_warnings_and_the_run_succeeds(env, busybox):
    script = """\
echo '{"a": 1}' >> $ANNA_RUN_METRICS; echo 'oops' >> $ANNA_RUN_METRICS
echo '{"name": "b"}' >> $ANNA_RUN_METRICS; echo '{"a": 2}' >> $ANNA_RUN_METRICS
echo '[1]' >> $ANNA_RUN_VARIABLES
"""
    _job(env, script)
    res = env.run("t", "--network", "none")
    assert res.returncode == 0, res.output
    record = env.last()
    assert record["status"] == "succeeded"
    assert record["metrics"] == {"a": {"last": 2, "min": 1, "max": 2, "count": 2}} and record["tracked"] == {}
    assert record["warnings"] == [
        "metrics.jsonl line 2: not JSON; ignored",
        "metrics.jsonl line 3: 'b' has no value; ignored",
        "variables.jsonl line 1: not a JSON object; ignored",
    ]
    assert "metrics.jsonl line 2: not JSON" in res.stderr


def test_the_cap_cuts_and_says_so(env, busybox):
    script = 'i=0; while [ $i -lt 50 ]; do echo "{\\"step\\": $i}" >> $ANNA_RUN_METRICS; i=$((i+1)); done\n'
    _job(env, script)
    res = env.run("t", "--network", "none", ANNA_RUN_TRACKING_MAX_LINES="10")
    assert res.returncode == 0, res.output
    record = env.last()
    assert record["status"] == "succeeded"
    assert record["metrics"] == {"step": {"last": 9, "min": 0, "max": 9, "count": 10}}
    assert record["warnings"] == ["metrics.jsonl cut at 10 lines: line 11 and after not kept"]
    assert len(_jsonl(env.run_dir(record["id"]) / "metrics.jsonl")) == 10


def test_secrets_are_masked_in_the_summary_and_the_stored_lines(env, busybox):
    secret = "hunter2-very-secret"
    script = """\
echo "{\\"name\\": \\"url\\", \\"value\\": \\"db://me:$PW@host\\"}" >> $ANNA_RUN_VARIABLES
echo '{"db_password": "plain", "epochs": 3}' >> $ANNA_RUN_VARIABLES
echo "{\\"name\\": \\"acc\\", \\"value\\": 1, \\"label\\": {\\"pw\\": \\"$PW\\"}}" >> $ANNA_RUN_METRICS
echo "{\\"note\\": \\"$PW\\"}" >> $ANNA_RUN_METRICS
"""
    _job(env, script)
    res = env.run("t", "--network", "none", "--secret", f"PW={secret}")
    assert res.returncode == 0, res.output
    record = env.last()
    assert record["tracked"] == {"url": "db://me:***@host", "db_password": "***", "epochs": 3}
    assert record["metrics"]["note"] == {"last": "***", "count": 1}
    run_dir = env.run_dir(record["id"])
    stored = (run_dir / "metrics.jsonl").read_text() + (run_dir / "variables.jsonl").read_text()
    assert secret not in stored and "plain" not in stored
    assert _jsonl(run_dir / "variables.jsonl")[1] == {"db_password": "***", "epochs": 3}
    assert secret not in json.dumps(record)


def test_metrics_runs_metric_and_compare(env, busybox):
    script = """\
echo "{\\"accuracy\\": $ACC, \\"loss\\": 0.5}" >> $ANNA_RUN_METRICS
echo '{"accuracy": 0.5}' >> $ANNA_RUN_METRICS
echo "{\\"name\\": \\"model\\", \\"value\\": \\"$MODEL\\"}" >> $ANNA_RUN_VARIABLES
mkdir -p out && echo "$MODEL" > out/r.txt
"""
    job = 't: {job: ["sh job.sh"], output: {result: out/r.txt}}'
    env.project(f"environment: {{image: {BB}}}\nvariables: {{MODEL: linear}}\n{job}\n", {"job.sh": script})
    assert env.run("t", "--network", "none", "--var", "ACC=0.9").returncode == 0
    first = env.last()
    assert env.run("t", "--network", "none", "--var", "ACC=0.7", "--var", "MODEL=tree").returncode == 0
    second = env.last()

    shown = env.run("metrics", first["id"])
    assert shown.returncode == 0, shown.output
    assert shown.stdout.splitlines()[:3] == [
        "METRIC    LAST  MIN  MAX  COUNT",
        "accuracy  0.5   0.5  0.9  2",
        "loss      0.5   0.5  0.5  1",
    ]
    assert "model     linear" in shown.stdout
    data = json.loads(env.run("metrics", second["id"], "--json").stdout)
    assert data["metrics"]["accuracy"] == {"last": 0.5, "min": 0.5, "max": 0.7, "count": 2}
    assert data["tracked"] == {"model": "tree"}

    listed = env.run("runs", "--metric", "loss", "--metric", "nope")
    assert listed.returncode == 0, listed.output
    header, *rows = listed.stdout.splitlines()
    assert header.split()[-2:] == ["loss", "nope"] and len(rows) == 2
    assert all(row.rstrip().endswith("0.5") for row in rows)
    listed_json = json.loads(env.run("runs", "--json", "--metric", "loss").stdout)
    assert [r["metric_last"] for r in listed_json] == [{"loss": 0.5}, {"loss": 0.5}]

    compared = env.run("compare", first["id"], second["id"])
    assert compared.returncode == 0, compared.output
    lines = compared.stdout.splitlines()
    assert lines[0].split() == [first["id"], second["id"]]
    assert any(line.startswith("*") and "MODEL" in line and "linear" in line and "tree" in line for line in lines)
    assert any(line.startswith(" ") and " image " in line for line in lines)  # same image: not marked
    assert any(line.startswith("*") and "accuracy" in line and "0.5 (0.5..0.9)" in line for line in lines)
    assert any(line.startswith("*") and "sha256" in line for line in lines)
    assert lines[-1] == "* differs"

    data = json.loads(env.run("compare", first["id"], second["id"], "--json").stdout)
    assert set(data) == {"runs", "settings", "variables", "tracked", "metrics", "result"}
    assert [r["id"] for r in data["runs"]] == [first["id"], second["id"]]
    assert data["variables"]["MODEL"] == {"values": ["linear", "tree"], "differs": True}
    assert data["tracked"]["model"] == {"values": ["linear", "tree"], "differs": True}
    assert data["metrics"]["loss"] == {"values": [{"last": 0.5, "min": 0.5, "max": 0.5}] * 2, "differs": False}
    assert data["metrics"]["accuracy"]["differs"] is True
    assert data["settings"]["image"]["differs"] is False
    shas = [first["result"]["sha256"], second["result"]["sha256"]]
    assert data["result"]["sha256"] == {"values": shas, "differs": True}

    one = env.run("compare", first["id"])
    assert one.returncode == 2 and "two or more" in one.stderr


def test_tracked_when_cancelled(env, busybox, api):
    _project(env, last="sleep 60")
    proc = env.popen("t", "--network", "none", ANNA_RUN_GRACE="2")
    try:
        _wait_for_container(api, env)
        time.sleep(2)  # the tracking lines are written in the first milliseconds
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    (record,) = env.records()
    assert record["status"] == "cancelled"
    _assert_tracked(env, record)


def test_an_s3_store_keeps_the_tracking_files_with_the_run(s3_env, busybox):
    _project(s3_env)
    res = s3_env.run("t", "--network", "none")
    assert res.returncode == 0, res.output
    record = s3_env.last()
    assert record["metrics"]["accuracy"]["last"] == 0.7 and record["tracked"] == {"model": "tree"}
    names = [key.rsplit("/", 1)[-1] for key in s3_env.keys(f"runs/{record['id']}/")]
    assert "metrics.jsonl" in names and "variables.jsonl" in names
    shown = json.loads(s3_env.run("metrics", record["id"], "--json").stdout)
    assert shown["tracked"] == {"model": "tree"}


def test_a_tracking_file_turned_into_a_symlink_is_not_followed(env, busybox):
    _job(env, 'rm "$ANNA_RUN_METRICS" && ln -s /etc/passwd "$ANNA_RUN_METRICS"\n')
    res = env.run("t", "--network", "none")
    assert res.returncode == 0, res.output
    record = env.last()
    assert record["status"] == "succeeded" and record["metrics"] == {}
    assert not (env.run_dir(record["id"]) / "metrics.jsonl").exists()
