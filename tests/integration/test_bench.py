"""The benchmark harness in its smoke size, so it cannot rot: it runs and writes its table
(timings are not asserted here; `make bench` measures them at full size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROWS = (
    "trivial job, --network none",
    "trivial job, --network bridge",
    "project 5",
    "collection",
    "packaging warm",
    "packaging cold",
    "S3 upload",
    "listing",
    "queue",
    "memory",
)


def test_bench_smoke_writes_its_table(busybox, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    titles = [row["title"] for row in data["rows"]]
    for prefix in ROWS:
        assert any(t.startswith(prefix) for t in titles), prefix
    measured = [row for row in data["rows"] if row["ours"] is not None]
    assert len(measured) == len(data["rows"]) and all(row["ours"] > 0 for row in measured)
    # The queue row ran for real: a worker took a submitted run and its container started
    # (the hosts extras are installed with the test extras), judged on the seconds it adds.
    (queue,) = [row for row in data["rows"] if row["title"].startswith("queue")]
    assert queue["yardstick"] > 0 and queue["verdict"] in ("yes", "**no**"), queue
    assert queue["added"] == pytest.approx(queue["ours"] - queue["yardstick"]) and queue["ratio"] is None
    table = (tmp_path / "RESULTS.md").read_text()
    assert table.count("\n|") == len(data["rows"]) + 2  # header, rule, one line per row


def test_a_full_run_writes_its_table_into_the_readme(tmp_path):
    sys.path.insert(0, str(REPO))
    from bench.__main__ import BEGIN, END, update_readme

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{BEGIN}\n| old |\n{END}\n\nafter\n")
    table = "# anna-run benchmarks\n\nwhen · machine\n\n| row | ours |\n|---|---|\n| trivial job | 0.3 s |\n"
    assert update_readme(readme, table)
    assert readme.read_text() == (
        f"intro\n\n{BEGIN}\nwhen · machine\n\n| row | ours |\n|---|---|\n| trivial job | 0.3 s |\n{END}\n\nafter\n"
    )
    (tmp_path / "bare.md").write_text("no markers\n")
    assert not update_readme(tmp_path / "bare.md", table)
    assert (tmp_path / "bare.md").read_text() == "no markers\n"
    # The real README keeps its markers and shows a table of every row.
    text = (REPO / "README.md").read_text()
    shown = text[text.index(BEGIN) : text.index(END)]
    for prefix in ROWS:
        assert f"| {prefix}" in shown, prefix
