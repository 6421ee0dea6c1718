"""The benchmark rows: each times anna-run and, where there is one, its yardstick."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anna_run.store.s3 import S3Store
    from minio import Minio

BUSYBOX = "anna-run/busybox:latest"
MB = 1 << 20


@dataclass
class Context:
    work: Path
    smoke: bool
    reps: int

    def size(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full


def anna_run(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("anna-run")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "anna_run.cli", *args]


def project(root: Path, yml: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "askanna.yml").write_text(yml)
    return root


def timed(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def interleave(
    reps: int, ours: Callable[[], float], yardstick: Callable[[], float] | None
) -> tuple[float, float | None]:
    """Medians of ``reps`` runs of each, A B A B, after one warm-up of each."""
    ours()
    if yardstick:
        yardstick()
    a, b = [], []
    for _ in range(reps):
        a.append(ours())
        if yardstick:
            b.append(yardstick())
    return statistics.median(a), (statistics.median(b) if b else None)


# The peak RSS is measured by a small wrapper process, never by this one: a child started from a
# large parent (this bench, after the S3 row) inherits the parent's high-water mark into its own
# ru_maxrss, since the exec that replaces the forked image keeps it. The wrapper is small when
# it starts the command, so the command's maxrss is its own.
RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(rc if rc >= 0 else 128 - rc)\n"
)


def rss_measured(cmd: list[str], rss_file: Path) -> list[str]:
    """``cmd`` under the wrapper, which writes the peak RSS of ``cmd`` (KiB) to ``rss_file``."""
    return [sys.executable, "-c", RSS_WRAPPER, str(rss_file), *cmd]


def peak_rss_mb(cmd: list[str], cwd: Path, env: dict) -> tuple[float, int]:
    """Peak resident memory of exactly this command's process (not the engine's), and its exit code."""
    rss_file = cwd / ".peak-rss"
    code = subprocess.call(
        rss_measured(cmd, rss_file), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    peak = int(rss_file.read_text()) / 1024
    rss_file.unlink()
    return peak, code


def result(title, ours, yardstick, yardstick_name, unit, target, verdict_ok, note="", ratio=None, added=None) -> dict:
    """One line of the table. A row judged on the seconds it adds to its yardstick passes
    ``added`` (ours − yardstick): its ratio is then not computed, so the table shows none."""
    if ratio is None and added is None and ours is not None and yardstick:
        ratio = ours / yardstick
    verdict = "n/a" if verdict_ok is None else ("yes" if verdict_ok else "**no**")
    return {
        "title": title,
        "ours": ours,
        "yardstick": yardstick,
        "yardstick_name": yardstick_name,
        "unit": unit,
        "ratio": ratio,
        "added": added,
        "target": target,
        "verdict": verdict,
        "note": note,
    }


def env_for(ctx: Context, store: str) -> dict:
    return {**os.environ, "ANNA_RUN_STORE": str(ctx.work / store), "NO_COLOR": "1"}


# -- rows ------------------------------------------------------------------------------------------
def trivial(ctx: Context) -> list[dict]:
    """A job that does nothing, like for like: no network on both sides, then the bridge on both."""
    root = project(ctx.work / "trivial", f"environment: {{image: {BUSYBOX}}}\nt: {{job: ['true']}}\n")
    env = env_for(ctx, "store-trivial")
    rows = []
    for network in ("none", "bridge"):
        ours, yard = interleave(
            ctx.reps,
            lambda network=network: timed(anna_run("t", "--network", network, "-q", "--no-cache"), root, env),
            lambda network=network: timed(["docker", "run", "--rm", "--network", network, BUSYBOX, "true"]),
        )
        name = f"docker run --rm --network {network}"
        rows.append(
            result(f"trivial job, --network {network}", ours, yard, name, "s", "ratio ≤ 1.3", ours / yard <= 1.3)
        )
    return rows


def _data_project(root: Path, files: int, each: int) -> Path:
    """A project of ``files`` random files of ``each`` bytes under data/ (an ML project's data)."""
    project(root, f"environment: {{image: {BUSYBOX}}}\nt: {{job: ['ls data | wc -l']}}\n")
    (root / "data").mkdir(exist_ok=True)
    for i in range(files):
        (root / "data" / f"part-{i:04d}.bin").write_bytes(os.urandom(each))
    return root


def project_runs(ctx: Context) -> list[dict]:
    """A 500 MB project (500 files): its package unchanged (kept in the engine) against a
    bind-mounted `docker run`, and its first run (a changed package) against create + cp + start."""
    files, each = (500, MB) if not ctx.smoke else (5, MB)
    size = f"{files * each // MB} MB"
    root = _data_project(ctx.work / "data-project", files, each)
    env = {**env_for(ctx, "store-project"), "ANNA_RUN_CODE_CACHE_MB": str(8 * files * each // MB + 64)}
    run = anna_run("t", "--network", "none", "-q", "--no-cache")
    mount = ["docker", "run", "--rm", "--network", "none", "-v", f"{root}:/code:ro", "-w", "/code", BUSYBOX]
    ours, yard = interleave(
        ctx.reps, lambda: timed(run, root, env), lambda: timed([*mount, "sh", "-c", "ls data | wc -l"])
    )
    unchanged = result(f"project {size} unchanged", ours, yard, "docker run -v PROJECT:/code:ro", "s", "ratio ≤ 1.5",
                       ours / yard <= 1.5)  # fmt: skip
    counter = iter(range(1 << 30))

    def first_run() -> float:  # a new package each time: one small file changes
        (root / "changed.txt").write_text(str(next(counter)))
        return timed(run, root, env)

    def copy_run() -> float:
        start = time.perf_counter()
        cid = subprocess.run(
            ["docker", "create", "--network", "none", "-w", "/code", BUSYBOX, "sh", "-c", "ls data | wc -l"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        try:
            subprocess.run(["docker", "cp", f"{root}/.", f"{cid}:/code"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["docker", "start", "-a", cid], check=True, stdout=subprocess.DEVNULL)
        finally:
            subprocess.run(["docker", "rm", "-f", cid], check=False, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    reps = max(1, min(ctx.reps, 5))
    ours, yard = interleave(reps, first_run, copy_run)
    first = result(f"project {size} first run", ours, yard, "docker create + cp + start + rm", "s", "ratio ≤ 1.1",
                   ours / yard <= 1.1)  # fmt: skip
    subprocess.run(anna_run("images", "prune"), env=env, check=False, capture_output=True)
    return [unchanged, first]


def _collect_seconds(root: Path, env: dict) -> float:
    # Like docker cp's copy, which is removed before the next one, the previous run's 200 MB go
    # first: neither side pays for writing back the other repetitions' files.
    shutil.rmtree(env["ANNA_RUN_STORE"], ignore_errors=True)
    proc = subprocess.run(
        anna_run("c", "--network", "none", "-q", "--no-cache"),
        cwd=root,
        env={**env, "ANNA_RUN_PROGRESS": "json"},
        check=True,
        capture_output=True,
        text=True,
    )
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    start = next(e["t"] for e in events if e.get("event") == "step_started" and e.get("step") == "collect")
    end = next(e["t"] for e in events if e.get("event") == "step_done" and e.get("step") == "collect")
    return end - start


def collection(ctx: Context) -> dict:
    size_mb = ctx.size(200, 5)
    make = f"mkdir -p out && head -c {size_mb}m /dev/zero > out/big.bin"
    root = project(
        ctx.work / "collect",
        f"environment: {{image: {BUSYBOX}}}\nc:\n  job: ['{make}']\n  output: {{artifact: [out/]}}\n",
    )
    env = env_for(ctx, "store-collect")
    name = f"anna-run-bench-cp-{os.getpid()}"
    dest = ctx.work / "cp-dest"

    def docker_cp() -> float:
        # Like ours, out of a container that has just written the file (its pages still being
        # written back), not out of one long-lived container whose file has long settled.
        if dest.exists():
            dest.unlink()
        subprocess.run(["docker", "rm", "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        job = ["docker", "run", "--name", name, "--network", "none", "-w", "/code", BUSYBOX, "sh", "-c", make]
        subprocess.run(job, check=True, stdout=subprocess.DEVNULL)
        return timed(["docker", "cp", f"{name}:/code/out/big.bin", str(dest)])

    try:
        ours, yard = interleave(ctx.reps, lambda: _collect_seconds(root, env), docker_cp)
    finally:
        subprocess.run(["docker", "rm", "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return result(
        f"collection ({size_mb} MB artifact)",
        ours,
        yard,
        "docker cp",
        "s",
        "ratio ≤ 1.1",
        ours / yard <= 1.1,
        note=(
            "ours is the collect step alone (JSON progress events): streamed, hashed and written; both copy out of "
            "a container that has just written the file, and both copies are removed before the next"
        ),
    )


def _make_tree(root: Path, files: int, total: int) -> None:
    each = max(1, total // files)
    block = os.urandom(min(each, MB))
    for i in range(files):
        folder = root / f"d{i % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"f{i:05d}.bin", "wb") as f:
            left = each
            while left > 0:
                f.write(block[: min(left, len(block))])
                left -= len(block)
    time.sleep(2.1)  # past packaging's racy-timestamp window, so the stat cache may be used


def packaging(ctx: Context) -> list[dict]:
    from anna_run.package import build_package

    files, total = ctx.size(10_000, 200), ctx.size(1024 * MB, 10 * MB)
    root = ctx.work / "tree"
    _make_tree(root, files, total)
    packages = ctx.work / "packages"
    counter = iter(range(10**6))

    def cold() -> float:
        out = packages / f"cold-{next(counter)}"
        out.mkdir(parents=True)
        start = time.perf_counter()
        build_package(root, out, cache_file=out / "cache.json")
        took = time.perf_counter() - start
        for tar in out.glob("*.tar"):
            tar.unlink()
        return took

    ours, yard = interleave(
        max(3, ctx.reps // 3), cold, lambda: timed(["bash", "-c", f"tar -C {root} -cf - . | sha256sum"])
    )
    warm_dir = packages / "warm"
    warm_dir.mkdir(parents=True)
    build_package(root, warm_dir, cache_file=warm_dir / "cache.json")

    def warm() -> float:
        start = time.perf_counter()
        package = build_package(root, warm_dir, cache_file=warm_dir / "cache.json")
        assert package.reused, "the unchanged tree was packed again"
        return time.perf_counter() - start

    warm_s, _ = interleave(ctx.reps, warm, None)
    label = f"{total // MB} MB / {files:,} files"
    return [
        result(
            f"packaging warm ({label})",
            warm_s,
            None,
            "",
            "s",
            "< 0.1 s added",
            warm_s < 0.1,
            note="an unchanged tree: a stat walk, no file read",
        ),
        result(
            f"packaging cold ({label})",
            ours,
            yard,
            "tar c \\| sha256sum",
            "s",
            "ratio ≤ 1.2",
            ours / yard <= 1.2,
            note="canonical tar written to the store and hashed in one pass (page cache warm for both)",
        ),
    ]


def _listed_store(ctx: Context, name: str, count: int, tracked: bool = False) -> dict:
    """A store of ``count`` finished runs (with a few tracked metrics and variables each when
    ``tracked``), indexed; the environment that names it."""
    from anna_run.record import RunRecord

    runs = ctx.work / name / "runs"
    for i in range(count):
        record = RunRecord(
            id=f"run-{i:06d}",
            job="train",
            project="bench-proj",
            status="succeeded",
            created_at=f"2026-01-01T00:00:00.{i:06d}Z",
            exit_code=0,
            variables={"MODEL": "linear"},
        )
        if tracked:
            last = (i % 100) / 100
            record = record.evolve(
                metrics={
                    "accuracy": {"last": last, "min": 0.5, "max": max(last, 0.5), "count": 10},
                    "loss": {"last": 1 - last, "min": 0.1, "max": 1.0, "count": 10},
                },
                tracked={"model": "linear", "epochs": 10},
            )
        (runs / record.id).mkdir(parents=True)
        (runs / record.id / "run.json").write_text(record.to_json())
    env = env_for(ctx, name)
    subprocess.run(anna_run("runs", "--all", "--reindex", "--limit", "1"), env=env, check=True, capture_output=True)
    return env


def listing(ctx: Context) -> dict:
    count = ctx.size(10_000, 200)
    env = _listed_store(ctx, "store-list", count)
    ours, _ = interleave(ctx.reps, lambda: timed(anna_run("runs", "--json", "--all"), ctx.work, env), None)
    return result(f"listing (`runs --json`, {count:,} runs)", ours, None, "", "s", "< 0.3 s", ours < 0.3)


def listing_metric(ctx: Context) -> dict:
    """`runs --json --metric accuracy` over runs that each tracked metrics and variables (SPEC §7)."""
    count = ctx.size(10_000, 200)
    env = _listed_store(ctx, "store-list-metric", count, tracked=True)
    command = anna_run("runs", "--json", "--all", "--metric", "accuracy")
    ours, _ = interleave(ctx.reps, lambda: timed(command, ctx.work, env), None)
    title = f"listing with a metric (`runs --json --metric accuracy`, {count:,} runs)"
    return result(title, ours, None, "", "s", "< 0.5 s", ours < 0.5)


def memory(ctx: Context) -> dict:
    payload_mb, artifact_mb = ctx.size(200, 20), ctx.size(2048, 50)
    root = project(
        ctx.work / "memory",
        (
            f"environment: {{image: {BUSYBOX}}}\n"
            "p: {job: ['wc -c $PAYLOAD_PATH']}\n"
            f"a:\n  job: ['mkdir -p out && head -c {artifact_mb}m /dev/zero > out/big.bin']\n"
            "  output: {artifact: [out/]}\n"
        ),
    )
    chunk = json.dumps("x" * (MB - 16))
    with open(root / "payload.json", "w") as f:
        f.write('{"FIRST": "small", "data": [')
        f.write(",".join(chunk for _ in range(payload_mb)))
        f.write("]}")
    env = env_for(ctx, "store-memory")
    rss_payload, code_p = peak_rss_mb(anna_run("p", "--payload", "payload.json", "--network", "none", "-q"), root, env)
    rss_artifact, code_a = peak_rss_mb(anna_run("a", "--network", "none", "-q"), root, env)
    assert code_p == 0 and code_a == 0, (code_p, code_a)
    worst = max(rss_payload, rss_artifact)
    return result(
        f"memory (peak RSS: {payload_mb} MB payload, {artifact_mb} MB artifact)",
        worst,
        None,
        "",
        "MB",
        "< 150 MB",
        worst < 150,
        note=f"payload run {rss_payload:.0f} MB, artifact run {rss_artifact:.0f} MB",
    )


def s3_upload_medians(
    make_store: Callable[[], S3Store], client: Minio, bucket: str, work: Path, size_mb: int, reps: int
) -> tuple[float, float]:
    """Medians (ours, yardstick) of publishing a ``size_mb`` MB artifact, interleaved after a
    warm-up of each. Ours: a run's record saved with the artifact to a fresh ``make_store()``
    (upload, sha256/ETag verification, record and index: the whole publish). The yardstick:
    minio's own ``client.fput_object`` of the same file into ``bucket``, on the same server."""
    import uuid

    from anna_run.record import FileInfo, RunRecord

    source = work / "artifact.bin"
    with open(source, "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(MB))
    digest = _sha256(source)  # collect() has it already when a run is saved
    token = uuid.uuid4().hex[:8]
    counter = iter(range(10**6))

    def ours() -> float:
        store = make_store()
        run_id = f"bench-{token}-{next(counter)}"
        run_dir = store.run_dir(run_id)
        (run_dir / "artifacts").mkdir(parents=True)
        os.link(source, run_dir / "artifacts" / "big.bin")
        record = RunRecord(
            id=run_id,
            job="bench",
            project="bench",
            status="succeeded",
            created_at="2026-01-01T00:00:00.000Z",
            artifacts=(FileInfo("big.bin", size_mb * MB, digest),),
        )
        start = time.perf_counter()
        saved = store.save_record(record)
        took = time.perf_counter() - start
        assert saved.upload is None, f"the artifact was not published: {saved.upload}"
        return took

    def fput() -> float:
        start = time.perf_counter()
        client.fput_object(bucket, f"bench-fput/{token}-{next(counter)}.bin", str(source))
        return time.perf_counter() - start

    mine, theirs = interleave(reps, ours, fput)
    assert theirs is not None
    return mine, theirs


def s3_upload(ctx: Context) -> dict:
    """A run's artifact published to the S3 store vs minio's fput_object of the same file to the
    same real SeaweedFS server; and the bytes an unchanged package costs a second process."""
    from anna_run.store.s3 import open_s3_store

    from .hosts import fixtures

    conftest = fixtures()
    bucket = conftest.S3_BUCKET
    size_mb = ctx.size(500, 8)
    server = conftest.SeaweedFS(ctx.work / "weed")
    server.start()
    settings = {**server.environ(), "XDG_CACHE_HOME": str(ctx.work / "xdg-cache")}
    old_env = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        counter = iter(range(10**6))
        mine, theirs = s3_upload_medians(
            lambda: open_s3_store(f"s3://{bucket}/bench-{next(counter)}"),
            server.client(),
            bucket,
            ctx.work,
            size_mb,
            max(3, ctx.reps // 2),
        )
        package = ctx.work / "package.tar"
        package.write_bytes(os.urandom(MB))
        sha = _sha256(package)
        store = open_s3_store(f"s3://{bucket}/bench-package")
        store.publish_package(package, sha)
        again = open_s3_store(f"s3://{bucket}/bench-package")  # another process: no memory of the first
        again.publish_package(package, sha)
        resent = again.bucket.bytes_sent
    finally:
        server.stop()
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    ok = mine / theirs <= 1.1 and resent == 0
    return result(
        f"S3 upload ({size_mb} MB artifact)",
        mine,
        theirs,
        "minio fput_object",
        "s",
        "ratio ≤ 1.1; unchanged package: 0 bytes",
        ok,
        note=f"ours: upload + sha256/ETag verification + record + index; unchanged package re-sent {resent} bytes",
    )


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MB):
            digest.update(chunk)
    return digest.hexdigest()


def queue(ctx: Context) -> dict:
    """Submit → container start on an idle runner host, vs the same job run locally: from
    launching the command to the engine's `start` event of the run's container, both."""
    title = "queue (submit → container start)"
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        note = "not measured: the runner hosts' extras are not installed (pip install 'anna-run[hosts]')"
        return result(title, None, None, "", "s", "< 0.5 s added", None, note=note)
    from anna_run.engine import connect

    from .hosts import Hosts, StartWatch

    root = project(ctx.work / "queue", f"environment: {{image: {BUSYBOX}}}\nt: {{job: ['true']}}\n")
    flags = ("--network", "none", "--no-cache", "-q")
    local_env = env_for(ctx, "store-queue")
    local_runs = ctx.work / "store-queue" / "runs"
    with Hosts(ctx.work / "hosts", workers=1) as hosts, StartWatch(connect()) as starts:
        submit_env = hosts.environ()

        def submitted() -> float:
            launched = time.time()
            run_id = hosts.submit(root, "t", *flags, env=submit_env)
            started = starts.wait(run_id)
            hosts.wait_done(run_id)  # and the worker idle again before the next one
            return started - launched

        def local() -> float:
            before = set(os.listdir(local_runs)) if local_runs.exists() else set()
            launched = time.time()
            subprocess.run(
                anna_run("t", *flags),
                cwd=root,
                env=local_env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            (run_id,) = set(os.listdir(local_runs)) - before
            return starts.wait(run_id) - launched

        ours, yard = interleave(ctx.reps, submitted, local)
    assert yard is not None
    added = ours - yard
    return result(
        title,
        ours,
        yard,
        "local `anna-run JOB`",
        "s",
        "< 0.5 s added",
        added < 0.5,
        note=(
            f"**added {added:+.3f} s** (ours − yardstick, medians). Both from launching the command to the engine's "
            "`start` event of the run's container; ours: `anna-run submit` to 1 idle `anna-run worker` (Redis "
            "broker, SeaweedFS S3 store, both private, on this machine), the yardstick a local run, local store"
        ),
        added=added,
    )


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    fn: Callable[[Context], dict | list[dict]]

    def run(self, ctx: Context) -> list[dict] | dict:
        return self.fn(ctx)


ROWS = [
    Row("trivial", "trivial job", trivial),
    Row("project", "project unchanged and first run", project_runs),
    Row("collection", "collection", collection),
    Row("packaging", "packaging warm and cold", packaging),
    Row("s3", "S3 upload", s3_upload),
    Row("listing", "listing", listing),
    Row("listing_metric", "listing with a metric", listing_metric),
    Row("queue", "queue", queue),
    Row("memory", "memory", memory),
]
