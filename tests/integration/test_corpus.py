"""A corpus of small projects in the shapes real askanna.yml files have (written for this test,
not copied from anyone): each goes through `validate`, `jobs --json` and a real run, unchanged."""

from __future__ import annotations

import json

BB = "anna-run/busybox:latest"

# push-target first, a leading ---, a scalar top-level key, `cd` carried across commands, `>>`
# appends, a result in a subfolder, ${VAR} in commands and output paths, artifact folders with
# and without a trailing /, a job name with spaces.
PUSH_TARGET_FIRST = f"""\
---
push-target: https://beta.askanna.eu/project/abcd-1234-efgh-5678
project: a scalar that AskAnna keeps for itself
environment:
  image: {BB}
variables:
  OUT: results
train the model:
  job:
    - mkdir -p work/deeper
    - cd work
    - echo first > log.txt
    - cd deeper
    - echo second >> ../log.txt
    - cd ..
    - echo third >> log.txt
    - mkdir -p ../${{OUT}}/summary && cp log.txt ../${{OUT}}/summary/result.txt
    - echo weights > ../${{OUT}}/model.bin
  output:
    result: ${{OUT}}/summary/result.txt
    artifact:
      - work/
      - ${{OUT}}
"""

# push-target last, no global environment: a job-level image; {{{{ VAR }}}} in commands and output
# paths; `.` as the artifact; schedules mixing valid and invalid entries; notifications at both
# levels (one bad address); output.paths of AskAnna <= 0.5.
PUSH_TARGET_LAST = f"""\
notifications:
  all:
    email: [team@example.com]
variables:
  NAME: report
make a report:
  environment:
    image: {BB}
  job:
    - echo "made {{{{ NAME }}}}" > "{{{{ NAME }}}}.txt"
  output:
    result: "{{{{ NAME }}}}.txt"
    artifact: .
  schedule:
    - "0 6 * * 1-5"
    - {{hour: 8, century: 2}}
    - some rubbish, no cron
    - {{hour: 5, day: 5, month: 5}}
    - "@daily"
  notifications:
    error:
      email: [oncall@example.com, not-an-address]
old style:
  environment: {{image: {BB}}}
  job:
    - mkdir -p out/plots && echo p > out/plots/a.txt && echo m > out/metrics.json
  output:
    result: out/metrics.json
    paths: [out/plots]
push-target: https://beta.askanna.eu/project/abcd-1234-efgh-5678
"""


def _checked(env, yml: str, warnings: int) -> list[dict]:
    """validate (0), validate --strict (2 when warned), jobs --json: the jobs."""
    env.project(yml)
    res = env.run("validate")
    assert res.returncode == 0, res.output
    assert res.stderr.count("warning:") == warnings, res.stderr
    assert env.run("validate", "--strict").returncode == (2 if warnings else 0)
    jobs = env.run("jobs", "--json")
    assert jobs.returncode == 0, jobs.output
    return json.loads(jobs.stdout)


def _run(env, job: str) -> dict:
    res = env.run("run", job, "--network", "none")
    assert res.returncode == 0, res.output
    record = env.last()
    assert record["status"] == "succeeded" and record["job"] == job
    return record


def test_push_target_first(env, busybox):
    jobs = _checked(env, PUSH_TARGET_FIRST, warnings=0)
    assert [job["name"] for job in jobs] == ["train the model"]
    assert jobs[0]["result"] == "${OUT}/summary/result.txt"
    record = _run(env, "train the model")
    assert record["result"]["path"] == "results/summary/result.txt"
    assert env.run("result", record["id"]).stdout == "first\nsecond\nthird\n"  # cd and >> carried
    assert [a["path"] for a in record["artifacts"]] == [
        "results/model.bin",
        "results/summary/result.txt",
        "work/log.txt",
    ]
    assert len(record["commands"]) == 9 and all(c["exit_code"] == 0 for c in record["commands"])


def test_push_target_last(env, busybox):
    jobs = _checked(env, PUSH_TARGET_LAST, warnings=4)  # century, rubbish, an address, output.paths
    by_name = {job["name"]: job for job in jobs}
    assert list(by_name) == ["make a report", "old style"]
    assert by_name["make a report"]["schedule"] == ["0 6 * * 1-5", "0 5 5 5 *", "@daily"]
    assert by_name["make a report"]["image"] == BB
    assert by_name["old style"]["artifacts"] == ["out/plots"]
    strict = env.run("validate", "--strict")
    assert "century" in strict.stderr and "not-an-address" in strict.stderr and "output.paths" in strict.stderr
    report = _run(env, "make a report")
    assert report["result"]["path"] == "report.txt"
    assert env.run("result", report["id"]).stdout == "made report\n"
    assert "askanna.yml" in [a["path"] for a in report["artifacts"]]  # `.`: the whole workspace
    assert "report.txt" in [a["path"] for a in report["artifacts"]]
    old = _run(env, "old style")
    assert [a["path"] for a in old["artifacts"]] == ["out/plots/a.txt"]
    assert len(old["warnings"]) == 4 and "output.paths is deprecated" in old["warnings"][3]  # the run says so too
