"""The pure parts of collecting outputs: glob patterns, archive member names, path cleaning."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest
from anna_run.collect import Collected, clean_relpath, collect, glob_to_regex, member_path
from anna_run.sandbox import GO_MODE_DIR
from anna_run.store.base import RunFiles


def matches(pattern: str, path: str) -> bool:
    return re.fullmatch(glob_to_regex(pattern), path) is not None


# -- glob_to_regex ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["a.log", "train.log", ".log", "x.y.log"])
def test_star_matches_within_one_component(path: str) -> None:
    assert matches("*.log", path)


@pytest.mark.parametrize("path", ["sub/a.log", "a/b/c.log", "a.logx", "a.txt", "log"])
def test_star_does_not_cross_slash(path: str) -> None:
    assert not matches("*.log", path)


def test_star_in_a_folder() -> None:
    assert matches("logs/*.txt", "logs/a.txt")
    assert not matches("logs/*.txt", "logs/sub/a.txt")
    assert not matches("logs/*.txt", "other/a.txt")
    assert matches("models/*/weights.bin", "models/v1/weights.bin")
    assert not matches("models/*/weights.bin", "models/v1/v2/weights.bin")


@pytest.mark.parametrize("path", ["x.json", "a/x.json", "a/b/c/d/x.json"])
def test_double_star_matches_at_any_depth_including_top(path: str) -> None:
    assert matches("**/x.json", path)


@pytest.mark.parametrize("path", ["ax.json", "a/bx.json", "x.jsonl", "x.json.bak", "xjson"])
def test_double_star_does_not_match_other_names(path: str) -> None:
    assert not matches("**/x.json", path)


def test_double_star_inside_a_path() -> None:
    assert matches("out/**/m.pkl", "out/m.pkl")
    assert matches("out/**/m.pkl", "out/a/b/m.pkl")
    assert not matches("out/**/m.pkl", "other/m.pkl")
    assert matches("out/**", "out/a/b/c")
    assert matches("**/*.csv", "data/2024/x.csv")
    assert matches("**/*.csv", "x.csv")


def test_question_mark_is_one_character_not_slash() -> None:
    assert matches("run?.txt", "run1.txt")
    assert matches("run?.txt", "runx.txt")
    assert not matches("run?.txt", "run.txt")
    assert not matches("run?.txt", "run12.txt")
    assert not matches("a?b", "a/b")


def test_brackets() -> None:
    assert matches("[ab].txt", "a.txt")
    assert matches("[ab].txt", "b.txt")
    assert not matches("[ab].txt", "c.txt")
    assert not matches("[ab].txt", "ab.txt")
    assert matches("v[0-9].bin", "v7.bin")
    assert not matches("v[0-9].bin", "vx.bin")


def test_negated_brackets() -> None:
    assert matches("[!a].txt", "b.txt")
    assert matches("[!a].txt", "z.txt")
    assert not matches("[!a].txt", "a.txt")
    assert not matches("[!a].txt", "bb.txt")


def test_negated_brackets_do_not_cross_slash() -> None:
    """Like `*` and `?`, a bracket expression stays within one path component (as in sh and
    pathlib): `a[!b]c` must not take `a/c`."""
    assert not matches("a[!b]c", "a/c")


def test_unclosed_bracket_is_literal() -> None:
    assert matches("x[a", "x[a")
    assert not matches("x[a", "xa")


def test_regex_characters_are_literal() -> None:
    assert matches("a.b+c(d)$", "a.b+c(d)$")
    assert not matches("a.b", "axb")
    assert matches("{a,b}.txt", "{a,b}.txt")
    assert not matches("{a,b}.txt", "a.txt")


def test_a_folder_match_takes_everything_under_it() -> None:
    assert matches("model*", "models")
    assert matches("model*", "models/weights.bin")
    assert matches("model*", "models/sub/deep/file")
    assert matches("data/*", "data/2024/01/x.csv")
    assert not matches("model*", "other/models")


@pytest.mark.parametrize("pattern", ["[]", "[!]", "x[]y", "[z-a].csv", "data/[!]*"])
def test_odd_brackets_still_give_a_valid_regex(pattern: str) -> None:
    """artifact globs are not checked when askanna.yml is validated, so whatever the user
    wrote must not make re.compile fail after the job has already run."""
    re.compile(glob_to_regex(pattern))


# -- member_path ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["/etc/passwd", "/code/x", "a/../b", "../x", "a/b/..", "..", "a\x00b", "a/b\x00", "", ".", "./", "/"],
)
def test_member_path_refuses_unsafe_names(name: str) -> None:
    assert member_path(name, "out") is None


def test_member_path_rebases_onto_the_declared_path() -> None:
    assert member_path("models/sub/f", "models") == "models/sub/f"
    assert member_path("models/sub/f", "out/here") == "out/here/sub/f"
    assert member_path("models", "out") == "out"
    assert member_path("models/", "out") == "out"
    assert member_path("./models/./sub//f", "x") == "x/sub/f"
    assert member_path("weights.bin", "models/weights.bin") == "models/weights.bin"


def test_member_path_with_empty_declared() -> None:
    assert member_path("code/sub/f", "") == "sub/f"
    assert member_path("code/f.log", "") == "f.log"


def test_member_path_dots_inside_names_are_fine() -> None:
    assert member_path("m/..hidden/a..b", "o") == "o/..hidden/a..b"


# -- clean_relpath ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("models/", "models"),
        ("/models/", "models"),
        ("./models", "models"),
        ("models//sub/./f", "models/sub/f"),
        ("a/b/../c", "a/c"),
        (".", ""),
        ("./", ""),
        ("", ""),
        ("/", ""),
        ("a/..", ""),
        ("file.json", "file.json"),
    ],
)
def test_clean(raw: str, clean: str) -> None:
    assert clean_relpath(raw) == clean


# -- Collected -------------------------------------------------------------------------------------


def test_collected_defaults() -> None:
    c = Collected()
    assert c.result is None
    assert c.result_missing is False
    assert c.result_problem is None
    assert c.artifacts == [] and c.refused == [] and c.missing == []


def test_collected_lists_are_not_shared() -> None:
    a, b = Collected(), Collected()
    a.artifacts.append("x")  # type: ignore[arg-type]
    a.refused.append("y")
    a.missing.append("z")
    assert b.artifacts == [] and b.refused == [] and b.missing == []


# -- a top-level glob, through collect() with a stand-in for the container ---------------------------


class _Workspace:
    """Serves a real tar of a tmp folder the way the engine's archive API does for /code: every
    member under the folder's base name (``code/...``), the folder itself first."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def stat(self, path: str) -> dict | None:
        rel = path.removeprefix("/code").lstrip("/")
        local = self.root / rel
        if not local.exists():
            return None
        return {"name": local.name, "mode": GO_MODE_DIR if local.is_dir() else 0o644, "linkTarget": ""}

    def get_archive(self, path: str):
        rel = path.removeprefix("/code").lstrip("/")
        local = self.root / rel
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(local, arcname=local.name if rel else "code")
        return iter([buf.getvalue()])


