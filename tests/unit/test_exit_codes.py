"""cli.EXIT_CODES: every row, through exit_code_for and through the commands' error handler,
and the table against the README's "Exit codes"."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import typer
from anna_run.cli import ALREADY_ENDED, ENGINE_FAILED, EXIT_CODES, exit_code_for, handled
from anna_run.errors import (
    AnnaRunError,
    BrokerError,
    Cancelled,
    ConfigError,
    EngineError,
    JobTimeout,
    NotFound,
    StoreError,
)
from anna_run.record import RunRecord

README = Path(__file__).resolve().parents[2] / "README.md"


def record(status: str, exit_code: int | None = None, reason: str | None = None) -> RunRecord:
    return RunRecord(id="aaaa-1111", job="train", project="p", status=status, exit_code=exit_code, reason=reason)


class Bug(Exception):
    pass


ERRORS: list[tuple[type[BaseException], BaseException, int]] = [
    # (the row, an error it covers, the code)
    (ConfigError, ConfigError("bad askanna.yml", file="askanna.yml", line=3), 2),
    (NotFound, NotFound("no run 'zzzz'"), 1),
    (JobTimeout, JobTimeout("timed out"), 124),
    (EngineError, EngineError("no container engine answers"), 125),
    (StoreError, StoreError("cannot write the store"), 125),
    (BrokerError, BrokerError("no broker"), 125),
    (Cancelled, Cancelled("cancelled"), 130),
    (AnnaRunError, AnnaRunError("something of ours"), 1),
    (KeyboardInterrupt, KeyboardInterrupt(), 130),
    (BrokenPipeError, BrokenPipeError(), 0),
    (Exception, Bug("a bug"), 125),
]

RECORDS: list[tuple[str, RunRecord, int]] = [
    # (the row, a final record it covers, the code)
    ("succeeded", record("succeeded", 0), 0),
    ("failed", record("failed", 3, "command failed with exit code 3"), 3),
    ("failed", record("failed", 137, "oom"), 137),  # killed: still the job's own code
    ("failed", record("failed", 0, "result missing: out.json"), 1),  # the commands succeeded
    ("failed", record("failed", None, "refused output"), 1),
    ("failed", record("running"), 1),  # not final: counted as failed
    (ENGINE_FAILED, record("failed", None, "engine: the engine went away"), 125),
    (ENGINE_FAILED, record("failed", 2, "engine: internal error: OSError: gone"), 125),
    ("timeout", record("timeout", 137, "timed out after 2 s"), 124),
    ("cancelled", record("cancelled", 137, "cancelled by the user"), 130),
]

NAMED: list[tuple[str, int]] = [(ALREADY_ENDED, 1)]


def test_every_row_is_tested() -> None:
    tested = {row for row, _, _ in ERRORS} | {row for row, _, _ in RECORDS} | {row for row, _ in NAMED}
    assert tested == set(EXIT_CODES)


@pytest.mark.parametrize(("row", "error", "code"), ERRORS, ids=[row.__name__ for row, _, _ in ERRORS])
def test_errors(row: type[BaseException], error: BaseException, code: int) -> None:
    assert EXIT_CODES[row] == code
    assert exit_code_for(error) == code


@pytest.mark.parametrize(("row", "error", "code"), ERRORS, ids=[row.__name__ for row, _, _ in ERRORS])
def test_the_commands_exit_with_the_code_of_their_error(
    row: type[BaseException], error: BaseException, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    @handled
    def command() -> None:
        raise error

    with pytest.raises(typer.Exit) as exit_:
        command()
    assert exit_.value.exit_code == code
    if isinstance(error, AnnaRunError):
        assert f"error: {error.message}" in capsys.readouterr().err


def test_an_error_subclass_takes_its_nearest_row() -> None:
    from anna_run.store.s3 import Unreachable

    assert issubclass(Unreachable, StoreError)
    assert exit_code_for(Unreachable("s3.example unreachable")) == 125
    assert exit_code_for(OSError("disk")) == 125  # an OSError of ours that nobody turned into an error


@pytest.mark.parametrize(("row", "rec", "code"), RECORDS, ids=[f"{r}-{rec.exit_code}" for r, rec, _ in RECORDS])
def test_records(row: str, rec: RunRecord, code: int) -> None:
    assert exit_code_for(rec) == code


@pytest.mark.parametrize(("row", "code"), NAMED)
def test_named_outcomes(row: str, code: int) -> None:
    assert EXIT_CODES[row] == code
    assert exit_code_for(row) == code


def test_the_table_has_the_readme_codes() -> None:
    section = README.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {cell for cell in re.findall(r"^\| ([0-9–]+) \|", section, re.MULTILINE)}
    assert documented == {"0", "1–123", "2", "124", "125", "130"}
    fixed = {str(code) for code in EXIT_CODES.values() if code is not None}
    assert fixed == documented - {"1–123"} | {"1"}  # 1 is in the row "1–123" (failed otherwise, not found)
    assert None in EXIT_CODES.values()  # ... the rest of that row: the job's own code


@pytest.mark.parametrize("module", ["redis", "celery", "kombu.transport"])
def test_a_missing_hosts_extra_is_a_config_error(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    @handled
    def command() -> None:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    with pytest.raises(typer.Exit) as exit_:
        command()
    assert exit_.value.exit_code == 2
    err = capsys.readouterr().err
    assert "pip install 'anna-run[hosts]'" in err and "internal error" not in err


def test_another_missing_module_is_still_an_internal_error(capsys: pytest.CaptureFixture[str]) -> None:
    @handled
    def command() -> None:
        raise ModuleNotFoundError("No module named 'numpy'", name="numpy")

    with pytest.raises(typer.Exit) as exit_:
        command()
    assert exit_.value.exit_code == 125
    assert "internal error: ModuleNotFoundError" in capsys.readouterr().err


def test_require_hosts_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from anna_run.errors import ConfigError
    from anna_run.hosts.celery_app import require_hosts_extra

    require_hosts_extra()  # installed here ([test,hosts])
    monkeypatch.setitem(sys.modules, "redis", None)  # `import redis` now raises ImportError
    with pytest.raises(ConfigError) as info:
        require_hosts_extra()
    assert info.value.hint == "install them with: pip install 'anna-run[hosts]'"
