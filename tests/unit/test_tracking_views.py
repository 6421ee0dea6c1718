"""views.py for tracking: `metrics`, `runs --metric` and `compare`, pure text and data."""

from __future__ import annotations

from anna_run import views
from anna_run.record import FileInfo, RunRecord


def rec(run_id: str, **changes) -> RunRecord:
    return RunRecord(id=run_id, job="train", project="p", status="succeeded", **changes)


A = rec(
    "aaaa",
    settings={"image": "bb", "timeout_s": None},
    variables={"MODEL": "linear"},
    tracked={"model": "linear", "layers": [3, 2]},
    metrics={"acc": {"last": 0.9, "min": 0.5, "max": 0.9, "count": 3}, "stage": {"last": "done", "count": 1}},
    result=FileInfo("r.json", 3, "a" * 64),
)
B = rec(
    "bbbb",
    settings={"image": "bb", "timeout_s": 60},
    variables={"MODEL": "linear"},
    tracked={"model": "tree"},
    metrics={"acc": {"last": 0.7, "min": 0.7, "max": 0.7, "count": 1}},
)


def test_metrics_lines() -> None:
    assert views.metrics_lines(A) == [
        "METRIC  LAST  MIN  MAX  COUNT",
        "acc     0.9   0.5  0.9  3",
        "stage   done  -    -    1",
        "",
        "VARIABLE  VALUE",
        "layers    [3,2]",
        "model     linear",
    ]
    assert views.metrics_lines(rec("cccc")) == ["run cccc tracked no metrics or variables"]
    assert views.metrics_json(B) == {"run": "bbbb", "metrics": B.metrics, "tracked": {"model": "tree"}}


def test_runs_table_with_metric_columns() -> None:
    lines = views.runs_table([A, B], ["acc", "stage"])
    assert lines[0].split()[-2:] == ["acc", "stage"]
    assert lines[1].split()[-2:] == ["0.9", "done"] and lines[2].split()[-1] == "0.7"
    assert views.with_metric_last({}, B, ["acc", "nope"]) == {"metric_last": {"acc": 0.7, "nope": None}}


def test_compare_json_marks_differences() -> None:
    data = views.compare_json([A, B])
    assert list(data) == ["runs", "settings", "variables", "tracked", "metrics", "result"]
    assert data["settings"]["image"] == {"values": ["bb", "bb"], "differs": False}
    assert data["settings"]["timeout_s"] == {"values": [None, 60], "differs": True}
    assert data["variables"]["MODEL"]["differs"] is False
    assert data["tracked"]["layers"] == {"values": [[3, 2], None], "differs": True}
    assert data["metrics"]["stage"] == {"values": [{"last": "done", "min": None, "max": None}, None], "differs": True}
    assert data["result"]["sha256"] == {"values": ["a" * 64, None], "differs": True}


def test_compare_lines() -> None:
    lines = views.compare_lines([A, B])
    assert lines[0].split() == ["aaaa", "bbbb"]
    assert "[metrics]" in "\n".join(lines)
    assert any(line.startswith("*") and "acc" in line and "0.9 (0.5..0.9)" in line and "0.7 (0.7..0.7)" in line
               for line in lines)  # fmt: skip
    assert any(line.startswith(" ") and "MODEL" in line for line in lines)
    assert lines[-2:] == ["", "* differs"]