def test_top_level_glob_collects_without_refusing_anything(tmp_path: Path) -> None:
    workspace = tmp_path / "code"
    (workspace / "sub").mkdir(parents=True)
    (workspace / "a.log").write_text("a")
    (workspace / "sub" / "b.log").write_text("b")
    (workspace / "c.txt").write_text("c")
    out = collect(_Workspace(workspace), RunFiles(tmp_path / "run"), result=None, artifacts=("*.log",))  # type: ignore[arg-type]
    assert [a.path for a in out.artifacts] == ["a.log"]
    assert (tmp_path / "run" / "artifacts" / "a.log").read_text() == "a"
    assert out.missing == []
    # the archive's own top folder ("code") is the workspace itself, not an unsafe name
    assert out.refused == []


# -- the overlapped copy of large files ---------------------------------------------------------
def test_overlapped_copy_keeps_order_bytes_and_hash(tmp_path: Path) -> None:
    import hashlib

    from anna_run.collect import CHUNK, copy_overlapped

    data = b"".join(i.to_bytes(4, "big") * (CHUNK // 4 // 7 + 1) for i in range(70))  # ~10 MB, no two chunks alike
    seen: list[int] = []
    digest = hashlib.sha256()
    with open(tmp_path / "out.bin", "wb") as f:
        size = copy_overlapped(io.BytesIO(data), f, digest, seen.append)
    assert size == len(data) == sum(seen)
    assert (tmp_path / "out.bin").read_bytes() == data
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


class _FullDisk(io.RawIOBase):
    def __init__(self, room: int) -> None:
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, chunk) -> int:
        if len(chunk) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(chunk)
        return len(chunk)


class _Endless(io.RawIOBase):
    """A source that never ends: the reader must stop because the writer failed."""

    reads = 0

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        return bytes(n if n > 0 else 1)


def test_overlapped_copy_stops_reading_when_the_disk_is_full() -> None:
    import hashlib

    from anna_run.collect import CHUNK, QUEUED, copy_overlapped

    source = _Endless()
    with pytest.raises(OSError, match="No space left"):
        copy_overlapped(source, _FullDisk(room=3 * CHUNK), hashlib.sha256(), None)
    assert source.reads <= 3 + QUEUED + 2  # stopped soon after the failure, not at the end of input
