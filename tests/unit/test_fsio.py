"""fsio: a file is replaced whole or not at all, and no temp file outlives the write."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from anna_run.fsio import AtomicFile, atomic_copy, atomic_write


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert list((tmp_path / "sub").iterdir()) == [target]


def test_atomic_write_failure_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "is-a-dir"
    target.mkdir()
    (target / "inside").write_text("keep")
    with pytest.raises(OSError):
        atomic_write(target, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is-a-dir"]
    assert (target / "inside").read_text() == "keep"


def test_a_str_is_written_as_utf8(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    atomic_write(target, "héllo")
    assert target.read_bytes() == "héllo".encode()


def test_an_error_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), AtomicFile(target) as f:
        f.write(b"new, half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_a_failing_fsync_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "record.json"
    target.write_bytes(b"old")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_ctrl_c_mid_write_removes_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    with pytest.raises(KeyboardInterrupt), AtomicFile(target) as f:
        f.write(b"x" * 1000)
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_the_temp_file_sits_beside_the_target_while_written(tmp_path: Path) -> None:
    target = tmp_path / "out" / "a.bin"
    with AtomicFile(target) as f:
        f.write(b"abc")
        f.flush()
        (tmp,) = list(target.parent.iterdir())
        assert tmp.name.startswith(".tmp-") and tmp.read_bytes() == b"abc"
        assert not target.exists()
    assert target.read_bytes() == b"abc"
    assert list(target.parent.iterdir()) == [target]


def test_the_target_can_be_named_once_written(tmp_path: Path) -> None:
    atomic = AtomicFile(tmp_path / "pending")
    with atomic as f:
        f.write(b"content")
        atomic.path = tmp_path / "by-content"
    assert [p.name for p in tmp_path.iterdir()] == ["by-content"]
    assert (tmp_path / "by-content").read_bytes() == b"content"


def test_discard_leaves_every_target_alone(tmp_path: Path) -> None:
    target = tmp_path / "same"
    target.write_bytes(b"there already")
    atomic = AtomicFile(target)
    with atomic as f:
        f.write(b"other")
        atomic.discard()
    assert target.read_bytes() == b"there already"
    assert [p.name for p in tmp_path.iterdir()] == ["same"]


def test_perms_are_exact_or_those_of_open(tmp_path: Path) -> None:
    atomic_write(tmp_path / "private", b"x", perms=0o600)
    atomic_write(tmp_path / "exec", b"x", perms=0o755)
    atomic_write(tmp_path / "plain", b"x")
    with open(tmp_path / "opened", "wb"):
        pass
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert mode["private"] == 0o600 and mode["exec"] == 0o755
    assert mode["plain"] == mode["opened"]


def test_atomic_copy(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))
    dst = tmp_path / "dst" / "copy.bin"
    dst.parent.mkdir()
    dst.write_bytes(b"old")
    atomic_copy(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert list(dst.parent.iterdir()) == [dst]


def test_atomic_copy_of_a_missing_file_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_copy(tmp_path / "nope", tmp_path / "dst")
    assert list(tmp_path.iterdir()) == []


def test_a_file_not_made_durable_is_still_replaced_whole(tmp_path, monkeypatch) -> None:
    import os

    from anna_run.fsio import AtomicFile

    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    target = tmp_path / "out.txt"
    target.write_text("old")
    with AtomicFile(target, durable=False) as f:
        f.write(b"new")
    assert target.read_text() == "new" and synced == []
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with AtomicFile(target) as f:
        f.write(b"newer")
    assert len(synced) == 2  # the file and its folder
