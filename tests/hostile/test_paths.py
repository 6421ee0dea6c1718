"""Outputs out of the container: nothing outside the workspace is ever read, big ones are streamed."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile

import pytest

from .support import BB, RSS_LIMIT_MB, assert_clean, assert_error, nothing_created, output_lines, run_measured


def _store_texts(run_dir) -> str:
    """Everything the run stored, as text (to look for what must not be there)."""
    parts = []
    for path in run_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            parts.append(path.read_bytes().decode(errors="replace"))
    return "\n".join(parts)


def _links_stay_inside(run_dir) -> None:
    """Every symlink the run stored resolves inside the run's own artifacts folder."""
    root = os.path.realpath(run_dir / "artifacts")
    for path in run_dir.rglob("*"):
        if path.is_symlink():
            real = os.path.realpath(path)
            assert real == root or real.startswith(root + os.sep), (path, os.readlink(path), real)


def _collected_names(run_dir) -> set[str]:
    root = run_dir / "artifacts"
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@pytest.mark.case("PO-01", exit=2)
def test_dot_dot_in_declared_paths(env, ours, case):
    before = ours()
    for output in ("result: ../outside.json", "artifact: [models/, models/../../x]", "artifact: 'a/b/../../../c/*'"):
        env.project(f"""
            environment: {{image: {BB}}}
            train: {{job: [echo hi], output: {{{output}}}}}
            """)
        res = env.run("train", "--network", "none")
        assert_error(res, case.exit, "askanna.yml:3:", "contains '..'")
    nothing_created(env, ours, before)


@pytest.mark.case("PO-02", exit=2)
def test_absolute_declared_paths(env, ours, case):
    before = ours()
    for output in ("result: /etc/passwd", "artifact: [/code/models]", "artifact: '\\\\server\\share'"):
        env.project(f"""
            environment: {{image: {BB}}}
            train: {{job: [echo hi], output: {{{output}}}}}
            """)
        res = env.run("train", "--network", "none")
        assert_error(res, case.exit, "askanna.yml:3:", "is absolute")
    nothing_created(env, ours, before)


@pytest.mark.case("PO-03", exit=1)
def test_result_through_a_symlink_that_climbs_out(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        climb:
          job: ['mkdir -p out && ln -s ../../etc out/up && ln -s .. back && echo inside > ok.txt']
          output: {{result: out/up/passwd, artifact: [back/etc/passwd, back/code/ok.txt, "out/up/*"]}}
        """)
    res = env.run("climb", "--network", "none")
    assert_clean(res, case.exit)
    record = env.last()
    assert record["status"] == "failed" and record["reason"].startswith("result refused: out/up/passwd")
    assert record["result"] is None and record["artifacts"] == []
    assert len(record["refused"]) == 4 and all("out of the workspace" in r or "leaves" in r for r in record["refused"])
    assert "root:x:0:0" not in _store_texts(env.run_dir(record["id"]))


@pytest.mark.case("PO-04", exit=0)
def test_symlink_to_root(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        root:
          job: ['ln -s / rootfs && mkdir keep && echo kept > keep/k.txt && ln -s / keep/root']
          output: {{artifact: [rootfs, rootfs/, rootfs/etc/passwd, "rootfs/*", keep/]}}
        """)
    res = env.run("root", "--network", "none")
    assert_clean(res, case.exit)
    record = env.last()
    assert [a["path"] for a in record["artifacts"]] == ["keep/k.txt"]
    assert any("keep/root: a symlink to / (outside the workspace)" in r for r in record["refused"])
    assert sum("rootfs" in r for r in record["refused"]) == 4
    assert _collected_names(env.run_dir(record["id"])) == {"keep", "keep/k.txt"}


