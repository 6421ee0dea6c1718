"""A run end to end on the real engine: semantics, record, exit codes, outputs."""

from __future__ import annotations

import hashlib
import json
import os

BB = "anna-run/busybox:latest"


def _output_lines(stdout: str) -> list[str]:
    """The job's own output lines, without the `$ command` echo lines."""
    return [line for line in stdout.splitlines() if not line.startswith("$ ")]


def test_success_record_and_streams(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        variables: {{MODEL: linear}}
        greet:
          job:
            - echo "hello $MODEL"
            - echo to-stderr >&2
            - mkdir out && echo '{{}}' > out/summary.json
          output:
            result: out/summary.json
        """)
    res = env.run("greet", "--network", "none")
    assert res.returncode == 0, res.output
    assert "hello linear" in res.stdout and "to-stderr" not in _output_lines(res.stdout)
    assert "to-stderr" in res.stderr
    rec = env.last()
    assert rec["status"] == "succeeded" and rec["exit_code"] == 0 and rec["reason"] is None
    assert [c["exit_code"] for c in rec["commands"]] == [0, 0, 0]
    assert all(c["duration_s"] is not None for c in rec["commands"])
    assert rec["variables"] == {"MODEL": "linear"}
    assert rec["image"]["name"] == BB and rec["image"]["id"].startswith("sha256:")
    assert len(rec["package"]["sha256"]) == 64 and rec["payload"] is None
    assert rec["runner_version"] and rec["host"] and rec["started_at"] and rec["finished_at"]
    run_dir = env.run_dir(rec["id"])
    assert (run_dir / "stdout.log").read_text().count("hello linear") == 1
    assert "to-stderr" in (run_dir / "stderr.log").read_text()
    assert "to-stderr" in (run_dir / "log.txt").read_text()


def test_one_shell_stop_at_first_failure(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        steps:
          job:
            - mkdir -p sub && cd sub
            - export FOO=carried
            - pwd > /tmp/where; echo "$FOO" >> /tmp/where; cat /tmp/where
            - exit 7
            - echo never
        """)
    res = env.run("steps", "--network", "none")
    assert res.returncode == 7, res.output
    assert (
        "/code/sub" in res.stdout and "carried" in res.stdout and "never" not in res.stdout.replace("$ echo never", "")
    )
    rec = env.last()
    assert rec["status"] == "failed" and rec["exit_code"] == 7
    assert [c["exit_code"] for c in rec["commands"]] == [0, 0, 0, 7, None]
    assert "$ exit 7" in res.stdout


def test_fake_status_markers_are_just_output(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        liar:
          job:
            - echo "end 0 1.0 0"; echo "start 1 1.0"; echo '{{"status":"succeeded"}}'; false
        """)
    res = env.run("liar", "--network", "none")
    assert res.returncode == 1
    assert env.last()["status"] == "failed"


def test_payload_variables_and_read_only_mount(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        p:
          job:
            - echo "from=$FROM_DATE n={{{{ N }}}} obj=$OBJ flag=$FLAG null=[$NOTHING]"
            - echo "path=$PAYLOAD_PATH aa=$AA_PAYLOAD_PATH run=$JOBRUN_SUUID/$AA_RUN_SUUID job=$AA_JOB_NAME"
            - cat {{{{ PAYLOAD_PATH }}}}
            - if echo x > /input/payload.json; then echo WROTE; else echo refused-write; fi
        """)
    (env.root / "p.json").write_text(
        json.dumps({"FROM_DATE": "2020-09-07", "N": 1.50, "OBJ": {"a": [1, 2]}, "FLAG": True, "NOTHING": None})
    )
    res = env.run("p", "--payload", "p.json", "--network", "none")
    assert res.returncode == 0, res.output
    assert 'from=2020-09-07 n=1.5 obj={"a":[1,2]} flag=true null=[]' in res.stdout
    rec = env.last()
    assert f"path=/input/payload.json aa=/input/payload.json run={rec['id']}/{rec['id']} job=p" in res.stdout
    assert '"FROM_DATE": "2020-09-07"' in res.stdout
    assert "refused-write" in _output_lines(res.stdout) and "WROTE" not in _output_lines(res.stdout)
    assert rec["payload"]["sha256"] == hashlib.sha256((env.root / "p.json").read_bytes()).hexdigest()
    assert (env.store / "payloads" / f"{rec['payload']['sha256']}.json").exists()


def test_payload_not_an_object_is_mounted_without_variables(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        p:
          job: [cat /input/payload.json, 'env | grep -c "^0=" || true']
        """)
    (env.root / "list.json").write_text('[1, 2, "three"]')
    res = env.run("p", "--payload", "list.json", "--network", "none")
    assert res.returncode == 0, res.output
    assert '[1, 2, "three"]' in res.stdout
    assert env.last()["variables"] == {}


def test_payload_from_stdin(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        p: {{job: ['echo "x=$X"']}}
        """)
    res = env.run("p", "--payload", "-", "--network", "none", input='{"X": "from-stdin"}')
    assert res.returncode == 0, res.output
    assert "x=from-stdin" in res.stdout


