"""The hardened YAML reader: alias bombs, deep nesting, big files, bad bytes and duplicate keys are
refused with file:line:col, checked through real askanna.yml files in tmp_path."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from anna_run.errors import ConfigError
from anna_run.project import Environment, load_project


@pytest.fixture
def write(tmp_path: Path):
    """Write `text` (or bytes) as askanna.yml in tmp_path and return its path."""

    def _write(text: str | bytes, name: str = "askanna.yml") -> Path:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    return _write


def load(write, text: str):
    return load_project(write(text))


def error(write, text: str | bytes) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_project(write(text))
    return info.value


def at(path: Path, line: int, column: int) -> str:
    return f"{path}:{line}:{column}: "


def test_billion_laughs_refused_fast(write) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    path = write("\n".join(lines) + "\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert time.perf_counter() - started < 1.0
    assert "aliases expand to more than" in str(info.value)
    assert info.value.line is not None


def test_many_aliases_to_a_scalar_refused(write) -> None:
    assert "aliases expand" in str(error(write, "x: &x hello\nlist: [" + ", ".join(["*x"] * 20_000) + "]\n"))


def test_modest_alias_use_is_fine(write) -> None:
    jobs = "".join(f"job{i}:\n  job: [x]\n  environment: *env\n" for i in range(1, 200))
    project = load(write, "job0:\n  job: [x]\n  environment: &env {image: 'python:3.12'}\n" + jobs)
    assert len(project.jobs) == 200
    assert all(job.environment == Environment(image="python:3.12") for job in project.jobs)


def test_deep_nesting_refused(write) -> None:
    err = error(write, "a:\n  job: [x]\nb: " + "[" * 200 + "]" * 200 + "\n")
    assert "nesting is deeper than 64 levels" in str(err)
    assert err.line == 3


def test_a_hundred_thousand_brackets_refused_before_the_scanner_reads_them(write) -> None:
    path = write("a:\n  job: [x]\nb: " + "[ " * 100_000 + "]" * 100_000 + "\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="nesting is deeper than 64 levels") as info:
        load_project(path)
    assert time.perf_counter() - started < 0.2  # the scanner alone takes about half a second
    assert (info.value.line, info.value.column) == (3, 4 + 64 * 2)  # the 65th bracket


def test_brackets_in_quotes_and_comments_are_no_nesting(write) -> None:
    brackets = "[" * 100
    text = f'a:\n  job: [\'echo "{brackets}"\']  # {{{{{{{{{brackets}\n  description: "{brackets}"\n'
    assert load(write, text).job("a").commands == (f'echo "{brackets}"',)


def test_deep_block_nesting_refused(write) -> None:
    text = "".join("  " * depth + f"k{depth}:\n" for depth in range(100)) + "  " * 100 + "v\n"
    assert "nesting is deeper than 64" in str(error(write, text))


def test_big_file_refused_before_reading(write) -> None:
    path = write(b"# " + b"x" * (11 * 1024 * 1024) + b"\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert time.perf_counter() - started < 0.5
    assert str(info.value) == f"{path}: askanna.yml is 11.0 MB; the limit is 10 MB"


def test_not_utf8(write) -> None:
    path = write(b"a:\n  job:\n    - echo caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert str(info.value).startswith(at(path, 3, 15))
    assert "UTF-8" in str(info.value) and "0xe9" in str(info.value)


def test_not_utf8_column_counts_characters(write) -> None:
    err = error(write, b"a: \xc3\xa9\xff\n")  # "a: é" is four characters, five bytes
    assert (err.line, err.column) == (1, 5)


def test_control_character_refused(write) -> None:
    err = error(write, 'a:\n  job: ["x\x01"]\n')
    assert "not allowed in YAML" in str(err)
    assert (err.line, err.column) == (2, 11)


def test_duplicate_keys(write) -> None:
    path = write("train:\n  job: [x]\nother: 1\ntrain:\n  job: [y]\n")
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert str(info.value) == f"{at(path, 4, 1)}duplicate key 'train' on lines 1 and 4"


def test_nested_duplicate_keys(write) -> None:
    err = error(write, "a:\n  job: [x]\n  timeout: 1m\n  timeout: 2m\n")
    assert "duplicate key 'timeout' on lines 3 and 4" in str(err)


def test_tab_indentation(write) -> None:
    path = write("train:\n\tjob:\n\t\t- echo hi\n")
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert str(info.value).startswith(at(path, 2, 1) + "invalid YAML: ")
    assert "\\t" in str(info.value)
    assert "tabs" in (info.value.hint or "")


def test_bad_indentation(write) -> None:
    path = write("train:\n  job:\n    - a\n   - b\n")
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert str(info.value).startswith(f"{path}:4:")
    assert "invalid YAML" in str(info.value)


def test_unclosed_quote(write) -> None:
    err = error(write, "train:\n  job: ['echo hi]\n")
    assert "invalid YAML" in str(err) and err.line is not None


def test_several_documents_refused(write) -> None:
    assert "invalid YAML" in str(error(write, "a:\n  job: [x]\n---\nb:\n  job: [y]\n"))


def test_python_tags_never_constructed(write) -> None:
    err = error(write, "a:\n  job:\n    - !!python/object/apply:os.system ['echo pwned']\n")
    assert "command must be a string" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_project(tmp_path / "askanna.yml")
