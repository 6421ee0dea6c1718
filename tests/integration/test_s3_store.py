"""The S3 store on a real SeaweedFS server: content addressing (bytes counted on the wire),
verified and retried uploads, multipart streaming, faults, reading commands, listing speed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from anna_run.errors import StoreError
from anna_run.record import BlobRef, FileInfo, RunRecord
from anna_run.store.s3 import S3Store
from anna_run.store.s3_bucket import MiB, Unreachable
from conftest import S3_ACCESS_KEY, S3_BUCKET, S3Env

BB = "anna-run/busybox:latest"


class Proxy:
    """A TCP relay in front of the S3 server: counts the bytes clients send, and fails like a
    network does (connections closed at once while ``down``; every connection cut once
    ``cut_at`` bytes went through)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = 0
        self.down = False
        self.drop_next = 0
        self.cut_at: int | None = None
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                refuse = self.down or self.drop_next > 0
                self.drop_next = max(0, self.drop_next - 1)
            if refuse:
                client.close()
                continue
            server = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if upstream:
                    with self._lock:
                        self.sent += len(data)
                        cut = self.cut_at is not None and self.sent >= self.cut_at
                    if cut:
                        self.go_down()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with _quiet():
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def go_down(self) -> None:
        with self._lock:
            self.down, self.cut_at = True, None
            conns, self._conns = self._conns, []
        for s in conns:
            with _quiet():
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self.go_down()
        self.listener.close()


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


@pytest.fixture
def proxy(seaweedfs):
    p = Proxy(seaweedfs.ports["s3.port"])
    yield p
    p.close()


class Recorder:
    """A Reporter that keeps what it hears."""

    def __init__(self) -> None:
        self.bytes: dict[str, list[tuple[int, int | None]]] = {}
        self.warnings: list[str] = []
        self.steps: list[tuple[str, str]] = []

    def step_started(self, step: str, detail: str = "") -> None:
        self.steps.append((step, detail))

    def step_done(self, step: str, detail: str = "") -> None:
        pass

    def bytes_done(self, step: str, done: int, total: int | None) -> None:
        self.bytes.setdefault(step, []).append((done, total))

    def log_line(self, stream: str, text: str) -> None:
        pass

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def info(self, message: str) -> None:
        pass


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def final_run(store: S3Store, run_id: str, artifacts: dict[str, bytes], **kw: object) -> RunRecord:
    """A finished run's files in the spool, and its record (not saved yet)."""
    for rel, data in artifacts.items():
        path = store.run_dir(run_id) / "artifacts" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (store.run_dir(run_id) / "log.txt").write_text("done\n")
    infos = tuple(FileInfo(rel, len(data), sha(data)) for rel, data in sorted(artifacts.items()))
    fields: dict = {"job": "train", "project": "proj", "status": "succeeded", "created_at": "2024-05-01T00:00:00.000Z"}
    fields.update(kw)
    return RunRecord(id=run_id, artifacts=infos, **fields)


