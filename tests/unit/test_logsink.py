"""LogSink with the real Masker and SilentReporter: masking across writes, streams kept apart,
UTF-8 split across writes, the cap, close and notes."""

from __future__ import annotations

from pathlib import Path

import pytest
from anna_run.logsink import DEFAULT_LOG_LIMIT, LogSink, log_limit
from anna_run.report import SilentReporter
from anna_run.store.base import RunFiles
from anna_run.variables import Masker

SECRET = "supersecret"


def make_sink(tmp_path: Path, limit: int | None = None) -> tuple[LogSink, SilentReporter, Path]:
    reporter = SilentReporter()
    run_dir = tmp_path / "run"
    sink = LogSink(RunFiles(run_dir), lambda: Masker([SECRET]), reporter, limit=limit)
    return sink, reporter, run_dir


def live(reporter: SilentReporter, stream: str | None = None) -> str:
    return "".join(text for s, text in reporter.logs if stream is None or s == stream)


def stored(run_dir: Path, name: str = "log.txt") -> str:
    return (run_dir / name).read_text(encoding="utf-8")


def test_creates_the_run_dir_and_files(tmp_path: Path) -> None:
    sink, _, run_dir = make_sink(tmp_path)
    sink.close()
    assert {p.name for p in run_dir.iterdir()} == {"log.txt", "stdout.log", "stderr.log"}


@pytest.mark.parametrize(
    "chunks",
    [
        [b"token=super", b"secret done\n"],
        [b"token=sup", b"erse", b"cret done\n"],
        [b"token=s", b"upersecre", b"t done\n"],
        [bytes([c]) for c in b"token=supersecret done\n"],
    ],
)
def test_secret_split_across_writes_is_masked(tmp_path: Path, chunks: list[bytes]) -> None:
    sink, reporter, run_dir = make_sink(tmp_path)
    for chunk in chunks:
        sink.write("stdout", chunk)
    # masked already while the run goes on, before close
    assert SECRET not in live(reporter)
    sink.close()
    assert live(reporter, "stdout") == "token=*** done\n"
    assert stored(run_dir) == "token=*** done\n"
    assert stored(run_dir, "stdout.log") == "token=*** done\n"
    assert stored(run_dir, "stderr.log") == ""
    for _, text in reporter.logs:
        assert SECRET not in text


def test_no_live_line_shows_a_part_that_completes_a_secret(tmp_path: Path) -> None:
    sink, reporter, _ = make_sink(tmp_path)
    sink.write("stdout", b"a super")
    sink.write("stdout", b"secret b")
    sink.close()
    shown = live(reporter)
    assert SECRET not in shown
    assert "super" not in shown and "secret" not in shown
    assert shown == "a *** b"


def test_secret_on_stderr_split_across_writes(tmp_path: Path) -> None:
    sink, reporter, run_dir = make_sink(tmp_path)
    sink.write("stderr", b"err: supe")
    sink.write("stderr", b"rsecret\n")
    sink.close()
    assert stored(run_dir, "stderr.log") == "err: ***\n"
    assert live(reporter, "stderr") == "err: ***\n"
    assert SECRET not in stored(run_dir)


def test_secret_split_across_streams_interleaved(tmp_path: Path) -> None:
    """Each stream keeps its own masking state: a stderr write in between does not break it."""
    sink, reporter, run_dir = make_sink(tmp_path)
    sink.write("stdout", b"super")
    sink.write("stderr", b"warn\n")
    sink.write("stdout", b"secret\n")
    sink.close()
    assert stored(run_dir, "stdout.log") == "***\n"
    assert stored(run_dir, "stderr.log") == "warn\n"
    assert SECRET not in stored(run_dir)
    assert sorted(stored(run_dir).splitlines()) == ["***", "warn"]
    assert live(reporter, "stdout") == "***\n" and live(reporter, "stderr") == "warn\n"


