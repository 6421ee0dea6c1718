"""Secrets never rest in clear outside the worker process that runs them (SPEC §5): a real Redis,
real workers, a store folder; every Redis key and every file in the store is read back after runs
with secrets. Hosts and the project are test_hosts.py's (the hosts share ANNA_RUN_SECRET_KEY)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from anna_run.hosts.sealed import new_key
from test_hosts import PROJECT, Hosts

SECRETS = {
    "API_TOKEN": "tok-7f3a9c1e-secret",  # --secret, echoed by the job (masked in its log)
    "DB_PASSWORD": "pw-5d2b8e4f-secret",  # --var with a secret name
    "SERVICE_KEY": "env-91c0aa7b-secret",  # --env-file, secret name
}


@pytest.fixture
def key_hosts(env, redis_server, redis_url, tmp_path, api, busybox) -> Iterator[Hosts]:
    """Runner hosts sharing a store folder and a Redis broker (test_hosts.py's ``dir_hosts``)."""
    env.project(PROJECT)
    h = Hosts(env, redis_server, tmp_path, api)
    try:
        yield h
    finally:
        h.close()


def _redis_dump(url: str) -> Iterator[tuple[str, bytes]]:
    """Every key of the broker, read by its type, plus its DUMP (the raw serialised value)."""
    import redis

    r = redis.Redis.from_url(url)  # bytes as they are stored, nothing decoded
    for key in r.scan_iter(count=1000):
        kind = r.type(key).decode()
        parts: list[bytes] = [key]
        if kind == "string":
            parts.append(r.get(key) or b"")
        elif kind == "list":
            parts.extend(r.lrange(key, 0, -1))
        elif kind == "hash":
            for field, value in r.hgetall(key).items():
                parts += [field, value]
        elif kind == "set":
            parts.extend(r.smembers(key))
        elif kind == "zset":
            parts.extend(member for member, _ in r.zrange(key, 0, -1, withscores=True))
        elif kind == "stream":
            for entry_id, fields in r.xrange(key):
                parts.append(entry_id)
                for field, value in fields.items():
                    parts += [field, value]
        else:
            raise AssertionError(f"{key!r}: a {kind} this test does not read")
        parts.append(r.dump(key) or b"")
        for part in parts:
            yield f"{key.decode(errors='replace')} ({kind})", part


def _expanded(data: bytes, depth: int = 0) -> Iterator[bytes]:
    """``data``, and what it holds encoded: JSON strings, base64 (kombu's message bodies)."""
    yield data
    if depth > 4:
        return
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    stack = [parsed]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and len(value) >= 16:
            yield from _expanded(value.encode(), depth + 1)
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
            yield from _expanded(decoded, depth + 1)


def _leaks(blobs: Iterator[tuple[str, bytes]]) -> list[str]:
    found = []
    for where, blob in blobs:
        for part in _expanded(blob):
            found += [f"{name} in {where}" for name, value in SECRETS.items() if value.encode() in part]
    return found


def _submit_with_secrets(hosts: Hosts, env_file: Path, job: str, *extra: str) -> str:
    return hosts.submit(
        job,
        "--secret",
        f"API_TOKEN={SECRETS['API_TOKEN']}",
        "--var",
        f"DB_PASSWORD={SECRETS['DB_PASSWORD']}",
        "--env-file",
        str(env_file),
        *extra,
    )


def test_no_secret_rests_in_the_broker_or_the_store(key_hosts, tmp_path):
    hosts = key_hosts
    env_file = tmp_path / "outside" / "secrets.env"
    env_file.parent.mkdir()
    env_file.write_text(f"SERVICE_KEY={SECRETS['SERVICE_KEY']}\nPLAIN=not-a-secret\n")
    hosts.worker()
    queued = _submit_with_secrets(hosts, env_file, "square", "--queue", "nobody")  # stays in the broker
    ran = [_submit_with_secrets(hosts, env_file, job) for job in ("square", "talk")]
    hosts.wait_container(ran[1])  # mid-run: the task unacknowledged, the live log going
    during = list(_redis_dump(hosts.url))
    assert any("unacked" in where for where, _ in during) and any("log" in where for where, _ in during)
    assert _leaks(iter(during)) == []
    finals = [hosts.final(run_id, timeout=90) for run_id in ran]
    assert [f["status"] for f in finals] == ["succeeded", "failed"], finals
    assert finals[1]["exit_code"] == 3 and "***" in hosts.run("logs", ran[1]).stdout  # the job saw it, masked

    dump = list(_redis_dump(hosts.url))
    assert any("nobody" in where for where, _ in dump), "the queued task is not where this test looks"
    assert _leaks(iter(dump)) == []
    # The test reads the message for real: the queued task's body decodes to a sealed request.
    bodies = [p for _, blob in dump for p in _expanded(blob) if b'"sealed"' in p and queued.encode() in p]
    assert bodies, "no sealed task message found in the broker"

    files = [p for p in hosts.tmp.rglob("*") if p.is_file() and env_file.parent not in p.parents]
    assert any(p.name == "run.json" for p in files) and any(p.suffix == ".tar" for p in files)
    assert _leaks((str(p), p.read_bytes()) for p in files) == []
    assert hosts.show(queued)["status"] == "queued"


def test_a_host_without_the_right_key_records_the_run_failed_and_rotation_works(key_hosts):
    hosts = key_hosts
    old = hosts.key
    new = new_key()
    hosts.worker("wrong", ANNA_RUN_SECRET_KEY=new_key())
    hosts.worker("nokey", ANNA_RUN_SECRET_KEY="")
    hosts.worker("rotated", ANNA_RUN_SECRET_KEY=f"{new},{old}")
    wrong = hosts.submit("square", "--secret", "API_TOKEN=x-secret-1", "--queue", "wrong")
    nokey = hosts.submit("square", "--secret", "API_TOKEN=x-secret-2", "--queue", "nokey")
    by_old = hosts.submit("square", "--secret", "API_TOKEN=x-secret-3", "--queue", "rotated")
    by_new = hosts.submit(
        "square", "--secret", "API_TOKEN=x-secret-4", "--queue", "rotated", ANNA_RUN_SECRET_KEY=f"{new},{old}"
    )

    failed = hosts.final(wrong, timeout=90)
    assert failed["status"] == "failed", failed
    assert failed["reason"].startswith("config: the run's request is sealed with a key this runner host does not")
    failed = hosts.final(nokey, timeout=90)
    assert failed["status"] == "failed" and "has no key" in failed["reason"], failed
    assert hosts.run("show", wrong).returncode == 0
    for run_id in (by_old, by_new):
        assert hosts.final(run_id, timeout=90)["status"] == "succeeded"


def test_submit_with_secrets_and_no_key_is_refused(key_hosts):
    hosts = key_hosts
    for args in (("--secret", "API_TOKEN=x"), ("--var", "MY_PASSWORD=x")):
        res = hosts.run("submit", "square", *args, ANNA_RUN_SECRET_KEY="")
        assert res.returncode == 2, res.output
        assert "ANNA_RUN_SECRET_KEY is not set" in res.stderr and "anna-run hosts keygen" in res.stderr
    bad = hosts.run("submit", "square", ANNA_RUN_SECRET_KEY="not-a-key")
    assert bad.returncode == 2 and "not a key" in bad.stderr and "not-a-key" not in bad.stderr
    assert hosts.redis.keys("*") == []
    assert json.loads(hosts.run("runs", "--json", "--all").stdout) == []
    plain = hosts.run("submit", "square", "--var", "N=2", ANNA_RUN_SECRET_KEY="")  # no secret: no key needed
    assert plain.returncode == 0, plain.output
    keygen = hosts.run("hosts", "keygen")
    assert keygen.returncode == 0 and len(base64.urlsafe_b64decode(keygen.stdout.strip())) == 32