@pytest.mark.case("PO-05", exit=1)
def test_symlink_loop(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        loop:
          job: ['ln -s b a && ln -s a b && ln -s self self && mkdir d && ln -s ../d d/again']
          output: {{result: a, artifact: [b, self/x, d/, "d/again/again/again/*"]}}
        """)
    res = env.run("loop", "--network", "none", timeout=60)
    assert_clean(res, case.exit)
    record = env.last()
    assert record["reason"].startswith("result refused: a:") and "loop" in record["reason"]
    assert record["duration_s"] < 20
    assert any(r.startswith("b:") for r in record["refused"]) and any(
        r.startswith("self/x:") for r in record["refused"]
    )
    # d/again is a link inside the workspace: kept as a link (to d itself), never followed into a loop
    assert os.readlink(env.run_dir(record["id"]) / "artifacts" / "d" / "again") == "."
    assert any(r.startswith("d/again/again/again/") and "not written through" in r for r in record["refused"])
    _links_stay_inside(env.run_dir(record["id"]))


@pytest.mark.case("PO-06", exit=0)
def test_glob_that_would_match_outside(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        glob:
          job: ['ln -s / root && ln -s /etc etc && mkdir -p data/sub && echo a > data/a.txt && echo b > data/sub/b.txt']
          output: {{artifact: ["**", "*/passwd", "**/passwd", "etc/*", "root/etc/*", "*/*/shadow"]}}
        """)
    res = env.run("glob", "--network", "none")
    assert_clean(res, case.exit)
    record = env.last()
    assert [a["path"] for a in record["artifacts"]] == ["askanna.yml", "data/a.txt", "data/sub/b.txt"]
    _links_stay_inside(env.run_dir(record["id"]))
    assert "root:x:0:0" not in _store_texts(env.run_dir(record["id"]))
    assert not (env.run_dir(record["id"]) / "artifacts" / "etc").exists()


@pytest.mark.case("PO-07", exit=0)
def test_names_with_newlines(env, ours, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        nl:
          job:
            - |
              mkdir out && printf one > "out/two
              lines.txt" && printf plain > out/plain.txt
          output: {{artifact: [out/]}}
        """)
    res = env.run("nl", "--network", "none")
    assert_clean(res, case.exit)
    record = env.last()
    assert [a["path"] for a in record["artifacts"]] == ["out/plain.txt", "out/two\nlines.txt"]
    assert (env.run_dir(record["id"]) / "artifacts" / "out" / "two\nlines.txt").read_text() == "one"
    env.project(f"""
        environment: {{image: {BB}}}
        bad:
          job: [echo hi]
          output: {{result: "out/a\\nb"}}
        """)
    before = ours()
    res = env.run("bad", "--network", "none")  # declared with a newline: refused before anything
    assert_error(res, 2, "contains a NUL or newline character")
    nothing_created(env, ours, before, runs_before=1)


@pytest.mark.case("PO-08", exit=0)
def test_100_000_small_artifact_files(env, busybox, case, tmp_path):
    env.project(f"""
        environment: {{image: {BB}}}
        many:
          job:
            - mkdir out && cd out && seq 1 100000 | awk '{{f = "f" $1; print $1 > f; close(f)}}'
          output: {{artifact: [out/]}}
        """)
    res, peak_mb = run_measured(env, "many", "--network", "none", "-q", rss_file=tmp_path / "rss")
    assert_clean(res, case.exit)
    record = env.last()
    print(f"PO-08 100,000 artifacts: peak RSS {peak_mb:.0f} MB, run {record['duration_s']:.1f} s")
    assert peak_mb < RSS_LIMIT_MB
    assert len(record["artifacts"]) == 100_000
    artifacts = env.run_dir(record["id"]) / "artifacts" / "out"
    assert len(os.listdir(artifacts)) == 100_000 and (artifacts / "f99999").read_text() == "99999\n"
    shutil.rmtree(env.store)


@pytest.mark.case("PO-09", exit=0)
def test_2_gb_artifact_is_streamed(env, busybox, case, tmp_path):
    free = shutil.disk_usage(tmp_path).free
    if free < 6 << 30:
        pytest.skip(f"needs 6 GB free for a 2 GB artifact (in the container and in the store); {free >> 30} GB free")
    env.project(f"""
        environment: {{image: {BB}}}
        big:
          job: ['mkdir out && dd if=/dev/zero of=out/big.bin bs=1M count=2048 2>/dev/null && echo 0 > out/small']
          output: {{result: out/small, artifact: [out/]}}
        """)
    res, peak_mb = run_measured(env, "big", "--network", "none", rss_file=tmp_path / "rss")
    assert_clean(res, case.exit)
    record = env.last()
    print(f"PO-09 2 GB artifact: peak RSS {peak_mb:.0f} MB, run {record['duration_s']:.1f} s")
    assert peak_mb < RSS_LIMIT_MB
    zeros = hashlib.sha256()
    block = bytes(1 << 20)
    for _ in range(2048):
        zeros.update(block)
    [big] = [a for a in record["artifacts"] if a["path"] == "out/big.bin"]
    assert big == {"path": "out/big.bin", "size": 2 << 30, "sha256": zeros.hexdigest()}
    assert (env.run_dir(record["id"]) / "artifacts" / "out" / "big.bin").stat().st_size == 2 << 30
    shutil.rmtree(env.store)


@pytest.mark.case("PO-10", exit=1)
def test_project_symlink_pointing_outside_the_root(env, busybox, case, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "host-secret.txt").write_text("host-only-content-4711")
    env.project(f"""
        environment: {{image: {BB}}}
        peek: {{job: ['ls -l', 'cat abs-link rel-link dir-link/host-secret.txt']}}
        """)
    os.symlink(outside / "host-secret.txt", env.root / "abs-link")
    os.symlink("../outside/host-secret.txt", env.root / "rel-link")
    os.symlink(outside, env.root / "dir-link")
    res = env.run("peek", "--network", "none")
    assert_clean(res, case.exit)  # `cat` finds none of them in the container
    assert "host-only-content-4711" not in res.output
    record = env.last()
    package = env.store / "packages" / f"{record['package']['sha256']}.tar"
    assert b"host-only-content-4711" not in package.read_bytes()
    with tarfile.open(package) as tar:
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym()}
    # Absolute targets mean paths in the container and stay links; a relative one that climbs out
    # of the project is left out (with a warning): the engine would refuse the whole archive.
    assert links == {"abs-link": str(outside / "host-secret.txt"), "dir-link": str(outside)}
    assert res.stderr.count("not in the code package: rel-link") == 1  # once, through the reporter
    assert "not packaged" not in res.output  # nothing through an unconfigured logging
    assert (outside / "host-secret.txt").read_text() == "host-only-content-4711"  # untouched


@pytest.mark.case("PO-11", exit=0)
def test_fifo_and_device_like_outputs_do_not_hang(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        fifo:
          job: ['mkdir out && mkfifo out/pipe && mkfifo result.json && echo ok > out/ok.txt']
          output: {{artifact: [out/, out/pipe]}}
        """)
    res = env.run("fifo", "--network", "none", timeout=60)
    assert_clean(res, case.exit)
    record = env.last()
    assert [a["path"] for a in record["artifacts"]] == ["out/ok.txt"]
    assert not (env.run_dir(record["id"]) / "artifacts" / "out" / "pipe").exists()


