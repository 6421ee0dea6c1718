"""The command line through typer's CliRunner: shorthand, schema, validate, runs, show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from anna_run.cli import app, command_names, shorthand
from anna_run.record import CommandResult, FileInfo, RunRecord
from anna_run.store.local import LocalStore
from typer.testing import CliRunner

runner = CliRunner()

VALID = """\
train:
  job:
    - pip install -r requirements.txt
    - python train.py
  output:
    result: models/summary.json
    artifact:
      - models/
serve:
  job:
    - python serve.py
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No askanna.yml above the working directory, no store or debug settings from outside."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in ("ANNA_RUN_STORE", "ANNA_RUN_DEBUG", "ANNA_RUN_LOG_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("NO_COLOR", "1")


def project(tmp_path: Path, yml: str) -> Path:
    root = tmp_path / "project"
    root.mkdir(exist_ok=True)
    (root / "askanna.yml").write_text(yml)
    return root


# -- shorthand ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--payload", "p"], ["run", "train", "--payload", "p"]),
        (["train"], ["run", "train"]),
        (["name of the job"], ["run", "name of the job"]),
        (["train", "--help"], ["run", "train", "--help"]),
        (["-q", "train"], ["-q", "run", "train"]),
        (["runs"], ["runs"]),
        (["runs", "--json"], ["runs", "--json"]),
        (["--help"], ["--help"]),
        (["--install-completion"], ["--install-completion"]),
        (["--show-completion"], ["--show-completion"]),
        (["run", "x"], ["run", "x"]),
        (["run", "runs"], ["run", "runs"]),
        (["show", "abc", "--json"], ["show", "abc", "--json"]),
        ([], []),
    ],
)
def test_shorthand(argv: list[str], expected: list[str]) -> None:
    assert shorthand(list(argv)) == expected


@pytest.mark.parametrize("command", sorted(command_names()))
def test_shorthand_leaves_every_command_alone(command: str) -> None:
    assert shorthand([command, "x"]) == [command, "x"]


def test_shorthand_does_not_change_its_argument() -> None:
    argv = ["train", "--payload", "p"]
    shorthand(argv)
    assert argv == ["train", "--payload", "p"]


# -- schema ----------------------------------------------------------------------------------------


def test_schema_prints_json_schema() -> None:
    res = runner.invoke(app, ["schema"])
    assert res.exit_code == 0, res.output
    schema = json.loads(res.stdout)
    assert isinstance(schema, dict)
    assert "properties" in schema or "additionalProperties" in schema
    assert "properties" in json.dumps(schema)


# -- validate --------------------------------------------------------------------------------------


def test_validate_ok(tmp_path: Path) -> None:
    root = project(tmp_path, VALID)
    res = runner.invoke(app, ["validate", "--project", str(root)])
    assert res.exit_code == 0, res.output
    assert "ok" in res.stdout
    assert "2 job(s)" in res.stdout and "train" in res.stdout and "serve" in res.stdout
    assert str(root / "askanna.yml") in res.stdout


def test_validate_ok_with_the_file_path(tmp_path: Path) -> None:
    root = project(tmp_path, VALID)
    res = runner.invoke(app, ["validate", "--project", str(root / "askanna.yml")])
    assert res.exit_code == 0, res.output
    assert "ok" in res.stdout


