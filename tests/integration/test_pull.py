"""Pull policies, credentials, digests and retries against a real (small) registry on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from registry import Registry, closed_port  # tests/ is on sys.path (rootdir conftest)

BB = "anna-run/busybox:latest"


@pytest.fixture
def registry(busybox, api):
    reg = Registry(BB)
    yield reg
    reg.close()
    _forget(api, reg)


def _project(env, image: str, extra: str = "") -> Path:
    return env.project(f"""
        environment:
          image: "{image}"
          {extra}
        t: {{job: [echo pulled-ok]}}
        """)


def _forget(api, reg) -> None:
    for ref in (reg.image, reg.digest_ref):
        with contextlib.suppress(Exception):
            api.remove_image(ref, force=True)


def test_if_not_present_pulls_once_and_records_the_digest(env, api, registry):
    _project(env, registry.image)
    res = env.run("t", "--network", "none")
    assert res.returncode == 0, res.output
    rec = env.last()
    assert rec["image"]["name"] == registry.image
    assert rec["image"]["digest"] == registry.digest_ref and rec["image"]["id"].startswith("sha256:")
    seen = registry.manifest_requests
    assert env.run("t", "--network", "none").returncode == 0
    assert registry.manifest_requests == seen  # present: no registry call
    assert env.run("t", "--network", "none", "--pull", "always").returncode == 0
    assert registry.manifest_requests > seen


def test_pull_never_on_a_missing_image(env, registry):
    _project(env, registry.image)
    res = env.run("t", "--pull", "never")
    assert res.returncode == 125 and registry.image in res.stderr and "never" in res.stderr


def test_image_not_found(env, registry):
    missing = registry.image.replace(":1", ":nope")
    _project(env, missing)
    res = env.run("t", "--network", "none")
    assert res.returncode == 125 and missing in res.stderr and "not found" in res.stderr
    assert "Traceback" not in res.output


def test_registry_unreachable(env, busybox):
    image = f"127.0.0.1:{closed_port()}/test/busybox:1"
    _project(env, image)
    res = env.run("t", "--network", "none")
    assert res.returncode == 125 and image in res.stderr and "unreachable" in res.stderr


def test_transient_errors_are_retried(env, registry):
    registry.fail_next = 2
    _project(env, registry.image)
    res = env.run("t", "--network", "none")
    assert res.returncode == 0, res.output
    assert registry.fail_next == 0


def test_credentials_from_variables_used_for_the_pull_only(env, registry):
    registry.auth = ("puller", "reg-pass-123456")
    _project(env, registry.image, 'credentials: {username: "${REG_USER}", password: "{{ REG_PASSWORD }}"}')
    denied = env.run("t", "--network", "none", "--var", "REG_USER=puller", "--secret", "REG_PASSWORD=wrong-pass")
    assert denied.returncode == 125 and "unauthorized" in denied.stderr, denied.output
    assert "wrong-pass" not in denied.output
    res = env.run("t", "--network", "none", "--var", "REG_USER=puller", "--secret", "REG_PASSWORD=reg-pass-123456")
    assert res.returncode == 0, res.output
    rec_text = json.dumps(env.last())
    assert "reg-pass-123456" not in rec_text and "reg-pass-123456" not in res.output


def test_rerun_pulls_by_digest_when_the_image_is_gone(env, api, registry):
    _project(env, registry.image)
    assert env.run("t", "--network", "none").returncode == 0
    original = env.last()
    _forget(api, registry)
    res = env.run("rerun", original["id"])
    assert res.returncode == 0, res.output
    rerun = env.last()
    assert rerun["image"]["id"] == original["image"]["id"] and rerun["image"]["digest"] == registry.digest_ref
