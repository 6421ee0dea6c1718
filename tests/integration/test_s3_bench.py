"""Upload speed against the yardstick, minio's own ``fput_object``: the same file, the same server,
interleaved A B A B, medians. Opt-in (it moves gigabytes): ANNA_RUN_S3_BENCH_MB=500 pytest -s ...
By default it runs at 8 MB so it cannot rot."""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from pathlib import Path

from anna_run.record import FileInfo, RunRecord
from anna_run.store.s3 import MiB
from conftest import S3_BUCKET


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def test_upload_against_fput_object(make_s3_store, seaweedfs, tmp_path: Path) -> None:
    size_mb = int(os.environ.get("ANNA_RUN_S3_BENCH_MB") or 8)
    reps = int(os.environ.get("ANNA_RUN_S3_BENCH_REPS") or 1)
    source = tmp_path / "artifact.bin"
    with open(source, "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(MiB))
    digest = _sha256(source)  # collect() has it already when a run is saved
    client = seaweedfs.client()

    def ours(i: int) -> float:
        store = make_s3_store()
        run_dir = store.run_dir(f"bench-{i}")
        (run_dir / "artifacts").mkdir(parents=True)
        os.link(source, run_dir / "artifacts" / "big.bin")
        record = RunRecord(
            id=f"bench-{i}",
            job="bench",
            project="bench",
            status="succeeded",
            created_at="2024-01-01T00:00:00.000Z",
            artifacts=(FileInfo("big.bin", size_mb * MiB, digest),),
        )
        start = time.perf_counter()
        saved = store.save_record(record)  # upload, verify, record and index: the whole publish
        took = time.perf_counter() - start
        assert saved.upload is None
        return took

    def yardstick(i: int) -> float:
        start = time.perf_counter()
        client.fput_object(S3_BUCKET, f"bench-fput/{i}.bin", str(source))
        return time.perf_counter() - start

    ours(-1)
    yardstick(-1)
    a, b = [], []
    for i in range(reps):
        a.append(ours(i))
        b.append(yardstick(i))
    mine, theirs = statistics.median(a), statistics.median(b)
    print(
        f"\n{size_mb} MB upload, median of {reps}: anna-run {mine:.2f} s ({size_mb / mine:.0f} MB/s), "
        f"fput_object {theirs:.2f} s ({size_mb / theirs:.0f} MB/s), ratio {mine / theirs:.2f}"
    )
    assert mine > 0 and theirs > 0
