"""Jobs that fight the sandbox: limits hold, the runner stays in charge, records stay true."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from .support import BB, PY, RSS_LIMIT_MB, assert_clean, output_lines, run_measured


def _stored_log(env, record) -> str:
    return (env.run_dir(record["id"]) / "log.txt").read_text()


@pytest.mark.case("JB-01", exit=0)
def test_fork_bomb_meets_the_pids_limit(env, busybox, ours, case):
    env.project(f"""
        environment: {{image: {BB}}}
        bomb:
          job:
            - cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max
            - 'bomb() {{ bomb | bomb & }}; bomb; sleep 3; echo still-in-charge'
          timeout: 120s
        """)
    before = ours()
    start = time.monotonic()
    res = env.run("bomb", "--network", "none", "-q", ANNA_RUN_GRACE="1")
    assert_clean(res, case.exit)
    assert time.monotonic() - start < 150  # bounded even on a loaded host (~6 s idle)
    lines = output_lines(res.stdout)
    assert lines[0] == "4096" and lines[-1] == "still-in-charge"
    assert "can't fork" in _stored_log(env, env.last())  # the limit, not the host, stopped it
    assert ours() == before


@pytest.mark.case("JB-02", exit=137)
def test_memory_hog_is_oom(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        hog:
          job: ['dd if=/dev/zero of=/dev/null bs=512M count=1', 'echo not-reached']
          resources: {{memory: 64m}}
        """)
    res = env.run("hog", "--network", "none")
    assert_clean(res, case.exit)
    record = env.last()
    assert record["status"] == "failed" and record["reason"] == "oom" and record["exit_code"] == 137
    assert [c["exit_code"] for c in record["commands"]] == [137, None]


@pytest.mark.case("JB-03", exit=124)
def test_process_that_ignores_sigterm(env, busybox, ours, case):
    env.project(f"""
        environment: {{image: {BB}}}
        stubborn:
          job: ["trap '' TERM INT; echo started; while :; do :; done"]
          timeout: 2s
        """)
    before = ours()
    start = time.monotonic()
    res = env.run("stubborn", "--network", "none", ANNA_RUN_GRACE="2")
    took = time.monotonic() - start
    assert_clean(res, case.exit)
    assert took < 2 + 2 + 10, took  # timeout + grace + start-up and clean-up
    record = env.last()
    assert record["status"] == "timeout" and record["exit_code"] == 137  # SIGKILL after the grace
    assert ours() == before


