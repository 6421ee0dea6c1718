"""Secrets show as *** wherever anna-run shows or keeps text; the container gets the real value."""

from __future__ import annotations

import json

import pytest

from .support import BB, assert_clean, assert_error, nothing_created, output_lines

TOKEN = "tok-9f8e7d6c5b4a"  # API_TOKEN: secret by its name
PASSWORD = "pw-correct-horse-battery"  # --secret DB_PASSWORD
SECRETS = (TOKEN, PASSWORD)
ARGS = ("--var", f"API_TOKEN={TOKEN}", "--secret", f"DB_PASSWORD={PASSWORD}", "--network", "none")

LEAKY = f"""
environment: {{image: {BB}}}
leak:
  job:
    - echo "token=$API_TOKEN"
    - echo "password={{{{ DB_PASSWORD }}}}" >&2
    - echo "literal {PASSWORD} in the command"
    - '[ "$API_TOKEN" = "{TOKEN}" ] && [ "$DB_PASSWORD" = "{PASSWORD}" ] && echo container-has-the-real-values'
    - exit 3
"""


def _run(env):
    env.project(LEAKY)
    res = env.run("leak", *ARGS)
    return res, env.last()


def _no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.case("SE-01", exit=3)
def test_masked_live(env, busybox, case):
    res, _ = _run(env)
    assert_clean(res, case.exit)
    _no_secret(res.stdout)
    _no_secret(res.stderr)
    lines = output_lines(res.stdout)
    assert "token=***" in lines and "container-has-the-real-values" in lines
    assert "password=***" in res.stderr.splitlines()


@pytest.mark.case("SE-02", exit=3)
def test_masked_in_the_stored_log(env, busybox, case):
    res, record = _run(env)
    assert_clean(res, case.exit)
    run_dir = env.run_dir(record["id"])
    for name in ("log.txt", "stdout.log", "stderr.log"):
        _no_secret((run_dir / name).read_text())
    assert "password=***" in (run_dir / "stderr.log").read_text()
    for stream in ("log", "stdout", "stderr"):
        logs = env.run("logs", record["id"], "--stream", stream)
        assert logs.returncode == 0 and "***" in logs.stdout
        _no_secret(logs.stdout)


@pytest.mark.case("SE-03", exit=3)
def test_masked_in_the_echo_lines(env, busybox, case):
    res, _ = _run(env)
    assert_clean(res, case.exit)
    echoes = [line for line in res.stdout.splitlines() if line.startswith("$ ")]
    assert '$ echo "literal *** in the command"' in echoes
    assert '$ [ "$API_TOKEN" = "***" ] && [ "$DB_PASSWORD" = "***" ]' in "\n".join(echoes)
    assert "literal *** in the command" in output_lines(res.stdout)
    _no_secret("\n".join(echoes))


@pytest.mark.case("SE-04", exit=3)
def test_masked_in_the_record(env, busybox, case):
    res, record = _run(env)
    assert_clean(res, case.exit)
    assert record["variables"]["API_TOKEN"] == "***" and record["variables"]["DB_PASSWORD"] == "***"
    assert record["commands"][2]["command"] == 'echo "literal *** in the command"'
    assert [c["exit_code"] for c in record["commands"]] == [0, 0, 0, 0, 3]
    _no_secret(json.dumps(record))
    _no_secret((env.run_dir(record["id"]) / "run.json").read_text())
    _no_secret(env.run("show", record["id"]).stdout)
    _no_secret(env.run("runs", "--json").stdout)


@pytest.mark.case("SE-05", exit=2)
def test_masked_in_error_messages(env, ours, busybox, case):
    env.project(f"""
        environment: {{image: "{{{{ IMAGE }}}}"}}
        img: {{job: [echo hi]}}
        path:
          environment: {{image: {BB}}}
          job: [echo hi]
          output: {{result: "out/{{{{ API_TOKEN }}}}"}}
        calc:
          environment: {{image: {BB}}}
          job: ['echo $(( {{{{ DB_PASSWORD }}}} + 1 ))']
        """)
    before = ours()
    res = env.run("img", "--secret", f"IMAGE=Registry {PASSWORD}", "--network", "none")
    assert_error(res, case.exit, "image name '***' is not a valid image reference")
    res = env.run("path", "--var", f"API_TOKEN=../{TOKEN}", "--network", "none")
    assert_error(res, case.exit, "output.result 'out/***'")
    res = env.run("calc", "--secret", f"DB_PASSWORD={PASSWORD}", "--network", "none")
    assert_error(res, case.exit, "its value *** is not a whole number")
    res = env.run("path", "--secret", f"{PASSWORD}", "--network", "none")  # no NAME=: never echoed
    assert_error(res, case.exit, "--secret item 1: expected NAME=VALUE")
    nothing_created(env, ours, before)
    # After the start too: a missing result named by a secret, and a pull that cannot happen.
    res = env.run("path", "--var", f"API_TOKEN={TOKEN}", "--network", "none")
    assert_clean(res, 1)
    assert env.last()["reason"] == "result missing: out/***"
    res = env.run("img", "--secret", f"IMAGE=anna-run/{PASSWORD}:1", "--pull", "never", "--network", "none")
    assert_error(res, 125, "image *** is not present")
    for text in (res.output, json.dumps(env.records())):
        _no_secret(text)