def test_streams_kept_apart_and_combined_in_arrival_order(tmp_path: Path) -> None:
    sink, reporter, run_dir = make_sink(tmp_path)
    sink.write("stdout", b"out1\n")
    sink.write("stderr", b"err1\n")
    sink.write("stdout", b"out2\n")
    sink.write("stderr", b"err2\n")
    sink.close()
    assert stored(run_dir, "stdout.log") == "out1\nout2\n"
    assert stored(run_dir, "stderr.log") == "err1\nerr2\n"
    assert stored(run_dir) == "out1\nerr1\nout2\nerr2\n"
    assert reporter.logs == [
        ("stdout", "out1\n"),
        ("stderr", "err1\n"),
        ("stdout", "out2\n"),
        ("stderr", "err2\n"),
    ]


def test_log_txt_is_readable_while_the_run_goes_on(tmp_path: Path) -> None:
    sink, _, run_dir = make_sink(tmp_path)
    sink.write("stdout", b"progress 1\n")
    assert stored(run_dir) == "progress 1\n"  # flushed for `logs -f`
    sink.close()


def test_multibyte_utf8_split_across_writes(tmp_path: Path) -> None:
    text = "héllo wörld ✓ 日本語 🎉 done\n"
    data = text.encode()
    sink, reporter, run_dir = make_sink(tmp_path)
    for i in range(len(data)):
        sink.write("stdout", data[i : i + 1])
    sink.close()
    assert stored(run_dir, "stdout.log") == text
    assert stored(run_dir) == text
    assert live(reporter, "stdout") == text
    assert "\ufffd" not in live(reporter)


def test_multibyte_split_at_a_chunk_boundary_with_a_secret(tmp_path: Path) -> None:
    sink, reporter, run_dir = make_sink(tmp_path)
    data = "€ supersecret €\n".encode()
    sink.write("stdout", data[:2])
    sink.write("stdout", data[2:9])
    sink.write("stdout", data[9:])
    sink.close()
    assert stored(run_dir, "stdout.log") == "€ *** €\n"
    assert live(reporter) == "€ *** €\n"


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    sink, _, run_dir = make_sink(tmp_path)
    sink.write("stdout", b"bad \xff\xfe byte\n")
    sink.write("stdout", b"cut \xe2\x82")  # an unfinished sequence at the end of the stream
    sink.close()
    out = stored(run_dir, "stdout.log")
    assert out.startswith("bad \ufffd\ufffd byte\ncut ")
    assert out.endswith("\ufffd")


def test_held_back_text_is_flushed_on_close(tmp_path: Path) -> None:
    sink, reporter, run_dir = make_sink(tmp_path)
    sink.write("stdout", b"ends with super")  # "super" could start the secret: held back
    assert stored(run_dir) == "ends with "
    assert live(reporter) == "ends with "
    sink.close()
    assert stored(run_dir, "stdout.log") == "ends with super"
    assert live(reporter) == "ends with super"


def test_cap_truncates_with_a_note(tmp_path: Path) -> None:
    sink, reporter, run_dir = make_sink(tmp_path, limit=20)
    sink.write("stdout", b"0123456789" * 3 + b"\n")
    assert sink.truncated
    sink.write("stdout", b"after the cap\n")
    sink.write("stderr", b"also after\n")
    sink.close()
    log = stored(run_dir)
    assert log.startswith("01234567890123456789\n[anna-run] log truncated")
    assert "20 bytes" in log
    assert "after the cap" not in log and "also after" not in log
    assert stored(run_dir, "stdout.log").startswith("01234567890123456789\n[anna-run] log truncated")
    assert stored(run_dir, "stderr.log") == ""
    # the live view is not capped
    assert "after the cap" in live(reporter) and "also after" in live(reporter)


def test_cap_counts_both_streams(tmp_path: Path) -> None:
    sink, _, run_dir = make_sink(tmp_path, limit=10)
    sink.write("stdout", b"aaaaaa")
    sink.write("stderr", b"bbbbbb")
    sink.close()
    assert sink.truncated
    assert stored(run_dir).startswith("aaaaaabbbb\n[anna-run] log truncated")
    assert stored(run_dir, "stderr.log").startswith("bbbb\n[anna-run] log truncated")


def test_exactly_at_the_cap_is_not_truncated(tmp_path: Path) -> None:
    sink, _, run_dir = make_sink(tmp_path, limit=10)
    sink.write("stdout", b"0123456789")
    sink.close()
    assert not sink.truncated
    assert stored(run_dir) == "0123456789"


