"""Lineage: a job reads earlier runs' result and artifacts at /input/runs/<RUN>/, read-only; the
record lists its inputs; rerun repeats them; an unknown input run is exit 2 before anything."""

from __future__ import annotations

import json

BB = "anna-run/busybox:latest"

YML = f"""
environment: {{image: {BB}}}
train:
  job: ['mkdir -p models out && echo weights-1 > models/model.txt && echo 0.9 > out/score.txt']
  output: {{result: out/score.txt, artifact: [models/]}}
serve:
  job:
    - echo "inputs=$AA_INPUT_RUNS"
    - cd /input/runs/{{{{ MODEL_RUN }}}} && cat artifacts/models/model.txt result/out/score.txt && cd /code
    - echo tamper > /input/runs/{{{{ MODEL_RUN }}}}/result/out/score.txt 2>/dev/null || echo read-only
  input: {{runs: ['{{{{ MODEL_RUN }}}}']}}
"""


def test_serve_reads_what_train_wrote(env, busybox):
    env.project(YML)
    trained = env.run("train", "--network", "none")
    assert trained.returncode == 0, trained.output
    train_id = env.last()["id"]
    res = env.run("serve", "--network", "none", "--var", f"MODEL_RUN={train_id}")
    assert res.returncode == 0, res.output
    lines = res.stdout.splitlines()
    assert f"inputs={train_id}" in lines and "weights-1" in lines and "0.9" in lines and "read-only" in lines
    record = env.last()
    assert record["inputs"] == [{"run": train_id, "job": "train", "status": "succeeded"}]
    again = env.run("rerun", record["id"])
    assert again.returncode == 0 and "weights-1" in again.stdout, again.output
    assert env.last()["inputs"] == record["inputs"]


def test_input_run_option_and_prefix(env, busybox):
    env.project(YML.replace("  input: {runs: ['{{ MODEL_RUN }}']}\n", ""))
    assert env.run("train", "--network", "none").returncode == 0
    train_id = env.last()["id"]
    res = env.run("serve", "--network", "none", "--var", f"MODEL_RUN={train_id}", "--input-run", train_id[:9])
    assert res.returncode == 0 and "weights-1" in res.stdout, res.output
    assert [i["run"] for i in env.last()["inputs"]] == [train_id]


def test_an_unknown_input_run_is_refused_before_anything(env, busybox, ours):
    env.project(YML)
    before = ours()
    res = env.run("serve", "--network", "none", "--var", "MODEL_RUN=Zz99-Zz99-Zz99-Zz99")
    assert res.returncode == 2, res.output
    assert "input run 'Zz99-Zz99-Zz99-Zz99'" in res.stderr and "Traceback" not in res.output
    assert ours() == before and env.records() == []
    bad = env.run("serve", "--network", "none", "--var", "MODEL_RUN=../etc")
    assert bad.returncode == 2 and "is not a run id" in bad.stderr, bad.output
    listed = json.loads(env.run("runs", "--json").stdout or "[]") if env.store.exists() else []
    assert listed == []


def test_inputs_come_from_an_s3_store(s3_env, busybox):
    """The train run's outputs live in the bucket; the serve run gets them streamed from there."""
    env = s3_env
    env.project(YML)
    trained = env.run("train", "--network", "none")
    assert trained.returncode == 0, trained.output
    train_id = env.last()["id"]
    import shutil

    shutil.rmtree(env.cache, ignore_errors=True)  # no local copy left: only the bucket has the outputs
    res = env.run("serve", "--network", "none", "--var", f"MODEL_RUN={train_id}")
    assert res.returncode == 0, res.output
    assert "weights-1" in res.stdout.splitlines() and "0.9" in res.stdout.splitlines()
    assert env.last()["inputs"][0]["run"] == train_id
