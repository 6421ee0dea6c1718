"""Hostile payloads: refused before anything with one message, or mounted whole as data."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import pytest

from .support import BB, PY, RSS_LIMIT_MB, assert_clean, assert_error, nothing_created, output_lines

SHOW = f"""
environment: {{image: {BB}}}
p:
  job:
    - 'echo "size=$(wc -c < {{{{ PAYLOAD_PATH }}}})"'
    - 'echo "sha=$(sha256sum {{{{ PAYLOAD_PATH }}}} | cut -d" " -f1)"'
    - env | cut -d= -f1 | sort > /tmp/names && echo "names=$(tr '\\n' , < /tmp/names)"
"""


def _user_names(record: dict) -> set[str]:
    return set(record["variables"])


def _mounted_whole(res, path: Path) -> None:
    data = path.read_bytes()
    lines = output_lines(res.stdout)
    assert f"size={len(data)}" in lines and f"sha={hashlib.sha256(data).hexdigest()}" in lines


def _stdin_copies() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("anna-run-payload-*")}


@pytest.mark.case("PL-01", exit=2)
def test_invalid_json(env, ours, case):
    env.project(SHOW)
    (env.root / "bad.json").write_text('{\n  "a": 1,\n  "b": [1, 2,, 3]\n}\n')
    before = ours()
    res = env.run("p", "--payload", "bad.json", "--network", "none")
    assert_error(res, case.exit, "bad.json is not valid JSON", "line 3")
    nothing_created(env, ours, before)
    assert not env.store.exists()


@pytest.mark.case("PL-02", exit=0)
def test_top_level_array_is_mounted_without_variables(env, busybox, case):
    env.project(SHOW)
    payload = env.root / "list.json"
    payload.write_text('[{"A": "not a variable"}, 2, "three"]')
    res = env.run("p", "--payload", "list.json", "--network", "none")
    assert_clean(res, case.exit)
    _mounted_whole(res, payload)
    assert _user_names(env.last()) == set() and "A," not in res.stdout


@pytest.mark.case("PL-03", exit=0)
def test_top_level_string_is_mounted_without_variables(env, busybox, case):
    env.project(SHOW)
    payload = env.root / "s.json"
    payload.write_text('"{\\"A\\": 1} is just a string"')
    res = env.run("p", "--payload", "s.json", "--network", "none")
    assert_clean(res, case.exit)
    _mounted_whole(res, payload)
    assert _user_names(env.last()) == set()


@pytest.mark.case("PL-04", exit=0)
def test_200_mb_payload_keeps_memory_bounded(env, busybox, case, tmp_path):
    from .support import run_measured

    env.project(SHOW)
    payload = tmp_path / "big.json"
    with open(payload, "w") as f:
        f.write('{"SMALL": "yes", "blob": "')
        chunk = "0123456789abcdef" * (1 << 16)  # 1 MiB
        for _ in range(200):
            f.write(chunk)
        f.write('", "list": [' + ",".join(["1"] * 100_000) + "]}")
    res, peak_mb = run_measured(env, "p", "--payload", str(payload), "--network", "none", rss_file=tmp_path / "rss")
    assert_clean(res, case.exit)
    print(f"PL-04 peak RSS of anna-run with a {payload.stat().st_size / 1e6:.0f} MB payload: {peak_mb:.0f} MB")
    assert peak_mb < RSS_LIMIT_MB
    _mounted_whole(res, payload)
    record = env.last()
    assert record["variables"] == {"SMALL": "yes"} and record["payload"]["size"] == payload.stat().st_size
    assert "'blob' and later keys are not variables" in res.stderr


@pytest.mark.case("PL-05", exit=0)
def test_keys_that_cannot_be_environment_names(env, busybox, case):
    env.project(SHOW)
    keys = {"": 1, "a=b": 2, "x" * 129: 3, "nul\u0000key": 4, "OK": "fine"}
    (env.root / "p.json").write_text(json.dumps(keys))
    res = env.run("p", "--payload", "p.json", "--network", "none")
    assert_clean(res, case.exit)
    assert _user_names(env.last()) == {"OK"}
    for problem in ("an empty name", 'a name with "="', "over 128", "a name with a NUL character"):
        assert any("is not a variable" in line and problem in line for line in res.stderr.splitlines()), problem
    assert "Traceback" not in res.output


@pytest.mark.case("PL-06", exit=0)
def test_nul_and_newlines_in_values(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        p: {{job: ['printf "[%s]\\n" "$MULTI" "$WITH_NUL" "$AFTER"']}}
        """)
    (env.root / "p.json").write_text(json.dumps({"MULTI": "one\ntwo\n\nthree", "WITH_NUL": "a\u0000b", "AFTER": "ok"}))
    res = env.run("p", "--payload", "p.json", "--network", "none")
    assert_clean(res, case.exit)
    assert "[one\ntwo\n\nthree]\n[]\n[ok]" in res.stdout
    assert "payload key 'WITH_NUL' is not a variable: an environment variable cannot hold a NUL character" in res.stderr
    assert env.last()["variables"] == {"MULTI": "one\ntwo\n\nthree", "AFTER": "ok"}