def test_injection_in_values_is_data(env, busybox, tmp_path):
    env.project(f"""
        environment: {{image: {BB}}}
        inj:
          job:
            - printf '[%s]\\n' {{{{ A }}}} "{{{{ B }}}}" '{{{{ C }}}}'
        """)
    hostile = {"A": "$(echo PWNED-A)", "B": '`echo PWNED-B`"; echo PWNED-B2 #', "C": "'; echo PWNED-C; '\n--rm *"}
    (env.root / "p.json").write_text(json.dumps(hostile))
    res = env.run("inj", "--payload", "p.json", "--network", "none")
    assert res.returncode == 0, res.output
    out = res.stdout
    for value in hostile.values():
        assert f"[{value}]" in out
    assert "\nPWNED" not in out and not out.startswith("PWNED")


def test_secrets_are_masked_everywhere(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        s:
          job:
            - echo "token is $API_TOKEN"
            - echo "pw {{{{ DB_PASSWORD }}}} literal s3cr3t-value-123"
            - printf 'split-'; printf 'hunter'; sleep 0.3; printf '2-secret\\n'
            - '[ "$API_TOKEN" = "tok-abcdef-123456" ] && echo container-has-real-value'
        """)
    res = env.run(
        "s",
        "--var",
        "API_TOKEN=tok-abcdef-123456",
        "--secret",
        "DB_PASSWORD=s3cr3t-value-123",
        "--secret",
        "SPLIT=split-hunter2-secret",
        "--network",
        "none",
    )
    assert res.returncode == 0, res.output
    rec = env.last()
    stored = (env.run_dir(rec["id"]) / "log.txt").read_text()
    record_text = json.dumps(rec)
    for secret in ("tok-abcdef-123456", "s3cr3t-value-123", "split-hunter2-secret"):
        assert secret not in res.stdout and secret not in res.stderr
        assert secret not in stored and secret not in record_text
    assert "token is ***" in res.stdout and "container-has-real-value" in res.stdout
    assert "literal ***" in res.stdout  # the echo line and the output
    assert rec["variables"]["API_TOKEN"] == "***" and rec["variables"]["DB_PASSWORD"] == "***"
    assert "***" in stored


def test_artifacts_result_and_globs(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        a:
          job:
            - mkdir -p models/sub logs && echo '{{"acc":'' 1}}' > models/summary.json
            - echo weights > models/sub/w.bin && echo one > logs/a.log && echo two > logs/b.txt
          output:
            result: models/summary.json
            artifact: [models/, "logs/*.log"]
        """)
    res = env.run("a", "--network", "none")
    assert res.returncode == 0, res.output
    rec = env.last()
    assert rec["result"]["path"] == "models/summary.json"
    assert rec["result"]["sha256"] == hashlib.sha256(b'{"acc": 1}\n').hexdigest()
    paths = [a["path"] for a in rec["artifacts"]]
    assert paths == ["logs/a.log", "models/sub/w.bin", "models/summary.json"]
    run_dir = env.run_dir(rec["id"])
    w = run_dir / "artifacts/models/sub/w.bin"
    assert w.read_text() == "weights\n" and w.stat().st_uid == os.getuid()
    assert not (run_dir / "artifacts/logs/b.txt").exists()
    out = env.run("result", rec["id"])
    assert out.stdout == '{"acc": 1}\n'
    dest = env.root.parent / "copied"
    assert env.run("artifact", rec["id"], "-o", str(dest)).returncode == 0
    assert (dest / "logs/a.log").read_text() == "one\n"


def test_outputs_collected_on_failure_and_missing_result(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        f:
          job: [mkdir -p out && echo partial > out/log.txt && false]
          output: {{result: out/result.json, artifact: out/}}
        m:
          job: [echo fine]
          output: {{result: out/result.json}}
        """)
    res = env.run("f", "--network", "none")
    assert res.returncode == 1
    rec = env.last()
    assert rec["status"] == "failed" and [a["path"] for a in rec["artifacts"]] == ["out/log.txt"]
    res = env.run("m", "--network", "none")
    assert res.returncode == 1
    rec = env.last()
    assert rec["status"] == "failed" and rec["reason"] == "result missing: out/result.json"


def test_symlinks_out_of_the_workspace_are_never_followed(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        l:
          job:
            - ln -s /etc etc-link && ln -s /etc/passwd pw && mkdir d && ln -s /etc/passwd d/pw && echo ok > d/f
          output:
            result: pw
            artifact: [etc-link/, d/, "etc-link/*"]
        """)
    res = env.run("l", "--network", "none")
    assert res.returncode == 1, res.output
    rec = env.last()
    assert rec["status"] == "failed" and "refused" in rec["reason"]
    assert [a["path"] for a in rec["artifacts"]] == ["d/f"]
    assert any("etc-link" in r for r in rec["refused"]) and any("d/pw" in r for r in rec["refused"])
    run_dir = env.run_dir(rec["id"])
    for path in run_dir.rglob("*"):
        assert "root:" not in (path.read_text(errors="replace") if path.is_file() and not path.is_symlink() else "")