@pytest.mark.case("JB-04", exit=124)
def test_endless_output_flood(env, busybox, api, case, tmp_path):
    env.project(f"""
        environment: {{image: {BB}}}
        flood:
          job: ['tr "\\0" a < /dev/zero & yes 0123456789abcdefghijklmnopqrstuvwxyz']
          timeout: 6s
        """)
    start = time.monotonic()
    res, peak_mb = run_measured(
        env,
        "flood",
        "--network",
        "none",
        "--keep",
        "--secret",
        "FLOOD_SECRET=abcdefghijklmnopq",  # the masker sees every byte of the flood too
        rss_file=tmp_path / "rss",
        quiet_stdout=True,
        ANNA_RUN_GRACE="1",
        ANNA_RUN_LOG_LIMIT=str(4 << 20),
    )
    took = time.monotonic() - start
    assert_clean(res, case.exit)
    record = env.last()
    print(f"JB-04 output flood: peak RSS {peak_mb:.0f} MB, ended {took:.1f} s after start (timeout 6 s)")
    assert took < 6 + 1 + 15  # the runner kept time while drowning in output
    assert peak_mb < RSS_LIMIT_MB
    log = env.run_dir(record["id"]) / "log.txt"
    assert record["log_truncated"] is True and log.stat().st_size < (4 << 20) + 200
    assert log.read_text().endswith(f"[anna-run] log truncated: the stored log keeps the first {4 << 20} bytes\n")
    info = api.inspect_container(record["container"])  # kept with --keep: the engine's own copy
    assert info["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "1", "max-size": "10m"}}
    if os.path.exists(info["LogPath"]):  # a local engine: the file itself is capped too
        assert os.path.getsize(info["LogPath"]) < 12 << 20


@pytest.mark.case("JB-05", exit=0)
def test_reading_stdin(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        reader: {{job: ['read line; echo "got=[$line] rc=$?"', 'cat; echo cat-done']}}
        """)
    start = time.monotonic()
    res = env.run("reader", "--network", "none", input="typed-by-the-user\n", timeout=60)
    assert_clean(res, case.exit)
    assert time.monotonic() - start < 20
    assert output_lines(res.stdout) == ["got=[] rc=1", "cat-done"]


@pytest.mark.case("JB-06", exit=0)
def test_looking_for_the_engine(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        look:
          job:
            - |
              for s in /var/run/docker.sock /run/docker.sock /run/podman/podman.sock \\
                       /run/containerd/containerd.sock; do [ -e $s ] && echo "FOUND $s"; done; true
            - find / -xdev -type s 2>/dev/null | sed 's/^/SOCKET /'; true
            - env | grep -i -E 'docker|podman|canary|anna_run' | sed 's/^/ENV /'; true
            - echo looked
        """)
    socket = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    res = env.run("look", "--network", "none", DOCKER_HOST=socket, HOST_CANARY="host-only-env", ANNA_RUN_GRACE="3")
    assert_clean(res, case.exit)
    lines = output_lines(res.stdout)
    assert lines[-1] == "looked"
    # The job's own tracking files (SPEC §7) are the only anna_run names in its environment:
    # nothing of the host's (ANNA_RUN_GRACE, HOST_CANARY, DOCKER_HOST) reaches it.
    tracking = ["ENV ANNA_RUN_METRICS=/.anna-run/metrics.jsonl", "ENV ANNA_RUN_VARIABLES=/.anna-run/variables.jsonl"]
    found = [line for line in lines if line.startswith(("FOUND ", "SOCKET ", "ENV "))]
    assert sorted(found) == tracking


@pytest.mark.case("JB-07", exit=0)
def test_raw_sockets_and_capabilities(env, python_image, case):
    env.project(f"""
        environment: {{image: "{PY}"}}
        raw:
          job:
            - grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/self/status
            - |
              python - <<'EOF'
              import socket
              for family, kind, proto in ((socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                                          (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
                                          (socket.AF_PACKET, socket.SOCK_RAW, 0)):
                  try:
                      socket.socket(family, kind, proto)
                      print("RAW SOCKET OPENED", family, proto)
                  except PermissionError:
                      print("refused")
              EOF
        """)
    res = env.run("raw", "--network", "bridge")  # a network to reach: raw sockets are refused anyway
    assert_clean(res, case.exit)
    lines = output_lines(res.stdout)
    # Exactly CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID NET_BIND_SERVICE: no NET_RAW (13),
    # no SYS_ADMIN (21), no SYS_CHROOT (18), no MKNOD (27).
    assert "CapBnd:\t00000000000004fb" in lines and "CapEff:\t00000000000004fb" in lines
    assert "NoNewPrivs:\t1" in lines and "Seccomp:\t2" in lines
    assert lines[-3:] == ["refused"] * 3


@pytest.mark.case("JB-08", exit=0)
def test_mounting_and_namespaces(env, busybox, case):
    attempts = {
        "tmpfs": "mount -t tmpfs none /mnt",
        "proc": "mount -t proc proc /mnt",
        "bind": "mount --bind /code /mnt",
        "remount": "mount -o remount,rw /sys",
        "userns": "unshare -U -r true",
        "mountns": "unshare -m true",
        "chroot": "chroot / true",
        "nsenter": "nsenter -t 1 -m true",
        "mknod": "mknod /tmp/disk b 8 0",
        "sysctl": "echo 1 > /proc/sys/kernel/sysrq",
        "cgroup": "echo 100000 > /sys/fs/cgroup/pids/pids.max",
    }
    commands = [
        f"if {cmd} 2>/dev/null; then echo 'ESCAPED {name}'; else echo 'refused {name}'; fi"
        for name, cmd in attempts.items()
    ]
    env.project(
        f"environment: {{image: {BB}}}\nfight:\n  job:\n" + "".join(f"    - {json.dumps(c)}\n" for c in commands)
    )
    res = env.run("fight", "--network", "none")
    assert_clean(res, case.exit)
    assert output_lines(res.stdout) == [f"refused {name}" for name in attempts]


@pytest.mark.case("JB-09", exit=0)
def test_setuid_gives_nothing(env, python_image, case):
    env.project(f"""
        environment: {{image: "{PY}"}}
        suid:
          job:
            - cp /usr/bin/id /tmp/id && chmod u+s /tmp/id && ls -l /tmp/id | cut -c1-10
            - setpriv --reuid=65534 --regid=65534 --clear-groups /tmp/id -u
            - setpriv --reuid=65534 --regid=65534 --clear-groups su -c id root 2>&1 </dev/null || echo su-refused
        """)
    res = env.run("suid", "--network", "none")
    assert_clean(res, case.exit)
    lines = output_lines(res.stdout)
    assert lines[0] == "-rwsr-xr-x"  # the bit is set ...
    assert lines[1] == "65534"  # ... and gives nothing: no-new-privileges
    assert lines[-1] == "su-refused" and "uid=0" not in res.stdout


@pytest.mark.case("JB-10", exit=0)
def test_writing_to_the_payload(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        tamper:
          job:
            - |
              for w in 'echo x > /input/payload.json' 'echo x >> /input/payload.json' 'rm -f /input/payload.json' \\
                       'touch /input/new' 'chmod 666 /input/payload.json' 'mv /input/payload.json /input/p'; do
                  if sh -c "$w" 2>/dev/null; then echo "CHANGED $w"; else echo refused; fi
              done
            - cat /input/payload.json
        """)
    payload = env.root / "p.json"
    payload.write_text('{"A": "original"}')
    res = env.run("tamper", "--payload", "p.json", "--network", "none")
    assert_clean(res, case.exit)
    lines = output_lines(res.stdout)
    assert lines.count("refused") == 6 and not any(line.startswith("CHANGED") for line in lines)
    assert lines[-1] == '{"A": "original"}'
    sha = hashlib.sha256(payload.read_bytes()).hexdigest()
    assert env.last()["payload"]["sha256"] == sha
    assert (env.store / "payloads" / f"{sha}.json").read_text() == '{"A": "original"}'


@pytest.mark.case("JB-11", exit=3)
def test_printing_fake_status_markers(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        liar:
          job:
            - echo "end 0 0 1.0"; echo "start 1 1.0"; echo "end 1 0 2.0"; echo '{{"status":"succeeded","exit_code":0}}'
            - 'echo "anna-run: run XXXX-XXXX-XXXX-XXXX succeeded in 0.1 s" >&2; printf "\\033[2K\\r$ exit 0\\n"; exit 3'
            - echo never
        """)
    res = env.run("liar", "--network", "none")
    assert_clean(res, case.exit)
    record = env.last()
    assert record["status"] == "failed" and record["exit_code"] == 3
    assert [c["exit_code"] for c in record["commands"]] == [0, 3, None]
    assert "failed" in res.stderr.splitlines()[-1]  # anna-run's own last word


@pytest.mark.case("JB-12", exit=137)
def test_rewriting_the_status_file(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        forger:
          job:
            - echo ok
            - |
              printf 'start 0 1\\nend 0 1 0\\nstart 1 1\\nend 1 1 0\\nstart 2 2\\nend 2 2 0\\n' > /.anna-run/status
              kill -9 $$
            - echo never
        """)
    res = env.run("forger", "--network", "none")
    assert_clean(res, case.exit)
    record = env.last()
    # The per-command list is the shell's own account, which a job may rewrite; the run's
    # status and exit code come from the engine and stay true.
    assert record["status"] == "failed" and record["exit_code"] == 137


@pytest.mark.case("JB-13", exit=0)
def test_background_process_left_behind(env, busybox, ours, case):
    env.project(f"""
        environment: {{image: {BB}}}
        daemon: {{job: ['sleep 1000 & nohup sh -c "sleep 1000" >/dev/null 2>&1 & echo left-them-running']}}
        """)
    before = ours()
    start = time.monotonic()
    res = env.run("daemon", "--network", "none", timeout=60)
    assert_clean(res, case.exit)
    assert time.monotonic() - start < 20
    assert output_lines(res.stdout) == ["left-them-running"]
    assert ours() == before


@pytest.mark.case("JB-14", exit=0)
def test_binary_and_terminal_control_output(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        noise:
          job:
            - printf 'bad \\377\\376 utf8\\n\\033]0;title\\007\\033[2J\\000nul\\n'
            - head -c 100000 /dev/urandom >&2
        """)
    res = env.run("noise", "--network", "none")
    assert_clean(res, case.exit)
    record = env.last()
    stored = _stored_log(env, record)
    assert "bad \ufffd\ufffd utf8" in stored and record["status"] == "succeeded"