@pytest.mark.case("SE-06", exit=0)
def test_masked_when_split_across_log_chunks(env, busybox, case):
    secret = "split-sécret-ünicode-1234567890"  # multi-byte characters: split inside one too
    raw = secret.encode()
    # Byte by byte with pauses (separate reads of the stream), and again straddling 64 KiB of filler.
    octal = "".join(f"\\{b:03o}" for b in raw)
    env.project(f"""
        environment: {{image: {BB}}}
        split:
          job:
            - for b in $(echo '{octal}' | sed 's/\\\\/ /g'); do printf "\\\\$b"; usleep 20000; done; echo
            - head -c 65530 /dev/zero | tr '\\0' x; printf '{octal}\\n'
            - printf '{octal}' >&2; usleep 100000; printf '{octal}\\n' >&2
        """)
    res = env.run("split", "--secret", f"S={secret}", "--network", "none")
    assert_clean(res, case.exit)
    stored = (env.run_dir(env.last()["id"]) / "log.txt").read_text()
    for text in (res.stdout, res.stderr, stored):
        assert secret not in text
        assert secret.encode() not in text.encode()
    lines = output_lines(res.stdout)
    assert lines[0] == "***" and lines[1].endswith("x***")
    assert "******" in res.stderr.splitlines()


@pytest.mark.case("SE-07", exit=0)
def test_multi_line_secret_masked_line_by_line(env, busybox, case):
    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\nAQEFAASCBKcwggSjAgEAAoIB\n-----END KEY-----"
    env.project(f"""
        environment: {{image: {BB}}}
        ml:
          job:
            - printf '%s\\n' "$SSH_KEY"
            - printf '%s\\n' "$SSH_KEY" | sed -n 2p
        """)
    res = env.run("ml", "--var", f"SSH_KEY={key}", "--network", "none")
    assert_clean(res, case.exit)
    stored = (env.run_dir(env.last()["id"]) / "log.txt").read_text()
    for text in (res.stdout, stored):
        for line in key.splitlines():
            assert line not in text


@pytest.mark.case("SE-08", exit=0)
def test_secret_names_from_every_source(env, busybox, case):
    values = {
        "PROJECT_API_KEY": "from-askanna-yml-1234",
        "FILE_SECRET": "from-env-file-5678",
        "PAYLOAD_PASSWORD": "from-payload-9012",
        "PLAIN": "not-a-secret",
    }
    env.project(f"""
        environment: {{image: {BB}}}
        variables: {{PROJECT_API_KEY: {values["PROJECT_API_KEY"]}}}
        all: {{job: ['echo "$PROJECT_API_KEY $FILE_SECRET $PAYLOAD_PASSWORD $PLAIN"']}}
        """)
    (env.root / "vars.env").write_text(f"FILE_SECRET={values['FILE_SECRET']}\n")
    (env.root / "p.json").write_text(
        json.dumps({"PAYLOAD_PASSWORD": values["PAYLOAD_PASSWORD"], "PLAIN": "not-a-secret"})
    )
    res = env.run("all", "--env-file", "vars.env", "--payload", "p.json", "--network", "none")
    assert_clean(res, case.exit)
    assert output_lines(res.stdout) == ["*** *** *** not-a-secret"]
    record = env.last()
    assert record["variables"] == {
        "PROJECT_API_KEY": "***",
        "FILE_SECRET": "***",
        "PAYLOAD_PASSWORD": "***",
        "PLAIN": "not-a-secret",
    }
    stored = (env.run_dir(record["id"]) / "log.txt").read_text()
    for name, value in values.items():
        if name != "PLAIN":
            assert value not in res.output and value not in stored and value not in json.dumps(record)
