"""report.py: the faces implement the Reporter protocol; MaskedReporter masks every text."""

from __future__ import annotations

import io

from anna_run.progress import JsonReporter, PlainReporter
from anna_run.report import MaskedReporter, Reporter, SilentReporter


def hide(text: str) -> str:
    return text.replace("hunter22", "***")


def test_masked_reporter_masks_every_text_it_passes_on() -> None:
    inner = SilentReporter()
    reporter: Reporter = MaskedReporter(inner, hide)
    reporter.step_started("pull", "image registry/hunter22:1")
    reporter.log_line("stdout", "the password is hunter22\n")
    reporter.log_line("stderr", "hunter22")
    reporter.warning("cannot use hunter22")
    assert inner.steps == ["pull"]
    assert inner.logs == [("stdout", "the password is ***\n"), ("stderr", "***")]
    assert inner.warnings == ["cannot use ***"]


def test_masked_reporter_in_front_of_a_face() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = MaskedReporter(PlainReporter(out=out, err=err), hide)
    reporter.step_started("package", "hunter22")
    reporter.step_done("package", "42 files of hunter22")
    reporter.bytes_done("package", 1, 2)
    reporter.info("info hunter22")
    reporter.log_line("stdout", "out hunter22\n")
    reporter.quiet = True
    reporter.info("not shown")
    assert "hunter22" not in out.getvalue() + err.getvalue()
    assert out.getvalue() == "out ***\n"
    assert err.getvalue() == "anna-run: package: ***\nanna-run: package: 42 files of ***\nanna-run: info ***\n"
    assert reporter.quiet is True


def test_json_face_masked() -> None:
    out = io.StringIO()
    MaskedReporter(JsonReporter(out=out), hide).log_line("stdout", "hunter22")
    assert "hunter22" not in out.getvalue() and '"text": "***"' in out.getvalue()
