"""Any image user: the job runs as `user:` / `--user`, else as the image's own USER, and
whoever that is, it writes /code, its outputs are collected, every command's status is kept
and its dependency cache works (SPEC §1, §3.4)."""

from __future__ import annotations

import io
import json

import pytest
from conftest import write_sdist

BB = "anna-run/busybox:latest"
USER_IMAGE = "anna-run-test/user1000:latest"

JOB = """
environment: {image: IMAGE}
t:
  job:
    - id -u; id -g; echo "home=$HOME"
    - mkdir -p out sub && echo made > out/r.txt && echo art > sub/a.txt
    - cd sub; echo more >> a.txt; touch ../written-in-code
  output: {result: out/r.txt, artifact: [sub/]}
"""


@pytest.fixture(scope="module")
def user_image(api, busybox):
    dockerfile = f"FROM {BB}\nUSER 1000:1000\n".encode()
    for _ in api.build(fileobj=io.BytesIO(dockerfile), tag=USER_IMAGE, rm=True, decode=True, pull=False):
        pass
    yield USER_IMAGE
    api.remove_image(USER_IMAGE, force=True)


def _ran(env, *args: str):
    res = env.run("t", "--network", "none", *args)
    record = env.last()
    return res, record


def test_the_image_users_job_writes_code_and_keeps_every_status(env, user_image):
    env.project(JOB.replace("IMAGE", user_image))
    res, record = _ran(env)
    assert res.returncode == 0, res.output
    assert res.stdout.splitlines()[:3] == ['$ id -u; id -g; echo "home=$HOME"', "1000", "1000"]
    assert "home=/.anna-run/home" in res.stdout
    assert record["status"] == "succeeded" and record["settings"]["user"] == "1000:1000"
    assert [c["exit_code"] for c in record["commands"]] == [0, 0, 0]
    assert all(c["duration_s"] is not None for c in record["commands"])
    assert record["result"]["size"] == 5 and [a["path"] for a in record["artifacts"]] == ["sub/a.txt"]
    artifact = env.run_dir(record["id"]) / "artifacts" / "sub" / "a.txt"
    assert artifact.read_text() == "art\nmore\n"


def test_a_failing_command_of_a_non_root_user_is_recorded(env, user_image):
    env.project(JOB.replace("IMAGE", user_image).replace("touch ../written-in-code", "exit 7"))
    res, record = _ran(env)
    assert res.returncode == 7, res.output
    assert [c["exit_code"] for c in record["commands"]] == [0, 0, 7]


@pytest.mark.parametrize(("where", "expected"), [("file", "1234"), ("option", "0"), ("both", "0")])
def test_user_key_and_option_are_honoured(env, user_image, where, expected):
    yml = JOB.replace("IMAGE", user_image)
    if where in ("file", "both"):
        yml = yml.replace("  output:", '  user: "1234:1234"\n  output:')
    env.project(yml)
    res, record = _ran(env, *(["--user", "0"] if where in ("option", "both") else []))
    assert res.returncode == 0, res.output
    assert res.stdout.splitlines()[1] == expected
    assert record["settings"]["user"] == f"{expected}:{expected}"
    rerun = env.run("rerun", record["id"])
    assert rerun.returncode == 0 and rerun.stdout.splitlines()[1] == expected, rerun.output


def test_a_named_user_the_image_does_not_know_is_refused(env, busybox, ours):
    env.project(JOB.replace("IMAGE", BB))
    before = ours()
    res = env.run("t", "--network", "none", "--user", "nosuchuser")
    assert res.returncode == 2, res.output
    assert "no user 'nosuchuser'" in res.stderr and "Traceback" not in res.output
    assert ours() == before


def test_a_bad_user_spec_is_refused_before_anything(env, busybox):
    env.project(JOB.replace("IMAGE", BB).replace("  output:", "  user: [1, 2]\n  output:"))
    res = env.run("t", "--network", "none")
    assert res.returncode == 2 and "user must be" in res.stderr, res.output
    env.project(JOB.replace("IMAGE", BB))
    res = env.run("t", "--network", "none", "--user", "a b")
    assert res.returncode == 2 and "--user 'a b'" in res.stderr, res.output
    assert not env.store.exists()


def test_a_named_user_of_the_image(env, python_image):
    env.project(JOB.replace("IMAGE", python_image))
    res, record = _ran(env, "--user", "nobody")
    assert res.returncode == 0, res.output
    assert res.stdout.splitlines()[1] == "65534" and record["settings"]["user"] == "65534:65534"


def test_second_pip_install_of_a_non_root_user_uses_the_cache(env, python_image, api):
    env.project(
        """
        environment: {image: anna-run/python:3.11}
        t:
          job: [pip install --user --no-build-isolation --no-index --find-links sdists slowpkg]
        """
    )
    write_sdist(env.root / "sdists" / "slowpkg-1.0.tar.gz")
    first = env.run("t", "--network", "none", "--user", "1000:1000", timeout=300)
    assert first.returncode == 0, first.output
    assert "Building wheel for slowpkg" in first.stdout
    second = env.run("t", "--network", "none", "--user", "1000:1000", timeout=300)
    assert second.returncode == 0, second.output
    assert "Building wheel" not in second.stdout and "Using cached slowpkg" in second.stdout
    record = json.loads(env.run("show", "--json").stdout)
    assert record["settings"]["cache"] == ["/.anna-run/home/.cache"]


def check_a_user_given_by_option(env, image: str) -> None:
    """`--user 1000:1000` on an image whose own user is root (also run against Podman)."""
    env.project(JOB.replace("IMAGE", image))
    res = env.run("t", "--network", "none", "--user", "1000:1000")
    assert res.returncode == 0, res.output
    record = env.last()
    assert res.stdout.splitlines()[1:3] == ["1000", "1000"]
    assert [c["exit_code"] for c in record["commands"]] == [0, 0, 0]
    assert record["result"]["size"] == 5 and [a["path"] for a in record["artifacts"]] == ["sub/a.txt"]


def test_a_user_given_by_option(env, busybox):
    check_a_user_given_by_option(env, BB)
