"""The code kept in the engine: the first run of a package puts it into a code image once;
later runs start from it and send no package bytes (measured at the engine's socket); each
run's /code is private; the images are listed, pruned and bounded."""

from __future__ import annotations

import json
import os

import pytest
from test_ends import EngineProxy

BB = "anna-run/busybox:latest"
CODE_LABEL = "io.anna-run.code"

YML = f"""
environment: {{image: {BB}}}
t:
  job:
    - ls; cat note.txt; wc -c < data.bin
    - echo changed > note.txt; rm data.bin; echo new > added.txt
"""


def _engine_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert host.startswith("unix://"), "this test proxies a local unix socket"
    return host[len("unix://") :]


@pytest.fixture
def code_images(api):
    """The code images of the packages this test's runs used; removed afterwards."""
    packages: list[str] = []

    def of(sha256: str) -> list[dict]:
        packages.append(sha256)
        return api.images(filters={"label": f"{CODE_LABEL}.package={sha256}"})

    yield of
    for sha256 in packages:
        for image in api.images(filters={"label": f"{CODE_LABEL}.package={sha256}"}):
            api.remove_image(image["Id"], force=True)


def _project(env, size: int = 4 << 20) -> None:
    env.project(YML, {"note.txt": "packed\n", "data.bin": os.urandom(size)})


def test_an_unchanged_package_is_not_sent_again(env, busybox, code_images, tmp_path):
    _project(env)
    proxy = EngineProxy(tmp_path / "engine.sock", _engine_socket())
    host = f"unix://{tmp_path / 'engine.sock'}"
    try:
        first = env.run("t", "--network", "none", DOCKER_HOST=host)
        sent_first = proxy.sent
        second = env.run("t", "--network", "none", DOCKER_HOST=host)
        sent_second = proxy.sent - sent_first
    finally:
        proxy.close()
    assert first.returncode == 0 and second.returncode == 0, first.output + second.output
    assert sent_first > 4 << 20 and sent_second < 64 << 10, (sent_first, sent_second)
    [a, b] = env.records()
    assert a["package"]["sha256"] == b["package"]["sha256"]
    assert a["image"]["name"] == BB  # the record names the base image, as asked
    assert len(code_images(a["package"]["sha256"])) == 1


def check_the_tree_as_packed(env) -> set[str]:
    """Two runs of one package (the first edits, deletes and adds files; the second sees none of
    it), then a changed file: a new package whose change the job sees. Returns the packages."""
    _project(env)
    for _ in range(2):
        res = env.run("t", "--network", "none")
        assert res.returncode == 0, res.output
        lines = res.stdout.splitlines()
        assert lines[1:5] == ["askanna.yml", "data.bin", "note.txt", "packed"], res.stdout
        assert lines[5].strip() == str(4 << 20)
    (env.root / "note.txt").write_text("edited\n")
    res = env.run("t", "--network", "none")
    assert res.returncode == 0 and "edited" in res.stdout.splitlines(), res.output
    shas = {r["package"]["sha256"] for r in env.records()}
    assert len(shas) == 2
    return shas


def test_each_run_gets_the_tree_as_packed(env, busybox, code_images):
    shas = check_the_tree_as_packed(env)
    assert all(len(code_images(sha)) == 1 for sha in shas)


def test_a_non_root_users_cached_code_is_its_own(env, busybox, code_images):
    _project(env)
    for _ in range(2):
        res = env.run("t", "--network", "none", "--user", "1000:1000")
        assert res.returncode == 0, res.output
    [a, b] = env.records()
    assert [c["exit_code"] for c in b["commands"]] == [0, 0]
    assert len(code_images(a["package"]["sha256"])) == 1


def test_the_cache_is_bounded_and_pruned(env, busybox, code_images):
    _project(env, size=2 << 20)
    bound = {"ANNA_RUN_CODE_CACHE_MB": "3"}
    assert env.run("t", "--network", "none", **bound).returncode == 0
    first = env.last()["package"]["sha256"]
    assert len(code_images(first)) == 1
    (env.root / "data.bin").write_bytes(os.urandom(2 << 20))  # a second package: 4 MB > 3 MB
    assert env.run("t", "--network", "none", **bound).returncode == 0
    second = env.last()["package"]["sha256"]
    assert code_images(first) == [] and len(code_images(second)) == 1  # the least recently used went
    [image] = code_images(second)
    listed = json.loads(env.run("images", "--json").stdout)
    assert any(row["id"] == image["Id"] and row.get("code") for row in listed)
    dry = json.loads(env.run("images", "prune", "--dry-run", "--json").stdout)
    assert image["Id"] in {row["id"] for row in dry} and len(code_images(second)) == 1
    assert env.run("images", "prune").returncode == 0
    assert code_images(second) == []
    res = env.run("t", "--network", "none")  # after a prune, a run makes its code image again
    assert res.returncode == 0, res.output
    assert len(code_images(second)) == 1


def test_off_sends_the_code_each_run(env, busybox, code_images):
    _project(env, size=2 << 20)
    for _ in range(2):
        res = env.run("t", "--network", "none", ANNA_RUN_CODE_CACHE_MB="0")
        assert res.returncode == 0 and "packed" in res.stdout, res.output
    assert code_images(env.last()["package"]["sha256"]) == []
