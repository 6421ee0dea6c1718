"""The benchmark harness in its smoke size, so it cannot rot: it runs and writes its table
(timings are not asserted here; `make bench` measures them at full size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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
    for prefix in (
        "trivial job",
        "collection",
        "packaging warm",
        "packaging cold",
        "S3 upload",
        "listing",
        "queue",
        "memory",
    ):
        assert any(t.startswith(prefix) for t in titles), prefix
    measured = [row for row in data["rows"] if row["ours"] is not None]
    assert len(measured) >= 6 and all(row["ours"] > 0 for row in measured)
    table = (tmp_path / "RESULTS.md").read_text()
    assert table.count("\n|") == len(data["rows"]) + 2  # header, rule, one line per row
