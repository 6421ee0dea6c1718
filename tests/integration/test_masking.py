"""Secrets are masked where a run's text leaves it: the live output, the stored logs and the
record, whatever part of the run the secret turns up in."""

from __future__ import annotations

import json

BB = "anna-run/busybox:latest"
SECRET = "tok-9f8e7d6c5b4a"


def test_each_secret_is_masked_live_in_the_logs_and_in_the_record(env, busybox):
    env.project(
        f"""
        environment: {{image: {BB}}}
        t:
          job:
            - echo "out {{{{ TOKEN }}}}"
            - echo "err $TOKEN" >&2
            - echo "{SECRET}"
          output: {{result: 'out/{{{{ TOKEN }}}}.json'}}
        """
    )
    res = env.run("t", "--secret", f"TOKEN={SECRET}", "--network", "none", "--name", f"run {SECRET}")
    assert res.returncode == 1, res.output  # the result (out/<secret>.json) is missing
    assert SECRET not in res.output and "out ***" in res.stdout and "err ***" in res.stderr
    record = env.last()
    text = json.dumps(record)
    assert SECRET not in text
    assert record["reason"] == "result missing: out/***.json"
    assert record["settings"]["result"] == "out/***.json" and record["name"] == "run ***"
    assert record["variables"]["TOKEN"] == "***"
    for name in ("log.txt", "stdout.log", "stderr.log"):
        logged = (env.run_dir(record["id"]) / name).read_text()
        assert SECRET not in logged and "***" in logged
    shown = env.run("show", record["id"])
    assert SECRET not in shown.output
