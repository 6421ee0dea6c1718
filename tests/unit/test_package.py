"""Code packages: selection, the canonical tar, the stat cache. Real trees in tmp_path."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import socket
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from anna_run import package
from anna_run.errors import ConfigError, StoreError
from anna_run.package import Package, build_package, select_files

PROJECT = {
    "askanna.yml": "train:\n  job:\n    - python src/train.py\n",
    "src/train.py": "print('hello')\n",
    "src/util/__init__.py": "",
    "data/input.csv": "a,b\n1,2\n",
    "run.sh": "#!/bin/sh\necho hi\n",
}


def make_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def names(root: Path, **kw: object) -> list[str]:
    return [e.relpath for e in select_files(root, **kw)]  # type: ignore[arg-type]


def members(pkg: Package) -> list[tarfile.TarInfo]:
    with tarfile.open(pkg.path) as tar:
        return tar.getmembers()


def member_names(pkg: Package) -> list[str]:
    return [m.name for m in members(pkg)]


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written by a test are seconds-fresh ("racy"); let the cache trust them anyway."""
    monkeypatch.setattr(package, "_RACY_WINDOW_NS", 0)


# --------------------------------------------------------------------------- identity


def test_same_tree_gives_same_sha_whoever_owns_it_and_whenever_it_was_written(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a", PROJECT)
    b = tmp_path / "elsewhere" / "b"
    make_tree(b, dict(reversed(PROJECT.items())))  # created in another order, other inodes
    (b / "empty").mkdir()
    (a / "empty").mkdir()
    for i, path in enumerate(sorted(b.rglob("*"))):
        os.utime(path, ns=(10**18 + i, 10**18 + i))
        if os.geteuid() == 0:
            os.chown(path, 1234 + i, 4321)
        if path.is_file():
            path.chmod(0o600)  # other read bits, same (absent) execute bit
    pa = build_package(a, tmp_path / "pa")
    pb = build_package(b, tmp_path / "pb")
    assert pa.sha256 == pb.sha256
    assert pa.path.read_bytes() == pb.path.read_bytes()
    assert pa.files == pb.files == len(PROJECT)


def test_one_changed_byte_changes_the_sha(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", PROJECT)
    first = build_package(root, tmp_path / "pk")
    (root / "src/train.py").write_text("print('hellO')\n")
    second = build_package(root, tmp_path / "pk")
    assert first.sha256 != second.sha256
    assert first.size == second.size


def test_sha_is_the_sha256_of_the_tar_file(tmp_path: Path) -> None:
    pkg = build_package(make_tree(tmp_path / "p", PROJECT), tmp_path / "pk")
    data = pkg.path.read_bytes()
    assert pkg.path == tmp_path / "pk" / f"{pkg.sha256}.tar"
    assert hashlib.sha256(data).hexdigest() == pkg.sha256
    assert len(data) == pkg.size
    assert pkg.size % tarfile.RECORDSIZE == 0


def test_golden_sha_pins_the_format(tmp_path: Path) -> None:
    # If this changes, the package format changed (or tarfile did): every package id
    # changes with it. Bump _TREE_KEY_TAG and this value together, on purpose.
    root = make_tree(tmp_path / "golden", {**PROJECT, "ünï côde.txt": "x", "a" * 120: "long\n"})
    (root / "run.sh").chmod(0o755)
    (root / "empty").mkdir()
    (root / "link").symlink_to("src/train.py")
    pkg = build_package(root, tmp_path / "pk")
    assert pkg.sha256 == "7ab60ce5151df324fd5cdf6b39347c2f39e8c00731ebdfbe3569f787d4bd5e55"


# --------------------------------------------------------------------------- the tar itself


def test_tar_lists_sorted_members_with_fixed_metadata(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", PROJECT)
    (root / "empty").mkdir()
    pkg = build_package(root, tmp_path / "pk")
    found = members(pkg)
    assert [m.name for m in found] == [
        "askanna.yml",
        "data",
        "data/input.csv",
        "empty",
        "run.sh",
        "src",
        "src/train.py",
        "src/util",
        "src/util/__init__.py",
    ]
    for m in found:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 946684800)
        assert m.pax_headers == {}  # short ASCII names need none; nothing else ever adds one
    assert found[3].isdir() and found[3].mode == 0o755
    assert found[0].isfile() and found[0].mode == 0o644


def test_sorting_is_by_the_bytes_of_the_name(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", {"a/b": "", "a-b": "", "a b": "", "B": "", "é": "", "z": ""})
    assert names(root) == ["B", "a", "a b", "a-b", "a/b", "z", "é"]


def test_executable_bit_is_all_that_survives_of_the_mode(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", {"exec_user": "", "exec_other": "", "plain": "", "secret": ""})
    (root / "exec_user").chmod(0o700)
    (root / "exec_other").chmod(0o641)
    (root / "plain").chmod(0o664)
    (root / "secret").chmod(0o600)
    modes = {m.name: m.mode for m in members(build_package(root, tmp_path / "pk"))}
    assert modes == {"exec_other": 0o755, "exec_user": 0o755, "plain": 0o644, "secret": 0o644}


def test_odd_names_and_contents_round_trip(tmp_path: Path) -> None:
    odd = {
        "with space/file name.txt": "spaces",
        "ünïcødé/日本語.txt": "unicode",
        "new\nline.txt": "newline",
        "deep/" + "/".join(["d" * 60] * 4) + "/long.txt": "long path",
        "binary.bin": bytes(range(256)) * 3,
    }
    root = make_tree(tmp_path / "p", odd)
    (root / os.fsdecode(b"latin1-caf\xe9.txt")).write_text("not utf-8")
    pkg = build_package(root, tmp_path / "pk")
    with tarfile.open(pkg.path, encoding="utf-8", errors="surrogateescape") as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    want = {e.relpath: (root / e.relpath).read_bytes() for e in select_files(root) if e.kind == "file"}
    assert got == want
    assert "latin1-caf\udce9.txt" in got and "new\nline.txt" in got


def test_tar_extracts_to_the_same_tree(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", PROJECT)
    (root / "empty" / "nested").mkdir(parents=True)
    (root / "run.sh").chmod(0o755)
    (root / "link").symlink_to("src/train.py")
    pkg = build_package(root, tmp_path / "pk")
    out = tmp_path / "out"
    with tarfile.open(pkg.path) as tar:
        tar.extractall(out, **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))
    assert (out / "empty" / "nested").is_dir()
    assert os.readlink(out / "link") == "src/train.py"
    assert os.access(out / "run.sh", os.X_OK)
    for name, content in PROJECT.items():
        assert (out / name).read_text() == content


def test_our_tar_is_byte_for_byte_what_tarfile_writes(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", {**PROJECT, "x" * 150: "long name", "é/ü": "non-ascii"})
    (root / "link").symlink_to("/" + "t" * 120)
    entries = select_files(root)
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for e in entries:
            info = tarfile.TarInfo(e.relpath)
            info.mtime, info.uname, info.gname = 946684800, "", ""
            if e.kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif e.kind == "symlink":
                info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, e.target or ""
                tar.addfile(info)
            else:
                info.size, info.mode = e.size, 0o755 if e.mode & 0o111 else 0o644
                with open(root / e.relpath, "rb") as f:
                    tar.addfile(info, f)
    assert build_package(root, tmp_path / "pk").path.read_bytes() == expected.getvalue()


def test_hard_links_are_packed_as_separate_files(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", {"one": "same inode"})
    os.link(root / "one", root / "two")
    with tarfile.open(build_package(root, tmp_path / "pk").path) as tar:
        assert [(m.name, m.isfile(), m.size) for m in tar] == [("one", True, 10), ("two", True, 10)]


# --------------------------------------------------------------------------- symlinks, specials


def test_symlink_to_a_secret_is_packed_as_a_link_never_its_content(tmp_path: Path) -> None:
    secret = make_tree(tmp_path / "outside", {"passwd": "root:SECRET-CONTENT:0:0\n"}) / "passwd"
    root = make_tree(tmp_path / "p", PROJECT)
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "secret").symlink_to(secret)
    pkg = build_package(root, tmp_path / "pk")
    by_name = {m.name: m for m in members(pkg)}
    assert by_name["passwd"].issym() and by_name["passwd"].linkname == "/etc/passwd"
    assert by_name["secret"].issym() and by_name["secret"].linkname == str(secret)
    data = pkg.path.read_bytes()
    assert b"SECRET-CONTENT" not in data
    assert b"root:x:0:0" not in data and b"root:" not in data
    assert pkg.files == len(PROJECT) + 2


def test_a_symlinked_folder_is_packed_as_a_link_and_not_descended(tmp_path: Path) -> None:
    big = make_tree(tmp_path / "big", {"huge.bin": "not to be packed"})
    root = make_tree(tmp_path / "p", {"a.txt": "a"})
    (root / "datasets").symlink_to(big, target_is_directory=True)
    (root / "loop").symlink_to(".", target_is_directory=True)
    entries = {e.relpath: e for e in select_files(root)}
    assert sorted(entries) == ["a.txt", "datasets", "loop"]
    assert entries["datasets"].kind == "symlink" and entries["datasets"].target == str(big)


def test_dangling_symlink_is_packed(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", {"a.txt": "a"})
    (root / "dangling").symlink_to("nowhere/at/all")
    by_name = {m.name: m for m in members(build_package(root, tmp_path / "pk"))}
    assert by_name["dangling"].linkname == "nowhere/at/all"


def test_sockets_and_fifos_are_skipped_not_fatal(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", {"a.txt": "a"})
    os.mkfifo(root / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "sock"))
        skipped: list[str] = []
        assert names(root, skipped=skipped) == ["a.txt"]
        assert sorted(skipped) == ["fifo", "sock"]
        pkg = build_package(root, tmp_path / "pk")
        assert member_names(pkg) == ["a.txt"]
        assert pkg.skipped == ("fifo", "sock")
        assert pkg.warnings == (
            "not in the code package: fifo (not a file, folder or symlink: a socket, FIFO or device)",
            "not in the code package: sock (not a file, folder or symlink: a socket, FIFO or device)",
        )
    finally:
        sock.close()


def test_a_symlink_out_of_the_project_is_left_out_with_one_warning(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", {"a.txt": "a"})
    (root / "up").symlink_to("../elsewhere")
    pkg = build_package(root, tmp_path / "pk", cache_file=tmp_path / "cache.json")
    assert member_names(pkg) == ["a.txt"]
    assert pkg.warnings == ("not in the code package: up (a symlink out of the project, to ../elsewhere)",)
    assert build_package(root, tmp_path / "pk", cache_file=tmp_path / "cache.json").warnings == pkg.warnings


# --------------------------------------------------------------------------- selection


def test_empty_folders_are_included(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", {"a.txt": "a"})
    (root / "outputs" / "models").mkdir(parents=True)
    assert names(root) == ["a.txt", "outputs", "outputs/models"]
    assert member_names(build_package(root, tmp_path / "pk")) == ["a.txt", "outputs", "outputs/models"]


def test_git_folder_is_never_packed(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", {"a.txt": "a", ".git/config": "[core]", "vendor/lib/.git": "gitdir: x"})
    (root / "sub" / ".git" / "objects").mkdir(parents=True)
    (root / ".askannaignore").write_text("# nothing ignored\n")
    assert names(root) == [".askannaignore", "a.txt", "sub", "vendor", "vendor/lib"]


def test_gitignore_folders_negation_and_nesting(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "p",
        {
            ".gitignore": "build/\n*.log\n!keep.log\n/top.txt\nlogs/*\n!logs/important.txt\n",
            "build/out.bin": "x",
            "src/build/gen.py": "x",  # "build/" matches at any depth
            "a.log": "x",
            "keep.log": "kept",
            "top.txt": "x",
            "src/top.txt": "kept: /top.txt is anchored at the root",
            "logs/debug.txt": "x",
            "logs/important.txt": "kept",
            "build.txt": "kept: build/ only matches folders",
            "sub/.gitignore": "*.csv\n!a.log\n",
            "sub/data.csv": "x",
            "sub/a.log": "kept: the nested !a.log wins over the root's *.log",
            "sub/deeper/more.csv": "x",
            "other/data.csv": "kept: sub/.gitignore applies to sub/ only",
        },
    )
    assert names(root) == [
        ".gitignore",
        "build.txt",
        "keep.log",
        "logs",
        "logs/important.txt",
        "other",
        "other/data.csv",
        "src",
        "src/top.txt",
        "sub",
        "sub/.gitignore",
        "sub/a.log",
        "sub/deeper",
    ]


def test_a_file_in_an_ignored_folder_cannot_be_re_included(tmp_path: Path) -> None:
    # As in git: "!build/keep.txt" cannot undo the exclusion of build/ itself.
    root = make_tree(tmp_path / "p", {".gitignore": "build/\n!build/keep.txt\n", "build/keep.txt": "x"})
    assert names(root) == [".gitignore"]


def test_nested_gitignore_in_an_ignored_folder_is_not_read(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", {".gitignore": "vendor/\n", "vendor/.gitignore": "!*\n", "vendor/x": ""})
    assert names(root) == [".gitignore"]


TRICKY_PATTERNS = [
    "# a comment",
    "",
    "*.py[cod]",
    "build/",
    "/anchored",
    "docs/_build",
    "**/deep",
    "a/**/b",
    "foo/*",
    "!foo/keep",
    "\\!bang",
    "\\#hash",
    "trailing ",
    "[abc]?.txt",
    "**",
    "!*.md",
    "x/**",
    "?",
]
TRICKY_PATHS = [
    "x.pyc",
    "src/x.pyo",
    "build",
    "src/build",
    "anchored",
    "src/anchored",
    "docs/_build",
    "a/docs/_build",
    "deep",
    "q/r/deep",
    "a/b",
    "a/q/r/b",
    "foo",
    "foo/keep",
    "foo/other",
    "!bang",
    "#hash",
    "trailing",
    "b1.txt",
    "readme.md",
    "x/y/z",
    "z",
    "zz",
    "\udce9",
    "new\nline",
    "sp ace/f",
]


@pytest.mark.parametrize("count", [1, 3, 8, len(TRICKY_PATTERNS)])
def test_quick_filter_agrees_with_pathspec(count: int) -> None:
    import pathspec

    lines = TRICKY_PATTERNS[-count:]
    matcher = package._Matcher(lines)
    spec = pathspec.GitIgnoreSpec.from_lines(lines)
    assert matcher._quick is not None  # else this compares pathspec with itself
    for path in TRICKY_PATHS:
        for candidate in (path, path + "/"):
            assert matcher.verdict(candidate) == spec.check_file(candidate).include, (lines, candidate)


def test_askannaignore_beats_gitignore(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "p",
        {
            ".askannaignore": "data/\n",
            ".gitignore": "*.py\n",
            "src/.gitignore": "*.txt\n",
            "src/train.py": "kept: .gitignore is not consulted",
            "src/notes.txt": "kept: nor are nested ones",
            "data/big.csv": "x",
        },
    )
    assert names(root) == [
        ".askannaignore",
        ".gitignore",
        "src",
        "src/.gitignore",
        "src/notes.txt",
        "src/train.py",
    ]


def test_excluded_paths_are_never_packed(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", {**PROJECT, ".anna-run/runs/r1/run.json": "{}", "src/store/x": "y"})
    selected = names(root, exclude=[root / ".anna-run", root / "src" / "store", tmp_path / "elsewhere"])
    assert selected == names(make_tree(tmp_path / "q", PROJECT))


def test_packages_dir_and_cache_inside_the_project_are_left_out(tmp_path: Path, settled: None) -> None:
    root = make_tree(tmp_path / "p", PROJECT)
    first = build_package(root, root / "packages", cache_file=root / "cache.json")
    second = build_package(root, root / "packages", cache_file=root / "cache.json")
    assert "packages" not in member_names(first) and "cache.json" not in member_names(first)
    assert second.reused and second.sha256 == first.sha256


def test_excluding_the_project_itself_is_an_error(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", PROJECT)
    with pytest.raises(ConfigError, match="excluded"):
        select_files(root, exclude=[root])


def test_missing_project_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        build_package(tmp_path / "nope", tmp_path / "pk")


# --------------------------------------------------------------------------- reading


def test_unreadable_file_is_a_config_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "p", PROJECT)

    def refuse(path: str) -> int:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(package, "_open_member", refuse)
    with pytest.raises(ConfigError, match=r"cannot read .*askanna\.yml: Permission denied"):
        build_package(root, tmp_path / "pk")
    assert list((tmp_path / "pk").iterdir()) == []  # no temporary file left behind


def test_full_disk_is_a_store_error_not_the_projects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "p", {"big.bin": b"x" * 4096})
    real_write = package._HashingWriter.write

    def write(self: package._HashingWriter, data: bytes | memoryview) -> None:
        if len(data) == 4096:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, data)

    monkeypatch.setattr(package._HashingWriter, "write", write)
    with pytest.raises(StoreError, match="No space left"):
        build_package(root, tmp_path / "pk")
    assert list((tmp_path / "pk").iterdir()) == []


def test_file_that_shrinks_while_packaging_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "p", {"a.txt": "0123456789"})
    real_open = package._open_member

    def shrink_then_open(path: str) -> int:
        Path(path).write_text("0123")
        return real_open(path)

    monkeypatch.setattr(package, "_open_member", shrink_then_open)
    with pytest.raises(ConfigError, match=r"file changed while packaging: .*a\.txt"):
        build_package(root, tmp_path / "pk")
    assert list((tmp_path / "pk").iterdir()) == []


def test_file_that_grows_while_packaging_is_packed_as_stated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "p", {"a.log": "0123456789"})
    real_open = package._open_member

    def grow_then_open(path: str) -> int:
        with open(path, "a") as f:
            f.write("appended")
        return real_open(path)

    monkeypatch.setattr(package, "_open_member", grow_then_open)
    with tarfile.open(build_package(root, tmp_path / "pk").path) as tar:
        assert tar.extractfile("a.log").read() == b"0123456789"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- stat cache


def test_unchanged_tree_is_reused_without_reading_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settled: None
) -> None:
    root = make_tree(tmp_path / "p", PROJECT)
    cache = tmp_path / "cache.json"
    first = build_package(root, tmp_path / "pk", cache_file=cache)
    tar_stat = first.path.stat()

    def no_reading(path: str) -> int:
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(package, "_open_member", no_reading)
    second = build_package(root, tmp_path / "pk", cache_file=cache)
    assert second.reused and not first.reused
    assert (second.sha256, second.size, second.files, second.path) == (
        first.sha256,
        first.size,
        first.files,
        first.path,
    )
    assert first.path.stat().st_mtime_ns == tar_stat.st_mtime_ns


def test_cache_notices_content_mode_and_new_files(tmp_path: Path, settled: None) -> None:
    root = make_tree(tmp_path / "p", PROJECT)
    cache = tmp_path / "cache.json"
    base = build_package(root, tmp_path / "pk", cache_file=cache)
    (root / "run.sh").chmod(0o755)
    chmodded = build_package(root, tmp_path / "pk", cache_file=cache)
    assert not chmodded.reused and chmodded.sha256 != base.sha256
    (root / "new.txt").write_text("new")
    added = build_package(root, tmp_path / "pk", cache_file=cache)
    assert not added.reused and added.files == base.files + 1
    stat_before = (root / "src/train.py").stat()
    (root / "src/train.py").write_text("print('HELLO')\n")  # same size, then mtime put back
    os.utime(root / "src/train.py", ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    edited = build_package(root, tmp_path / "pk", cache_file=cache)
    assert not edited.reused and edited.sha256 != added.sha256  # ctime gave it away


def test_ignored_churn_does_not_defeat_the_cache(tmp_path: Path, settled: None) -> None:
    root = make_tree(tmp_path / "p", {**PROJECT, ".gitignore": "__pycache__/\n"})
    cache = tmp_path / "cache.json"
    first = build_package(root, tmp_path / "pk", cache_file=cache)
    make_tree(root, {"src/__pycache__/train.cpython-311.pyc": b"\0"})  # changes src/'s mtime
    assert build_package(root, tmp_path / "pk", cache_file=cache).reused
    assert first.sha256 == build_package(root, tmp_path / "pk").sha256


def test_freshly_written_tree_is_not_trusted_by_the_cache(tmp_path: Path) -> None:
    # A file written this very second could change again within the same timestamp tick.
    root = make_tree(tmp_path / "p", PROJECT)
    cache = tmp_path / "cache.json"
    first = build_package(root, tmp_path / "pk", cache_file=cache)
    second = build_package(root, tmp_path / "pk", cache_file=cache)
    assert not second.reused and second.sha256 == first.sha256
    for path in root.rglob("*"):
        os.utime(path, ns=(10**18, 10**18))  # 2001: long settled (ctime is still fresh)
    assert not build_package(root, tmp_path / "pk", cache_file=cache).reused


def test_cache_is_not_trusted_when_the_tar_is_gone(tmp_path: Path, settled: None) -> None:
    root = make_tree(tmp_path / "p", PROJECT)
    cache = tmp_path / "cache.json"
    first = build_package(root, tmp_path / "pk", cache_file=cache)
    first.path.unlink()
    again = build_package(root, tmp_path / "pk", cache_file=cache)
    assert not again.reused and again.path.is_file() and again.sha256 == first.sha256


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xffnot json",
        b"[]",
        b'{"version": 99, "trees": {}}',
        b'{"version": 1, "trees": []}',
        b'{"version": 1, "trees": {"KEY": "../../../etc/passwd"}}',
    ],
)
def test_corrupt_cache_is_ignored(tmp_path: Path, content: bytes, settled: None) -> None:
    root = make_tree(tmp_path / "p", PROJECT)
    cache = tmp_path / "cache.json"
    if b"KEY" in content:  # a poisoned entry for the very tree being packed
        key = package._tree_key(select_files(root, exclude=[tmp_path / "pk", cache]))
        content = content.replace(b"KEY", key.encode())
    cache.write_bytes(content)
    first = build_package(root, tmp_path / "pk", cache_file=cache)
    assert not first.reused
    assert build_package(root, tmp_path / "pk", cache_file=cache).reused
    assert json.loads(cache.read_text())["version"] == 1


def test_cache_file_that_cannot_be_written_is_not_fatal(tmp_path: Path, settled: None) -> None:
    root = make_tree(tmp_path / "p", PROJECT)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    pkg = build_package(root, tmp_path / "pk", cache_file=blocker / "cache.json")
    assert pkg.path.is_file() and not pkg.reused
    assert len(pkg.warnings) == 1 and pkg.warnings[0].startswith(f"cannot update the package cache {blocker}")


def test_cache_keeps_only_the_latest_trees(tmp_path: Path, settled: None) -> None:
    root = make_tree(tmp_path / "p", {"n.txt": "0"})
    cache = tmp_path / "cache.json"
    for i in range(25):
        (root / "n.txt").write_text(str(i))
        build_package(root, tmp_path / "pk", cache_file=cache)
    trees = json.loads(cache.read_text())["trees"]
    assert len(trees) == 20
    assert list(trees.values())[-1] == build_package(root, tmp_path / "pk", cache_file=cache).sha256


def test_rebuilding_an_existing_package_leaves_no_temporary_file(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", PROJECT)
    first = build_package(root, tmp_path / "pk")
    second = build_package(root, tmp_path / "pk")
    assert first == second
    assert [p.name for p in (tmp_path / "pk").iterdir()] == [first.path.name]


# --------------------------------------------------------------------------- progress, memory


def test_progress_is_reported_per_mebibyte_and_ends_at_the_size(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", {"big.bin": os.urandom(5 * 2**20 + 123), "small.txt": "x"})
    calls: list[tuple[int, int]] = []
    pkg = build_package(root, tmp_path / "pk", progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (pkg.size, pkg.size)
    assert 5 <= len(calls) <= 8
    assert all(total == pkg.size for _, total in calls)  # the estimate is exact
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_progress_total_is_exact_with_long_and_unicode_names(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "p", {"é" * 80: "x", "b" * 200: "y", "d" * 101 + "/f": "z"})
    (root / "l").symlink_to("t" * 300)
    entries = select_files(root)
    assert package._tar_size(entries) == build_package(root, tmp_path / "pk").size


def test_memory_stays_bounded_for_a_large_file(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    with open(root / "sparse.bin", "wb") as f:
        f.truncate(300 * 2**20)  # 300 MB of holes: cheap on disk, full size in the tar
    tracemalloc.start()
    try:
        pkg = build_package(root, tmp_path / "pk")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pkg.size > 300 * 2**20
    assert peak < 20 * 2**20