def test_cap_is_in_bytes_as_the_note_says(tmp_path: Path) -> None:
    """The note says "keeps the first N bytes" and ANNA_RUN_LOG_LIMIT is a byte count."""
    sink, _, run_dir = make_sink(tmp_path, limit=20)
    sink.write("stdout", "é".encode() * 50)
    sink.close()
    assert sink.truncated
    body = (run_dir / "log.txt").read_bytes().split(b"\n[anna-run] log truncated")[0]
    assert len(body) <= 20


def test_secret_is_masked_before_the_cap(tmp_path: Path) -> None:
    sink, _, run_dir = make_sink(tmp_path, limit=15)
    sink.write("stdout", b"key supersecret and more text\n")
    sink.close()
    assert SECRET not in stored(run_dir)
    assert stored(run_dir).startswith("key *** and mor")


def test_close_twice_is_safe(tmp_path: Path) -> None:
    sink, reporter, run_dir = make_sink(tmp_path)
    sink.write("stdout", b"x super")
    assert not sink.closed
    sink.close()
    assert sink.closed
    sink.close()
    assert sink.closed
    assert stored(run_dir) == "x super"
    assert live(reporter) == "x super"


def test_note_goes_to_the_stored_log_not_live(tmp_path: Path) -> None:
    sink, reporter, run_dir = make_sink(tmp_path)
    sink.write("stdout", b"job output\n")
    sink.note("timed out after 5 s")
    sink.close()
    assert stored(run_dir) == "job output\n[anna-run] timed out after 5 s\n"
    assert stored(run_dir, "stderr.log") == "[anna-run] timed out after 5 s\n"
    assert stored(run_dir, "stdout.log") == "job output\n"
    assert all("timed out" not in text for _, text in reporter.logs)


def test_nothing_written_gives_empty_files_and_no_live_lines(tmp_path: Path) -> None:
    sink, reporter, run_dir = make_sink(tmp_path)
    sink.write("stdout", b"")
    sink.close()
    assert reporter.logs == []
    assert stored(run_dir) == "" and stored(run_dir, "stdout.log") == ""


def test_log_limit_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANNA_RUN_LOG_LIMIT", raising=False)
    assert log_limit() == DEFAULT_LOG_LIMIT
    monkeypatch.setenv("ANNA_RUN_LOG_LIMIT", "1234")
    assert log_limit() == 1234
    monkeypatch.setenv("ANNA_RUN_LOG_LIMIT", "lots")
    assert log_limit() == DEFAULT_LOG_LIMIT


def test_default_limit_is_taken_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANNA_RUN_LOG_LIMIT", "5")
    sink, _, run_dir = make_sink(tmp_path)
    sink.write("stdout", b"0123456789")
    sink.close()
    assert sink.limit == 5 and sink.truncated
    assert stored(run_dir).startswith("01234\n[anna-run] log truncated")


def test_a_reader_that_goes_away_stops_the_live_output_only(tmp_path: Path) -> None:
    class GoneReporter(SilentReporter):
        def log_line(self, stream: str, text: str) -> None:
            if stream == "stdout":
                raise BrokenPipeError(32, "Broken pipe")
            super().log_line(stream, text)

    reporter = GoneReporter()
    sink = LogSink(RunFiles(tmp_path / "run"), lambda: Masker([SECRET]), reporter)
    sink.write("stdout", b"one\n")
    sink.write("stderr", b"err\n")
    sink.write("stdout", b"two\n")
    sink.close()
    sink.check()
    assert stored(tmp_path / "run") == "one\nerr\ntwo\n" and live(reporter) == "err\n"


def test_a_store_that_fails_is_reported_at_the_end(tmp_path: Path) -> None:
    from anna_run.errors import StoreError

    sink, reporter, _ = make_sink(tmp_path)
    sink.write("stdout", b"kept\n")

    class FullFile:
        closed = False

        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

        def flush(self) -> None:
            pass

        def close(self) -> None:
            self.closed = True

    sink._files["log"].close()
    sink._files["log"] = FullFile()  # type: ignore[assignment]
    sink.write("stdout", b"lost\n")
    sink.write("stdout", b"still live\n")
    sink.close()
    assert live(reporter) == "kept\nlost\nstill live\n" and sink.truncated
    with pytest.raises(StoreError, match="No space left on device"):
        sink.check()