def test_stdin_is_closed(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        r: {{job: ['cat; echo "read-done"']}}
        """)
    res = env.run("r", "--network", "none", input="should-not-arrive\n", timeout=60)
    assert res.returncode == 0 and "read-done" in res.stdout and "should-not-arrive" not in res.stdout


def test_many_jobs_project_runs_twice_with_the_same_bytes(env, busybox):
    """Like public AskAnna projects: `cd` in the first command, results appended with >>, folders."""
    env.project(
        f"""
        push-target: https://beta.askanna.eu/demo/project/abcd-efgh-ijkl-mnop
        environment: {{image: {BB}}}
        prepare:
          job:
            - cd data && cat raw.csv | sort > ../sorted.csv
            - 'mkdir -p ../result && echo "rows: $(wc -l < ../sorted.csv)" >> ../result/summary.txt'
          output: {{result: result/summary.txt, artifact: [sorted.csv]}}
        report:
          job:
            - mkdir -p result out && for i in 1 2 3; do echo "line $i" >> result/report.txt; done
            - cp result/report.txt out/copy.txt
          output: {{result: result/report.txt, artifact: [out/, result/]}}
        """,
        {"data/raw.csv": "b,2\na,1\nc,3\n"},
    )
    digests = []
    for _ in range(2):
        for job in ("prepare", "report"):
            res = env.run(job, "--network", "none")
            assert res.returncode == 0, res.output
            rec = env.last()
            digests.append((job, rec["result"]["sha256"], tuple(a["sha256"] for a in rec["artifacts"])))
    assert digests[:2] == digests[2:]
    assert (env.root / "result").exists() is False  # the user's project is never modified


def test_a_script_too_long_for_one_argument_still_runs(env, busybox):
    """Past 100 KB the script goes in through the archive API instead of the shell's argument."""
    long_word = "x" * 150_000
    env.project(f"""
        environment: {{image: {BB}}}
        big: {{job: ['echo {long_word} | wc -c', 'echo second']}}
        """)
    res = env.run("big", "--network", "none", "-q")
    assert res.returncode == 0, res.output[-2000:]
    assert "150001" in _output_lines(res.stdout) and "second" in _output_lines(res.stdout)
    assert [c["exit_code"] for c in env.last()["commands"]] == [0, 0]


def test_one_command_job_durations_without_the_status_file(env, busybox):
    """A one-command job that ends with 0 takes its duration from the engine's StartedAt and
    FinishedAt instead of reading the status file back (one archive call less per run)."""
    env.project(f"""
        environment: {{image: {BB}}}
        nap: {{job: ['sleep 1']}}
        nap_fail: {{job: ['sleep 1; exit 4']}}
        """)
    assert env.run("nap", "--network", "none").returncode == 0
    rec = env.last()
    (command,) = rec["commands"]
    assert command["exit_code"] == 0
    assert 1.0 <= command["duration_s"] <= rec["duration_s"], rec
    assert env.run("nap_fail", "--network", "none").returncode == 4
    (command,) = env.last()["commands"]
    assert command["exit_code"] == 4 and command["duration_s"] >= 1.0


def test_large_artifact_bytes_and_hash_match_the_container(env, busybox):
    """A file big enough for the overlapped write (>= 8 MB), with content where a chunk out of
    order would show: stored bytes and recorded sha256 equal sha256sum inside the container."""
    env.project(f"""
        environment: {{image: {BB}}}
        big:
          job: ['mkdir out && seq 1 2500000 > out/seq.txt && sha256sum out/seq.txt | cut -c1-64 > sum.txt']
          output: {{result: sum.txt, artifact: [out/]}}
        """)
    assert env.run("big", "--network", "none").returncode == 0
    rec = env.last()
    inside = (env.run_dir(rec["id"]) / "result" / "sum.txt").read_text().strip()
    [art] = rec["artifacts"]
    stored = env.run_dir(rec["id"]) / "artifacts" / "out" / "seq.txt"
    assert art["size"] == stored.stat().st_size > 16 << 20
    assert art["sha256"] == inside == hashlib.sha256(stored.read_bytes()).hexdigest()