def object_bytes(seaweedfs, key: str) -> bytes:
    response = seaweedfs.client().get_object(S3_BUCKET, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


# -- content addressing ----------------------------------------------------------------------------


def test_an_unchanged_package_ships_zero_bytes(s3_env: S3Env, busybox, proxy: Proxy, tmp_path: Path) -> None:
    s3_env.project(
        f"""
        environment: {{image: {BB}}}
        ok: {{job: ['wc -c data.bin']}}
        """,
        files={"data.bin": os.urandom(3_000_000)},
    )
    first = s3_env.run("ok", "--network", "none", ANNA_RUN_S3_ENDPOINT=proxy.endpoint)
    assert first.returncode == 0, first.output
    assert proxy.sent > 3_000_000 and "upload package" in first.stderr
    first_bytes, proxy.sent = proxy.sent, 0
    second = s3_env.run("ok", "--network", "none", ANNA_RUN_S3_ENDPOINT=proxy.endpoint)
    assert second.returncode == 0, second.output
    again = proxy.sent
    # Another host (an empty local cache) packs the same tree: the same sha, nothing sent either.
    proxy.sent = 0
    other_host = s3_env.run(
        "ok", "--network", "none", ANNA_RUN_S3_ENDPOINT=proxy.endpoint, XDG_CACHE_HOME=str(tmp_path / "host2")
    )
    assert other_host.returncode == 0, other_host.output
    # What a run sends besides the package: HEADs, its log and record — a few kB, not 3 MB.
    print(f"\nbytes sent: first run {first_bytes:,}, unchanged {again:,}, other host {proxy.sent:,}")
    assert again < 60_000 and proxy.sent < 60_000, (again, proxy.sent)
    assert "upload package" not in second.stderr + other_host.stderr
    packages = s3_env.keys("packages/")
    assert len(packages) == 1 and packages[0].endswith(".tar")


def test_a_known_package_costs_no_upload_bytes(make_s3_store) -> None:
    data = os.urandom(2 * MiB)
    store = make_s3_store()
    path = store.packages_dir() / f"{sha(data)}.tar"
    path.write_bytes(data)
    store.publish_package(path, sha(data))
    assert store.bucket.bytes_sent == len(data)
    other = make_s3_store(prefix=store.prefix)
    path2 = other.packages_dir() / f"{sha(data)}.tar"
    path2.write_bytes(data)
    other.publish_package(path2, sha(data))
    assert other.bucket.bytes_sent == 0


# -- verified, streamed, multipart -----------------------------------------------------------------


def test_a_large_file_goes_multipart_streamed_and_checked(make_s3_store, seaweedfs) -> None:
    reporter = Recorder()
    store = make_s3_store()
    store.reporter = reporter
    store.bucket.part_size, store.bucket.parallel = 5 * MiB, 2
    big = os.urandom(48 * MiB)
    record = final_run(store, "big-0001", {"big.bin": big})
    tracemalloc.start()
    try:
        saved = store.save_record(record)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert saved.upload is None
    assert peak < 30 * MiB, f"{peak / MiB:.0f} MiB held for a 48 MiB file"  # a few parts, never the file
    key = f"{store.prefix}/runs/big-0001/artifacts/big.bin"
    st = seaweedfs.client().stat_object(S3_BUCKET, key)
    assert st.size == len(big) and st.metadata["x-amz-meta-sha256"] == sha(big)
    assert st.etag.strip('"').endswith("-10")  # 48 MiB in 5 MiB parts
    progress = reporter.bytes["upload"]
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert progress[-1][0] == progress[-1][1] >= len(big)
    assert sha(object_bytes(seaweedfs, key)) == sha(big)


@pytest.mark.parametrize(
    ("size", "damage"),
    [(100_000, "flip"), (100_000, "truncate"), (12 * MiB, "flip")],
    ids=["single-flip", "single-truncate", "multipart-flip"],
)
def test_a_corrupted_upload_is_detected_and_retried(make_s3_store, seaweedfs, monkeypatch, size, damage) -> None:
    """The bytes leave the client damaged once (a flipped byte, a short body): the server
    stores them; the check after the upload sees it, and the upload is done again."""
    from minio import Minio

    store = make_s3_store()
    store.bucket.part_size = 5 * MiB
    data = os.urandom(size)
    record = final_run(store, "corrupt-01", {"model.bin": data})
    key = f"{store.prefix}/runs/corrupt-01/artifacts/model.bin"
    original = Minio._put_object
    puts: list[int] = []

    def damaging(self, bucket_name, object_name, body, headers=None, query_params=None):
        if object_name == key:
            puts.append(len(body))
            if len(puts) == 1:
                body = body[:-1] if damage == "truncate" else body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
        return original(self, bucket_name, object_name, body, headers, query_params)

    monkeypatch.setattr(Minio, "_put_object", damaging)
    assert store.save_record(record).upload is None
    parts = -(-size // (5 * MiB))
    assert len(puts) == 2 * parts  # every part once more: the whole upload was redone
    assert object_bytes(seaweedfs, key) == data
    assert 2 * size <= store.bucket.bytes_sent < 2 * size + 20_000  # twice the file, and the small files once


@pytest.mark.parametrize("bad", ["other-digest", "short", "no-metadata"])
def test_a_bad_object_already_in_the_store_is_replaced(make_s3_store, seaweedfs, bad: str) -> None:
    """An object is taken as present only when its size and the sha256 stored with it (set by a
    verified upload) match; anything else at a content key is uploaded again."""
    data = os.urandom(200_000)
    digest = sha(data)
    store = make_s3_store()
    key = f"{store.prefix}/packages/{digest}.tar"
    planted = {"other-digest": os.urandom(len(data)), "short": data[:-10], "no-metadata": data}[bad]
    meta = {"other-digest": {"sha256": sha(planted)}, "short": {"sha256": digest}, "no-metadata": None}[bad]
    seaweedfs.client().put_object(S3_BUCKET, key, io.BytesIO(planted), len(planted), metadata=meta)
    path = store.packages_dir() / f"{digest}.tar"
    path.write_bytes(data)
    store.publish_package(path, digest)
    assert store.bucket.bytes_sent == len(data)
    assert object_bytes(seaweedfs, key) == data


def test_transient_failures_are_retried_with_backoff(make_s3_store, proxy: Proxy) -> None:
    """Real network faults: the first two connections are closed as they open."""
    store = make_s3_store(endpoint=f"127.0.0.1:{proxy.port}", attempts=4)
    store.bucket.backoff = 0.2
    proxy.drop_next = 2
    data = b"x" * 1000
    path = store.packages_dir() / f"{sha(data)}.tar"
    path.write_bytes(data)
    started = time.monotonic()
    store.publish_package(path, sha(data))
    assert time.monotonic() - started >= 0.2 + 0.4 - 0.05  # waited: 0.2 s, then 0.4 s
    assert proxy.drop_next == 0 and store.bucket.bytes_sent == len(data)


def test_a_connection_cut_mid_upload_loses_nothing(make_s3_store, proxy: Proxy, tmp_path: Path) -> None:
    reporter = Recorder()
    store = make_s3_store(endpoint=f"127.0.0.1:{proxy.port}", attempts=2)
    store.reporter = reporter
    store.bucket.part_size = 5 * MiB
    big = os.urandom(20 * MiB)
    record = final_run(store, "cut-0001", {"w/big.bin": big, "small.txt": b"small"})
    proxy.cut_at = proxy.sent + 8 * MiB
    saved = store.save_record(record)
    assert saved.upload == "pending" and saved.status == "succeeded"
    assert any("anna-run sync" in w for w in reporter.warnings)
    # The failed attempts' hashing threads (one per upload, see HashingReader) all ended.
    assert [t for t in threading.enumerate() if t.name == "anna-run-s3-hash"] == []
    spooled = store.spool.read_record("cut-0001")
    assert spooled is not None and spooled.upload == "pending"
    assert (store.run_dir("cut-0001") / "artifacts/w/big.bin").read_bytes() == big
    proxy.down = False
    elsewhere = make_s3_store(prefix=store.prefix)
    assert elsewhere.list_runs() == []  # no record names files that are not all there
    report = store.sync()
    assert report.uploaded == ("cut-0001",) and report.pending == ()
    assert store.sync().uploaded == ()  # idempotent
    assert not store.run_dir("cut-0001").exists()
    got = elsewhere.get("cut-0001")
    assert got.upload is None and got.artifacts == record.artifacts
    assert elsewhere.fetch_artifacts(got, tmp_path / "out") == 2
    assert (tmp_path / "out/w/big.bin").read_bytes() == big


def test_sync_with_the_server_away_keeps_everything(make_s3_store, proxy: Proxy) -> None:
    store = make_s3_store(endpoint=f"127.0.0.1:{proxy.port}", attempts=2)
    proxy.down = True
    for i in range(3):
        assert store.save_record(final_run(store, f"away-{i}", {"a.txt": b"a"})).upload == "pending"
    report = store.sync()
    assert report.uploaded == () and [r for r, _ in report.pending] == ["away-0", "away-1", "away-2"]
    assert all("unreachable" in why for _, why in report.pending)
    # The server away, a listing answers with what this machine holds, and says so (issue 17, SPEC §4).
    listed = store.list_runs()
    assert [(r.id, r.upload) for r in listed] == [("away-2", "pending"), ("away-1", "pending"), ("away-0", "pending")]
    assert [w for w in store.reporter.warnings if "unreachable" in w and "this machine holds" in w] != []
    elsewhere = make_s3_store(endpoint=f"127.0.0.1:{proxy.port}", attempts=2, prefix=store.prefix)
    with pytest.raises(Unreachable, match="unreachable"):  # a machine that holds nothing of the store
        elsewhere.list_runs()
    proxy.down = False
    assert store.sync().uploaded == ("away-0", "away-1", "away-2")
    assert [r.id for r in store.list_runs()] == ["away-2", "away-1", "away-0"]


# -- bad input, through the command line -----------------------------------------------------------


def _job(env: S3Env) -> None:
    env.project(f"""
        environment: {{image: {BB}}}
        ok:
          job: ['echo "line one"', 'mkdir -p out/m && echo 42 > out/r.txt && seq 1 5000 > out/m/w.txt']
          output: {{result: out/r.txt, artifact: [out/m/]}}
        """)


def test_wrong_credentials_say_so(s3_env: S3Env, busybox, ours) -> None:
    _job(s3_env)
    before = ours()
    for args in (("ok", "--network", "none"), ("runs",), ("show", "abcd")):
        res = s3_env.run(*args, ANNA_RUN_S3_SECRET_KEY="wrong-secret")
        assert res.returncode == 125, (args, res.output)
        assert "refused the credentials" in res.stderr and "ANNA_RUN_S3_SECRET_KEY" in res.stderr
        assert "Traceback" not in res.output
    res = s3_env.run("runs", ANNA_RUN_S3_ACCESS_KEY="nobody")
    assert res.returncode == 125 and "refused the credentials" in res.stderr
    assert ours() == before  # the run stopped before any container
    assert s3_env.keys() == []


def test_a_missing_bucket_is_named(s3_env: S3Env, busybox) -> None:
    _job(s3_env)
    for args in (("ok", "--network", "none"), ("runs",)):
        res = s3_env.run(*args, "--store", "s3://no-such-bucket-here/x")
        assert res.returncode == 125, res.output
        assert "'no-such-bucket-here' does not exist" in res.stderr and "Traceback" not in res.output


@pytest.mark.parametrize("url", ["s3://", "s3://Bad_Bucket/x", "s3://bucket//x", "s3://ab", "s3:/bucket"])
def test_a_malformed_url_is_a_config_error(s3_env: S3Env, busybox, ours, url: str) -> None:
    _job(s3_env)
    before = ours()
    for args in (("ok", "--network", "none"), ("runs",)):
        res = s3_env.run(*args, ANNA_RUN_STORE=url)
        assert res.returncode == 2, res.output
        assert "error:" in res.stderr and "Traceback" not in res.output
    assert ours() == before


# -- reading ---------------------------------------------------------------------------------------


def test_reading_commands_work_on_s3(s3_env: S3Env, busybox, tmp_path: Path) -> None:
    _job(s3_env)
    res = s3_env.run("ok", "--network", "none", "--name", "first")
    assert res.returncode == 0, res.output
    assert s3_env.records() == []  # uploaded: nothing left in the spool
    runs = json.loads(s3_env.run("runs", "--json").stdout)
    assert len(runs) == 1 and runs[0]["upload"] is None and runs[0]["name"] == "first"
    run_id = runs[0]["id"]
    keys = s3_env.keys(f"runs/{run_id}/")
    assert {k.split(f"{run_id}/", 1)[1] for k in keys} == {
        "run.json",
        "log.txt",
        "stdout.log",
        "stderr.log",
        "result/out/r.txt",
        "artifacts/out/m/w.txt",
    }
    assert len(s3_env.keys("index/")) == 1 and len(s3_env.keys("packages/")) == 1
    assert json.loads(s3_env.run("show", run_id[:6], "--json").stdout) == runs[0]
    assert "line one" in s3_env.run("logs", run_id).stdout
    follow = s3_env.run("logs", "-f", run_id)
    assert follow.returncode == 0 and "line one" in follow.stdout
    assert s3_env.run("result", run_id).stdout == "42\n"
    assert s3_env.run("result", "-o", str(tmp_path / "r.txt")).returncode == 0
    assert (tmp_path / "r.txt").read_text() == "42\n"
    res = s3_env.run("artifact", run_id, "-o", str(tmp_path / "art"))
    assert res.returncode == 0 and "copied 1 file(s)" in res.stderr
    expected = "".join(f"{i}\n" for i in range(1, 5001)).encode()
    assert (tmp_path / "art/out/m/w.txt").read_bytes() == expected
    assert runs[0]["artifacts"] == [{"path": "out/m/w.txt", "size": len(expected), "sha256": sha(expected)}]
    assert "line one" in s3_env.run("logs", run_id, XDG_CACHE_HOME=str(tmp_path / "elsewhere")).stdout
    table = s3_env.run("runs")
    assert run_id in table.stdout and "pending" not in table.output
    assert s3_env.run("sync").stdout.strip() == "nothing to upload"


def test_listing_1000_runs_is_fast(seaweedfs, make_s3_store, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = make_s3_store()
    client = seaweedfs.client()
    records = [
        RunRecord(
            id=f"r{i:04d}-list",
            job="train" if i % 2 else "serve",
            project="projA" if i % 4 else "projB",
            status="succeeded" if i % 3 else "failed",
            created_at=f"2024-03-{1 + i // 100:02d}T00:00:{i % 60:02d}.{i:03d}Z",
            variables={"MODEL": "linear", "N": str(i)},
            package=BlobRef("id", "a" * 64, 1),
        )
        for i in range(1000)
    ]

    def put(record: RunRecord) -> None:
        body = record.to_json().encode()
        for key in (f"{store.prefix}/runs/{record.id}/run.json", store.index_key(record)):
            client.put_object(S3_BUCKET, key, io.BytesIO(body), len(body), metadata={"sha256": sha(body)})

    # A store as anna-run leaves it: about one run in 50 packs the index when it ends
    # (s3_packs.py), so the newest runs are not in the latest pack yet.
    with ThreadPoolExecutor(8) as pool:  # minio's default pool keeps 10 connections
        list(pool.map(put, records[:960]))
        store.pack_index()
        list(pool.map(put, records[960:]))
    newest_first = sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)
    env = S3Env(tmp_path / "p", seaweedfs, store.prefix, tmp_path / "cache")
    env.root.mkdir()
    started = time.monotonic()
    res = env.run("runs", "--all", "--json")  # a whole command, with a cold cache
    cold = time.monotonic() - started
    assert res.returncode == 0, res.output
    assert [r["id"] for r in json.loads(res.stdout)] == [r.id for r in newest_first]
    started = time.monotonic()
    res = env.run("runs", "--all", "--json")
    warm = time.monotonic() - started
    assert res.returncode == 0 and len(json.loads(res.stdout)) == 1000
    print(f"\n1,000 runs listed by `anna-run runs --all --json`: cold cache {cold:.2f} s, warm {warm:.2f} s")
    assert cold < 2.0 and warm < 2.0
    fresh = make_s3_store(prefix=store.prefix)
    assert [r.id for r in fresh.list_runs(project="projB", limit=5)] == [
        r.id for r in newest_first if r.project == "projB"
    ][:5]
    assert len(fresh.list_runs(job="train", status="failed")) == sum(
        r.job == "train" and r.status == "failed" for r in records
    )


def test_a_damaged_record_in_s3_is_a_store_error(make_s3_store, seaweedfs) -> None:
    store = make_s3_store()
    store.save_record(RunRecord(id="dmg-0001", job="j", project="p", status="succeeded"))
    body = b"{not json"
    key = f"{store.prefix}/runs/dmg-0001/run.json"
    seaweedfs.client().put_object(S3_BUCKET, key, io.BytesIO(body), len(body))
    with pytest.raises(StoreError, match="damaged"):
        make_s3_store(prefix=store.prefix).get("dmg-0001")


def test_credentials_come_from_aws_variables(s3_env: S3Env, busybox) -> None:
    _job(s3_env)
    aws = {
        "ANNA_RUN_S3_ACCESS_KEY": "",
        "ANNA_RUN_S3_SECRET_KEY": "",
        "ANNA_RUN_S3_ENDPOINT": "",
        "AWS_ENDPOINT_URL": s3_env.server.endpoint,
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": s3_env.server.environ()["ANNA_RUN_S3_SECRET_KEY"],
        "AWS_REGION": "us-east-1",
    }
    res = s3_env.run("ok", "--network", "none", **aws)
    assert res.returncode == 0, res.output
    assert len(json.loads(s3_env.run("runs", "--json", **aws).stdout)) == 1


def test_ctrl_c_during_the_upload_leaves_the_run_pending(make_s3_store, monkeypatch) -> None:
    """The run has ended: Ctrl-C stops the upload, not the run, whose status stays the job's."""
    from minio import Minio

    reporter = Recorder()
    store = make_s3_store()
    store.reporter = reporter
    record = final_run(store, "intr-0001", {"a.bin": b"a" * 1000}, status="failed", exit_code=3)

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Minio, "_put_object", interrupted)
    saved = store.save_record(record)
    assert (saved.status, saved.exit_code, saved.upload) == ("failed", 3, "pending")
    assert "interrupted" in reporter.warnings[-1] and "anna-run sync" in reporter.warnings[-1]
    monkeypatch.undo()
    assert store.sync().uploaded == ("intr-0001",)
    assert make_s3_store(prefix=store.prefix).get("intr-0001").status == "failed"


def test_detach_and_follow_on_s3(s3_env: S3Env, busybox) -> None:
    """Live, the log is read from the spool; once the run is uploaded, from S3: no line lost."""
    s3_env.project(f"""
        environment: {{image: {BB}}}
        bg: {{job: ['echo first-line; sleep 1; seq 1 3000; echo last-line']}}
        """)
    res = s3_env.run("bg", "--detach", "--network", "none")
    assert res.returncode == 0, res.output
    run_id = res.stdout.strip()
    follow = s3_env.run("logs", "-f", run_id, timeout=60)
    assert follow.returncode == 0, follow.output
    assert "first-line" in follow.stdout and "last-line" in follow.stdout
    assert "".join(f"{i}\n" for i in range(1, 3001)) in follow.stdout
    record = json.loads(s3_env.run("show", run_id, "--json").stdout)
    assert record["status"] == "succeeded" and record["upload"] is None
    deadline = time.monotonic() + 20
    while s3_env.records() and time.monotonic() < deadline:  # the spool empties once uploaded
        time.sleep(0.1)
    assert s3_env.records() == []
    assert "last-line" in s3_env.run("logs", run_id).stdout
