"""Images: builds cached by content, the dependency cache volume, GPU requests, no bind mounts."""

from __future__ import annotations

import json

from conftest import host_paths, write_sdist

BB = "anna-run/busybox:latest"


def _build_project(env, marker: str = "v1"):
    return env.project(
        """
        environment:
          build: docker/
          build_args: [GREETING]
        variables: {GREETING: hello}
        b: {job: ['cat /built; echo "arg=$(cat /arg)"']}
        """,
        {
            "docker/Dockerfile": f"FROM {BB}\nARG GREETING\nCOPY marker.txt /built\nRUN echo $GREETING > /arg\n",
            "docker/marker.txt": marker + "\n",
            "docker/.dockerignore": "ignored.txt\n",
            "docker/ignored.txt": "x",
        },
    )


def _remove_built(api, rec):
    if rec["image"]["name"].startswith("anna-run/build:"):
        api.remove_image(rec["image"]["name"], force=True)


def test_build_is_cached_by_content(env, busybox, api):
    _build_project(env)
    first = env.run("b", "--network", "none")
    assert first.returncode == 0, first.output
    assert "v1" in first.stdout and "arg=hello" in first.stdout
    rec1 = env.last()
    try:
        assert rec1["image"]["name"].startswith("anna-run/build:") and rec1["image"]["digest"] is None
        assert rec1["image"]["id"].startswith("sha256:")
        labels = api.inspect_image(rec1["image"]["id"])["Config"]["Labels"]
        assert labels["io.anna-run.project"] == rec1["project"]
        # Unchanged context (an ignored file changing does not count): no build call.
        (env.root / "docker/ignored.txt").write_text("changed")
        second = env.run("b", "--network", "none")
        assert second.returncode == 0 and "no build" in second.stderr
        assert env.last()["image"] == rec1["image"]
        # A changed context rebuilds.
        (env.root / "docker/marker.txt").write_text("v2\n")
        third = env.run("b", "--network", "none")
        assert third.returncode == 0 and "v2" in third.stdout
        rec3 = env.last()
        assert rec3["image"]["id"] != rec1["image"]["id"]
        _remove_built(api, rec3)
    finally:
        _remove_built(api, rec1)


def test_failed_build_is_125_with_the_builds_error(env, busybox):
    env.project(
        """
        environment: {build: Dockerfile}
        b: {job: [echo never]}
        """,
        {"Dockerfile": f"FROM {BB}\nRUN echo about-to-fail && exit 3\n"},
    )
    res = env.run("b", "--network", "none")
    assert res.returncode == 125, res.output
    assert "build" in res.stderr and "Traceback" not in res.output
    assert "returned a non-zero code: 3" in res.stderr


def test_build_path_outside_the_project_is_a_config_error(env):
    env.project("""
        environment: {build: ../elsewhere}
        b: {job: [echo never]}
        """)
    res = env.run("b")
    assert res.returncode == 2


def test_dependency_cache_volume_is_reused(env, busybox, api):
    env.project(f"""
        environment: {{image: {BB}}}
        c:
          job:
            - cat /root/.cache/seen 2>/dev/null || echo first; echo seen > /root/.cache/seen
            - echo x >> /extra/n; wc -l < /extra/n
          cache: [/extra]
        """)
    first = env.run("c", "--network", "none")
    second = env.run("c", "--network", "none")
    assert "first" in first.stdout and "seen" in second.stdout.split("\n")[1]
    assert second.stdout.strip().endswith("2")
    rec = env.last()
    volumes = (api.volumes(filters={"label": f"io.anna-run.project={rec['project']}"}) or {}).get("Volumes") or []
    assert sorted(v["Labels"]["io.anna-run.cache"] for v in volumes) == ["/extra", "/root/.cache"]
    third = env.run("c", "--network", "none", "--no-cache")
    assert "first" in third.stdout


def test_no_host_bind_mounts_ever(env, busybox, api):
    env.project(f"""
        environment: {{image: {BB}}}
        m: {{job: [echo hi], cache: [/extra]}}
        """)
    (env.root / "p.json").write_text("{}")
    res = env.run("m", "--keep", "--payload", "p.json", "--network", "none")
    assert res.returncode == 0, res.output
    rec = env.last()
    [container] = api.containers(all=True, filters={"label": f"io.anna-run.run={rec['id']}"})
    info = api.inspect_container(container["Id"])
    assert not host_paths(info["HostConfig"].get("Binds"))
    assert info["Mounts"] and all(m["Type"] == "volume" for m in info["Mounts"])


def test_gpus_become_a_device_request(env, busybox, api):
    env.project(f"""
        environment: {{image: {BB}}}
        g: {{job: [echo hi], resources: {{gpus: 2}}}}
        """)
    res = env.run("g", "--keep", "--network", "none")
    # No GPU (and no NVIDIA runtime) here: the engine refuses to start it, a clean 125.
    assert res.returncode in (0, 125) and "Traceback" not in res.output
    [container] = api.containers(all=True, filters={"label": "io.anna-run.job=g"})
    requests = api.inspect_container(container["Id"])["HostConfig"]["DeviceRequests"]
    assert [(r["Count"], r["Capabilities"]) for r in requests] == [(2, [["gpu"]])]
    api.remove_container(container["Id"], force=True)
    res = env.run("g", "--keep", "--gpus", "all", "--network", "none")
    [container] = api.containers(all=True, filters={"label": "io.anna-run.job=g"})
    assert api.inspect_container(container["Id"])["HostConfig"]["DeviceRequests"][0]["Count"] == -1
    if res.returncode == 125:
        assert json.loads(env.run("show", "--json").stdout)["reason"].startswith("engine:")


def test_second_pip_install_uses_the_cache(env, python_image):
    env.project(
        """
        environment: {image: anna-run/python:3.11}
        t:
          job: [pip install --no-build-isolation --no-index --find-links sdists slowpkg]
        """
    )
    write_sdist(env.root / "sdists" / "slowpkg-1.0.tar.gz")
    first = env.run("t", "--network", "none", timeout=300)
    assert first.returncode == 0, first.output
    assert "Building wheel for slowpkg" in first.stdout
    second = env.run("t", "--network", "none", timeout=300)
    assert second.returncode == 0, second.output
    assert "Building wheel" not in second.stdout and "Using cached slowpkg" in second.stdout


def test_build_log_streams_masked(env, busybox, api):
    env.project(
        """
        environment: {build: Dockerfile, build_args: [API_TOKEN]}
        b: {job: [echo ran]}
        """,
        {"Dockerfile": f"FROM {BB}\nARG API_TOKEN\nRUN echo building-with-$API_TOKEN\n"},
    )
    res = env.run("b", "--network", "none", "--secret", "API_TOKEN=tok-very-secret-1")
    assert res.returncode == 0, res.output
    assert "building-with-***" in res.stderr and "tok-very-secret-1" not in res.output
    _remove_built(api, env.last())