@pytest.mark.case("PL-07", exit=0)
def test_100_000_keys(env, busybox, case):
    env.project(SHOW)
    payload = env.root / "many.json"
    text = json.dumps({f"K{i:06d}": i for i in range(100_000)})
    payload.write_text(text)
    res = env.run("p", "--payload", "many.json", "--network", "none", timeout=60)
    assert_clean(res, case.exit)
    _mounted_whole(res, payload)
    # Only the entries that end within the first 10,000 characters become variables.
    within = {f"K{i:06d}" for i in range(2000) if text.index(f'"K{i:06d}": {i}') + len(f'"K{i:06d}": {i}') <= 10_000}
    assert _user_names(env.last()) == within and len(within) > 600
    assert "only entries within its first 10,000 characters become variables" in res.stderr


@pytest.mark.case("PL-08", exit=0)
def test_payload_from_stdin(env, busybox, case):
    env.project(SHOW)
    data = json.dumps({"FROM": "stdin", "text": "$(echo no) `echo no` ; # '\""}).encode()
    before = _stdin_copies()
    res = env.run("p", "--payload", "-", "--network", "none", input=data)
    assert_clean(res, case.exit)
    lines = output_lines(res.stdout)
    assert f"size={len(data)}" in lines and f"sha={hashlib.sha256(data).hexdigest()}" in lines
    record = env.last()
    assert record["payload"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (env.store / "payloads" / f"{record['payload']['sha256']}.json").read_bytes() == data
    assert _stdin_copies() == before  # the temporary copy of stdin is gone


@pytest.mark.case("PL-09", exit=2)
def test_payload_from_stdin_then_a_config_error_leaves_no_copy(env, ours, case):
    env.project(f"""
        environment: {{image: {BB}}}
        p: {{job: ['echo {{{{ NOT_DEFINED }}}}']}}
        """)
    before, copies = ours(), _stdin_copies()
    res = env.run("p", "--payload", "-", "--network", "none", input=b'{"API_KEY": "stdin-secret-value"}')
    assert_error(res, case.exit, "unknown variable {{ NOT_DEFINED }}")
    nothing_created(env, ours, before)
    assert _stdin_copies() == copies


@pytest.mark.case("PL-10", exit=2)
def test_empty_payload_file(env, ours, case):
    env.project(SHOW)
    (env.root / "empty.json").write_bytes(b"")
    before = ours()
    res = env.run("p", "--payload", "empty.json", "--network", "none")
    assert_error(res, case.exit, "empty.json is empty")
    nothing_created(env, ours, before)


@pytest.mark.case("PL-11", exit=0)
def test_keys_that_would_make_programs_run_code(env, python_image, case):
    """PYTHONWARNINGS + BROWSER make any python run a shell command; BASH_ENV makes bash source
    the payload itself (`"touch" : "/tmp/x"` is a JSON pair and a shell command)."""
    env.project(f"""
        environment: {{image: "{PY}"}}
        p:
          job:
            - python -c "print('python ran')"
            - bash -c "echo bash ran"
            - ls /tmp; echo "path=$path"
        """)
    (env.root / "evil.json").write_text(
        '{"PYTHONWARNINGS": "all:0:antigravity.x:0:0",\n'
        ' "BROWSER": "sh -c \'touch /tmp/pwned-by-python\' #%s",\n'
        ' "BASH_ENV": "/input/payload.json", "BASH_FUNC_ls%%": "() { touch /tmp/pwned-by-function; }",\n'
        ' "LD_PRELOAD": "/input/payload.json", "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "path": "data.csv",\n'
        '"touch" : "/tmp/pwned-by-bash" }\n'
    )
    res = env.run("p", "--payload", "evil.json", "--network", "none")
    assert_clean(res, case.exit)
    lines = output_lines(res.stdout)
    assert "python ran" in lines and "bash ran" in lines and "path=data.csv" in lines
    assert "pwned" not in res.stdout
    for key in ("PYTHONWARNINGS", "BROWSER", "BASH_ENV", "BASH_FUNC_ls%%", "LD_PRELOAD", "PIP_INDEX_URL"):
        assert f"payload key '{key}' is not a variable: it would change which code programs" in res.stderr
    assert _user_names(env.last()) == {"path", "touch"}


@pytest.mark.case("PL-12", exit=0)
def test_deeply_nested_payload(env, busybox, case):
    env.project(SHOW)
    payload = env.root / "deep.json"
    payload.write_text('{"DEPTH": "deep", "x": ' + "[" * 200_000 + "]" * 200_000 + "}")
    res = env.run("p", "--payload", "deep.json", "--network", "none")
    assert_clean(res, case.exit)
    _mounted_whole(res, payload)
    assert env.last()["variables"] == {"DEPTH": "deep"}