def test_validate_json(tmp_path: Path) -> None:
    root = project(tmp_path, VALID)
    res = runner.invoke(app, ["validate", "--project", str(root), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["jobs"] == ["train", "serve"]
    assert data["file"] == str(root / "askanna.yml")
    assert data["warnings"] == []


def test_validate_finds_the_project_upward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path, VALID)
    (root / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(root / "src" / "deep")
    res = runner.invoke(app, ["validate"])
    assert res.exit_code == 0, res.output
    assert "ok" in res.stdout


def test_validate_reserved_name_exits_2_with_one_message(tmp_path: Path) -> None:
    root = project(tmp_path, "environment:\n  job:\n    - x\n")
    res = runner.invoke(app, ["validate", "--project", str(root)])
    assert res.exit_code == 2, res.output
    assert "error:" in res.stderr
    assert "reserved" in res.stderr and "environment" in res.stderr
    assert "askanna.yml:1:1" in res.stderr
    assert "Traceback" not in res.output
    assert res.stdout == ""
    assert isinstance(res.exception, SystemExit)


@pytest.mark.parametrize(
    "yml",
    [
        "train:\n  job: [\n",  # YAML syntax error
        "train:\n  job: []\n",  # no commands
        "- a\n- b\n",  # not a mapping
        "train:\n  job:\n    - x\n  output:\n    result: ../outside.json\n",
    ],
)
def test_validate_broken_files_exit_2(tmp_path: Path, yml: str) -> None:
    root = project(tmp_path, yml)
    res = runner.invoke(app, ["validate", "--project", str(root)])
    assert res.exit_code == 2, res.output
    assert "anna-run: error:" in res.stderr
    assert "Traceback" not in res.output
    assert "internal error" not in res.output


def test_validate_no_project(tmp_path: Path) -> None:
    res = runner.invoke(app, ["validate"])
    assert res.exit_code == 2, res.output
    assert "error:" in res.stderr and "askanna.yml" in res.stderr
    assert "hint:" in res.stderr


def test_validate_missing_project_dir(tmp_path: Path) -> None:
    res = runner.invoke(app, ["validate", "--project", str(tmp_path / "nope")])
    assert res.exit_code == 2, res.output
    assert "no such file or directory" in res.stderr


def test_jobs_json(tmp_path: Path) -> None:
    root = project(tmp_path, VALID)
    res = runner.invoke(app, ["jobs", "--project", str(root), "--json"])
    assert res.exit_code == 0, res.output
    jobs = json.loads(res.stdout)
    assert [j["name"] for j in jobs] == ["train", "serve"]
    assert jobs[0]["commands"] == ["pip install -r requirements.txt", "python train.py"]
    assert jobs[0]["result"] == "models/summary.json"


# -- runs and show on a store ----------------------------------------------------------------------


def test_runs_json_on_an_empty_store(tmp_path: Path) -> None:
    res = runner.invoke(app, ["runs", "--json", "--store", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == []
    assert res.stdout.strip() == "[]"


def test_runs_table_on_an_empty_store(tmp_path: Path) -> None:
    res = runner.invoke(app, ["runs", "--store", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output
    assert res.stdout.split() == ["ID", "JOB", "STATUS", "EXIT", "STARTED", "DURATION", "HOST", "NAME"]


def _seed_store(root: Path) -> list[RunRecord]:
    st = LocalStore(root)
    records = [
        RunRecord(
            id="aaaa-1111", job="train", project="p1", status="succeeded", exit_code=0,
            created_at="2024-01-01T00:00:00.000Z", started_at="2024-01-01T00:00:01.000Z", duration_s=2.5,
            commands=(CommandResult("python train.py", 0, 2.0),),
            result=FileInfo("models/summary.json", 12, "a" * 64),
        ),
        RunRecord(
            id="bbbb-2222", job="serve", project="p2", status="failed", exit_code=3,
            created_at="2024-01-02T00:00:00.000Z", reason="command failed with exit code 3", name="second",
        ),
    ]  # fmt: skip
    for record in records:
        st.save_record(record)
    return records


def test_runs_json_all(tmp_path: Path) -> None:
    store = tmp_path / "store"
    records = _seed_store(store)
    res = runner.invoke(app, ["runs", "--all", "--json", "--store", str(store)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [r["id"] for r in data] == ["bbbb-2222", "aaaa-1111"]
    assert [RunRecord.from_dict(r) for r in data] == records[::-1]
    lines = res.stdout.splitlines()  # one run a line, between the brackets
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 2 + len(records)
    assert [json.loads(line.rstrip(","))["id"] for line in lines[1:-1]] == ["bbbb-2222", "aaaa-1111"]


def test_runs_filters(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _seed_store(store)
    res = runner.invoke(app, ["runs", "--all", "--json", "--store", str(store), "--status", "failed"])
    assert [r["id"] for r in json.loads(res.stdout)] == ["bbbb-2222"]
    res = runner.invoke(app, ["runs", "--all", "--json", "--store", str(store), "--limit", "1"])
    assert [r["id"] for r in json.loads(res.stdout)] == ["bbbb-2222"]


def test_runs_store_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    _seed_store(store)
    monkeypatch.setenv("ANNA_RUN_STORE", str(store))
    res = runner.invoke(app, ["runs", "--all", "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)) == 2


def test_show_json(tmp_path: Path) -> None:
    store = tmp_path / "store"
    records = _seed_store(store)
    res = runner.invoke(app, ["show", "aaaa", "--json", "--store", str(store)])
    assert res.exit_code == 0, res.output
    assert RunRecord.from_dict(json.loads(res.stdout)) == records[0]


def test_show_text(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _seed_store(store)
    res = runner.invoke(app, ["show", "bbbb-2222", "--store", str(store)])
    assert res.exit_code == 0, res.output
    assert "bbbb-2222" in res.stdout and "failed (command failed with exit code 3)" in res.stdout


def test_show_missing_and_ambiguous_runs(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _seed_store(store)
    LocalStore(store).save_record(RunRecord(id="aaaa-9999", job="j", project="p", status="queued"))
    res = runner.invoke(app, ["show", "zzzz", "--store", str(store)])
    assert res.exit_code == 1, res.output
    assert "error: no run 'zzzz'" in res.stderr
    res = runner.invoke(app, ["show", "aaaa", "--store", str(store)])
    assert res.exit_code == 1, res.output
    assert "ambiguous" in res.stderr


def test_show_on_an_empty_store(tmp_path: Path) -> None:
    res = runner.invoke(app, ["show", "--store", str(tmp_path / "store")])
    assert res.exit_code == 1, res.output
    assert "no runs yet" in res.stderr and "hint:" in res.stderr


def test_s3_store_is_a_config_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["runs", "--json", "--store", "s3://bucket/runs"])
    assert res.exit_code == 2, res.output
    assert "error:" in res.stderr and "s3" in res.stderr


def test_damaged_record_is_one_message_not_a_traceback(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _seed_store(store)
    (store / "runs" / "aaaa-1111" / "run.json").write_text("{broken")
    res = runner.invoke(app, ["show", "aaaa-1111", "--store", str(store)])
    assert res.exit_code == 125, res.output
    assert "damaged" in res.stderr
    assert "Traceback" not in res.output


def test_no_arguments_shows_help() -> None:
    res = runner.invoke(app, [])
    assert "Usage" in res.output
    assert "validate" in res.output and "runs" in res.output


def test_result_of_a_run(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _seed_store(store)
    target = store / "runs" / "aaaa-1111" / "result" / "models" / "summary.json"
    target.parent.mkdir(parents=True)
    target.write_text('{"acc": 1.0}')
    res = runner.invoke(app, ["result", "aaaa-1111", "--store", str(store)])
    assert res.exit_code == 0, res.output
    assert res.stdout == '{"acc": 1.0}'
    res = runner.invoke(app, ["result", "bbbb-2222", "--store", str(store)])
    assert res.exit_code == 1
    assert "has no result" in res.stderr
