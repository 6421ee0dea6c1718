"""Hostile askanna.yml files: refused fast with one located message, or run exactly as written."""

from __future__ import annotations

import json
import time

import pytest

from .support import BB, assert_clean, assert_error, nothing_created, output_lines

HEAD = f"environment: {{image: {BB}}}\n"


def _refused_fast(env, ours, case, text: str | bytes, *needles: str) -> None:
    """`anna-run train` on this file: exit 2 with one message naming the file (and line), under a
    second for the whole process, and nothing created."""
    env.root.mkdir(parents=True, exist_ok=True)
    path = env.root / "askanna.yml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = ours()
    start = time.monotonic()
    res = env.run("train", "--network", "none")
    took = time.monotonic() - start
    assert_error(res, case.exit, "askanna.yml", *needles)
    assert took < 1.0, f"refused after {took:.2f} s"
    nothing_created(env, ours, before)
    assert not env.store.exists()


@pytest.mark.case("PF-01", exit=2)
def test_alias_bomb(env, ours, case):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    _refused_fast(env, ours, case, HEAD + "\n".join(levels) + "\ntrain: {job: [echo hi]}\n", "aliases expand")


@pytest.mark.case("PF-02", exit=2)
def test_deep_nesting(env, ours, case):
    deep = "[" * 100_000 + "]" * 100_000
    _refused_fast(env, ours, case, HEAD + f"junk: {deep}\ntrain: {{job: [echo hi]}}\n", "nesting is deeper")


@pytest.mark.case("PF-03", exit=2)
def test_50_mb_file(env, ours, case):
    filler = "# padding\n" * (50 * (1 << 20) // 10)
    _refused_fast(env, ours, case, HEAD + "train: {job: [echo hi]}\n" + filler, "the limit is 10 MB")


@pytest.mark.case("PF-04", exit=2)
def test_non_utf8_bytes(env, ours, case):
    text = HEAD.encode() + b"train: {job: [echo caf\xe9]}\n"
    _refused_fast(env, ours, case, text, "askanna.yml:2:", "not valid UTF-8", "0xe9")


@pytest.mark.case("PF-05", exit=2)
def test_duplicate_keys(env, ours, case):
    text = HEAD + "train: {job: [echo one]}\ntrain: {job: [echo two]}\n"
    _refused_fast(env, ours, case, text, "askanna.yml:3:", "duplicate key 'train' on lines 2 and 3")


@pytest.mark.case("PF-06", exit=2)
def test_tabs(env, ours, case):
    _refused_fast(env, ours, case, HEAD + "train:\n\tjob: [echo hi]\n", "askanna.yml:3:", "'\\t'")


@pytest.mark.case("PF-07", exit=2)
def test_job_that_is_a_string(env, ours, case):
    _refused_fast(env, ours, case, HEAD + "train: echo hi\n", "askanna.yml:2:1:", "'train' is a string, not a job")


@pytest.mark.case("PF-08", exit=2)
def test_job_that_is_a_list(env, ours, case):
    _refused_fast(env, ours, case, HEAD + "train: [echo hi]\n", "askanna.yml:2:1:", "'train' is a list")


@pytest.mark.case("PF-09", exit=2)
def test_job_that_is_null(env, ours, case):
    _refused_fast(env, ours, case, HEAD + "train:\n", "askanna.yml:2:1:", "'train' is empty, not a job")


@pytest.mark.case("PF-10", exit=2)
def test_command_that_is_a_number(env, ours, case):
    text = HEAD + "train: {job: [echo hi, 42]}\n"
    _refused_fast(env, ours, case, text, "askanna.yml:2:24:", "command must be a string, not a number")


@pytest.mark.case("PF-11", exit=2)
def test_command_that_is_a_mapping(env, ours, case):
    text = HEAD + "train:\n  job:\n    - echo result: done\n"
    _refused_fast(env, ours, case, text, "askanna.yml:4:7:", "command must be a string, not a mapping")
    assert "': ' inside it makes YAML read a mapping" in env.run("validate").stderr


@pytest.mark.case("PF-12", exit=2)
def test_empty_job_list(env, ours, case):
    _refused_fast(env, ours, case, HEAD + "train: {job: []}\n", "askanna.yml:2:", "`job:` is an empty list")


@pytest.mark.case("PF-13", exit=0)
def test_job_names_with_spaces_unicode_and_slash(env, busybox, case):
    names = ["my job", "trän 🚀 モデル", "models/train"]
    env.project(HEAD + "".join(f'"{name}": {{job: [\'echo "name=[$AA_JOB_NAME]"\']}}\n' for name in names))
    for name in names:
        res = env.run("run", name, "--network", "none")
        assert_clean(res, case.exit)
        assert f"name=[{name}]" in output_lines(res.stdout)
        record = env.last()
        assert record["job"] == name and record["status"] == "succeeded"
        assert (env.store / "runs" / record["id"] / "run.json").is_file()  # the id names the folder, not the job
    runs = json.loads(env.run("runs", "--json").stdout)
    assert sorted(r["job"] for r in runs) == sorted(names)


@pytest.mark.case("PF-14", exit=0)
def test_job_named_like_a_command(env, busybox, case):
    env.project(HEAD + "gc: {job: [echo from-the-gc-job]}\nshow: {job: [echo from-the-show-job]}\n")
    res = env.run("run", "gc", "--network", "none")
    assert_clean(res, case.exit)
    assert "from-the-gc-job" in output_lines(res.stdout)
    shown = env.run("show", "--json")  # `show` is still the command, not the job
    assert shown.returncode == 0 and json.loads(shown.stdout)["job"] == "gc"
    assert "from-the-show-job" not in shown.output


@pytest.mark.case("PF-15", exit=0)
def test_unbalanced_braces(env, busybox, case):
    env.project(HEAD + 'train: {job: [\'echo "{{ A" "b }}" "{{.Id}}"\']}\n')
    res = env.run("train", "--network", "none")
    assert_clean(res, case.exit)
    assert "{{ A b }} {{.Id}}" in output_lines(res.stdout)
    assert "is not a {{ NAME }} reference; it is left as written" in res.stderr
    assert any("left as written" in warning for warning in env.last()["warnings"])


@pytest.mark.case("PF-16", exit=0)
def test_no_second_expansion(env, busybox, case):
    env.project(
        HEAD
        + "variables: {A: '${B}', B: expanded-once-too-many, C: '{{ B }}'}\n"
        + "train:\n"
        + "  job:\n"
        + "    - printf '[%s]\\n' \"${A}\" {{ A }} '{{ C }}' $A\n"
        + '    - mkdir -p out && printf x > "out/${A}"\n'
        + "  output: {artifact: ['out/{{ A }}']}\n"
    )
    res = env.run("train", "--network", "none")
    assert_clean(res, case.exit)
    assert output_lines(res.stdout) == ["[${B}]", "[${B}]", "[{{ B }}]", "[${B}]"]
    assert "expanded-once-too-many" not in res.stdout
    record = env.last()
    assert [a["path"] for a in record["artifacts"]] == ["out/${B}"]