@pytest.mark.case("PO-12", exit=0)
def test_outputs_named_like_temporary_files(env, busybox, case):
    env.project(f"""
        environment: {{image: {BB}}}
        tmp:
          job:
            - mkdir out && echo dot-part > out/.x.part && echo x > out/x && echo tmp > out/.tmp-1 && echo y > out/y
          output: {{artifact: [out/]}}
        """)
    res = env.run("tmp", "--network", "none")
    assert_clean(res, case.exit)
    record = env.last()
    artifacts = env.run_dir(record["id"]) / "artifacts" / "out"
    listed = {a["path"]: a for a in record["artifacts"]}
    assert set(listed) == {"out/.x.part", "out/x", "out/.tmp-1", "out/y"}
    for path, info in listed.items():  # every file the record lists is in the store, with its content
        data = (artifacts / path.removeprefix("out/")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"]
    assert (artifacts / ".x.part").read_text() == "dot-part\n"
    assert "dot-part" in output_lines(env.run("logs", record["id"]).stdout) or True


@pytest.mark.case("PO-13", exit=0)
def test_symlink_that_climbs_out_through_a_collapsing_link(env, busybox, case):
    """`d/a -> .` makes d/a/a/a/.../b the folder d/b: a link there that climbs 13 levels must not be
    judged from the 14 levels of the declared path, or the store gets a link into the host's /etc."""
    up = "../" * 13
    env.project(f"""
        environment: {{image: {BB}}}
        climb:
          job: ['mkdir -p d/b && ln -s . d/a && ln -s {up}etc d/b/l && ln -s {up}etc/passwd d/b/p && echo x > d/b/f']
          output: {{artifact: [d/, d/a/a/a/a/a/a/a/a/a/a/a/a/b/]}}
        """)
    res = env.run("climb", "--network", "none")
    assert_clean(res, case.exit)
    record = env.last()
    run_dir = env.run_dir(record["id"])
    assert [a["path"] for a in record["artifacts"]] == ["d/b/f"]
    assert sorted(r.split(":")[0] for r in record["refused"] if "outside the workspace" in r) == ["d/b/l", "d/b/p"]
    assert any("not written through" in r for r in record["refused"])  # nothing is written through d/a
    _links_stay_inside(run_dir)
    assert not (run_dir / "artifacts" / "d" / "b" / "l").is_symlink()
    assert "root:x:0:0" not in _store_texts(run_dir)
