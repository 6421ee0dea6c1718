"""Upload speed against the yardstick, minio's own ``fput_object``: the same file, the same server,
interleaved A B A B, medians — the measure of the bench's S3 row (bench/rows.py), here on the
session's server and in-process stores. Opt-in size (it moves gigabytes):
ANNA_RUN_S3_BENCH_MB=500 pytest -s ... By default it runs at 8 MB so it cannot rot."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from conftest import S3_BUCKET

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench/
from bench.rows import s3_upload_medians


def test_upload_against_fput_object(make_s3_store, seaweedfs, tmp_path: Path) -> None:
    size_mb = int(os.environ.get("ANNA_RUN_S3_BENCH_MB") or 8)
    reps = int(os.environ.get("ANNA_RUN_S3_BENCH_REPS") or 1)
    # Each save asserts the artifact was published (no upload left pending).
    mine, theirs = s3_upload_medians(make_s3_store, seaweedfs.client(), S3_BUCKET, tmp_path, size_mb, reps)
    print(
        f"\n{size_mb} MB upload, median of {reps}: anna-run {mine:.2f} s ({size_mb / mine:.0f} MB/s), "
        f"fput_object {theirs:.2f} s ({size_mb / theirs:.0f} MB/s), ratio {mine / theirs:.2f}"
    )
    assert mine > 0 and theirs > 0
