"""The sandbox as the engine sees it: labels, capabilities, limits, no host bind mounts."""

from __future__ import annotations

from conftest import host_paths

BB = "anna-run/busybox:latest"
LOOK = f"""
    environment: {{image: {BB}}}
    look:
      job: [echo hi]
      resources: {{cpus: 0.5, memory: 64m}}
      network: none
    """


def test_container_settings(env, busybox, api):
    env.project(LOOK)
    (env.root / "p.json").write_text("{}")
    res = env.run("look", "--keep", "--payload", "p.json")
    assert res.returncode == 0, res.output
    rec = env.last()
    [container] = api.containers(all=True, filters={"label": f"io.anna-run.run={rec['id']}"})
    try:
        info = api.inspect_container(container["Id"])
        host = info["HostConfig"]
        labels = info["Config"]["Labels"]
        assert labels["io.anna-run.run"] == rec["id"] and labels["io.anna-run.job"] == "look"
        assert labels["io.anna-run.project"] == rec["project"] and labels["io.anna-run.host"] == rec["host"]
        assert host["Privileged"] is False
        assert "no-new-privileges" in host["SecurityOpt"]
        # Docker reports the drop as ALL; Podman lists each capability it dropped.
        assert host["CapDrop"] == ["ALL"] or {"NET_RAW", "MKNOD"} <= set(host["CapDrop"])
        assert "SYS_ADMIN" not in host["CapAdd"] and "NET_RAW" not in host["CapAdd"]
        assert host["PidsLimit"] and host["PidsLimit"] > 0
        assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 64 * 2**20
        assert host["NetworkMode"] == "none"
        assert not host_paths(host.get("Binds"))
        assert all(m["Type"] == "volume" for m in info["Mounts"])
        payload = [m for m in info["Mounts"] if m["Destination"] == "/input"]
        assert payload and payload[0]["RW"] is False
        assert info["Config"]["OpenStdin"] is False and info["Config"]["WorkingDir"] == "/code"
        assert info["Config"]["Entrypoint"][:2] == ["/bin/sh", "-c"]
    finally:
        api.remove_container(container["Id"], force=True)
        for volume in (api.volumes(filters={"label": f"io.anna-run.run={rec['id']}"}) or {}).get("Volumes") or []:
            api.remove_volume(volume["Name"], force=True)


def test_flags_override_job_settings(env, busybox, api):
    env.project(LOOK)
    res = env.run("look", "--keep", "--cpus", "1", "--memory", "128m", "--network", "bridge")
    assert res.returncode == 0, res.output
    rec = env.last()
    [container] = api.containers(all=True, filters={"label": f"io.anna-run.run={rec['id']}"})
    try:
        host = api.inspect_container(container["Id"])["HostConfig"]
        assert host["NanoCpus"] == 10**9 and host["Memory"] == 128 * 2**20 and host["NetworkMode"] == "bridge"
    finally:
        api.remove_container(container["Id"], force=True)


def test_jobs_cannot_do_privileged_things(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        fight:
          job:
            - if mount -t tmpfs none /mnt 2>/dev/null; then echo MOUNTED; else echo no-mount; fi
            - if ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1; then echo RAW; else echo no-raw; fi
            - if [ -e /var/run/docker.sock ]; then echo SOCKET; else echo no-socket; fi
            - if mknod /tmp/dev c 1 3 2>/dev/null; then echo MKNOD; else echo no-mknod; fi
        """)
    res = env.run("fight", "--network", "none")
    assert res.returncode == 0, res.output
    lines = [line for line in res.stdout.splitlines() if not line.startswith("$ ")]
    assert lines == ["no-mount", "no-raw", "no-socket", "no-mknod"]


def test_nothing_left_after_a_run(env, busybox, ours):
    env.project(f"""
        environment: {{image: {BB}}}
        quick: {{job: [echo hi]}}
        """)
    (env.root / "p.json").write_text('{"A": 1}')
    before = ours()
    for args in ([], ["--payload", "p.json"]):
        assert env.run("quick", "--network", "none", *args).returncode == 0
    assert ours() == before
