"""Bad input: one clear message, the documented exit code, and nothing created."""

from __future__ import annotations

import json

BB = "anna-run/busybox:latest"


def _nothing_created(env, ours, before):
    assert ours() == before
    assert not (env.store / "runs").exists() or not any((env.store / "runs").iterdir())


def test_reserved_job_name(env, ours):
    env.project("""
        environment:
          job: [echo hi]
        """)
    before = ours()
    res = env.run("environment")
    assert res.returncode == 2
    assert "reserved" in res.stderr and "askanna.yml:" in res.stderr and "Traceback" not in res.output
    _nothing_created(env, ours, before)


def test_unknown_job(env, ours):
    env.project(f"""
        environment: {{image: {BB}}}
        train: {{job: [echo hi]}}
        """)
    before = ours()
    res = env.run("predict")
    assert res.returncode == 2 and "predict" in res.stderr and "train" in res.stderr
    _nothing_created(env, ours, before)


def test_invalid_payload_json(env, ours):
    env.project(f"""
        environment: {{image: {BB}}}
        train: {{job: [echo hi]}}
        """)
    (env.root / "bad.json").write_text('{"a": 1,,}')
    before = ours()
    res = env.run("train", "--payload", "bad.json")
    assert res.returncode == 2 and "not valid JSON" in res.stderr and "Traceback" not in res.output
    _nothing_created(env, ours, before)


def test_unknown_template_variable(env, ours):
    env.project(f"""
        environment: {{image: {BB}}}
        train: {{job: ["python train.py --input {{{{ NOPE }}}}"]}}
        """)
    before = ours()
    res = env.run("train")
    assert res.returncode == 2 and "NOPE" in res.stderr
    _nothing_created(env, ours, before)


def test_result_path_leaving_the_workspace(env, ours):
    for path in ("../outside.json", "/etc/passwd"):
        env.project(f"""
            environment: {{image: {BB}}}
            train:
              job: [echo hi]
              output: {{result: "{path}"}}
            """)
        before = ours()
        res = env.run("train")
        assert res.returncode == 2, res.output
        assert "askanna.yml:" in res.stderr
        _nothing_created(env, ours, before)


def test_output_path_from_a_variable_leaving_the_workspace(env, ours):
    env.project(f"""
        environment: {{image: {BB}}}
        train:
          job: [echo hi]
          output: {{result: "out/{{{{ NAME }}}}"}}
        """)
    before = ours()
    res = env.run("train", "--var", "NAME=../../x")
    assert res.returncode == 2 and "Traceback" not in res.output
    _nothing_created(env, ours, before)


def test_missing_project_file(env, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = env.run("train", cwd=empty)
    assert res.returncode == 2 and "askanna.yml" in res.stderr


def test_no_engine_reachable(env):
    env.project(f"""
        environment: {{image: {BB}}}
        train: {{job: [echo hi]}}
        """)
    res = env.run("train", DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert res.returncode == 125, res.output
    assert "no container engine" in res.stderr and "start" in res.stderr
    assert "Traceback" not in res.output


def test_pull_never_missing_image(env, api):
    env.project("""
        environment: {image: "anna-run/does-not-exist:1"}
        train: {job: [echo hi]}
        """)
    res = env.run("train", "--pull", "never")
    assert res.returncode == 125 and "anna-run/does-not-exist:1" in res.stderr and "Traceback" not in res.output


def test_bad_options(env):
    env.project(f"""
        environment: {{image: {BB}}}
        train: {{job: [echo hi]}}
        """)
    for args in (["--var", "NOEQUALS"], ["--network", "host"], ["--timeout", "soon"], ["--memory", "lots"]):
        res = env.run("train", *args)
        assert res.returncode == 2, (args, res.output)
        assert "Traceback" not in res.output


def test_validate_and_jobs(env):
    env.project(f"""
        push-target: https://beta.askanna.eu/x/project/abcd-efgh-ijkl-mnop
        environment: {{image: {BB}}}
        train: {{job: [echo hi], oops: 1}}
        other: {{job: [echo there]}}
        """)
    res = env.run("validate")
    assert res.returncode == 0 and "oops" in res.stderr
    res = env.run("jobs", "--json")
    assert [j["name"] for j in json.loads(res.stdout)] == ["train", "other"]
    schema = json.loads(env.run("schema").stdout)
    assert "properties" in schema
