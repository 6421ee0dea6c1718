"""Generated inputs (issue 17, point 4): 1,000 payloads and 1,000 project files from a seeded
generator of our own, each through the real command line (typer's runner, in this process: a
process each would cost ~0.3 s of start-up alone) and, when valid, the real engine. Each ends
as a run (exit 0, or the job's own code) or as one clear error (exit 2): never a traceback,
never an internal error. Marked ``faults``: `make test` runs it with the rest."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from anna_run.cli import app, exit_code_for
from anna_run.record import RunRecord
from typer.testing import CliRunner

from .support import BB

SEED = 20261207
COUNT = 1000
RUN_AT_MOST = 30  # of the generated projects that validate, this many are also run
runner = CliRunner()

pytestmark = pytest.mark.faults


# -- the generators --------------------------------------------------------------------------------
_NAMES = ["A", "MODEL", "n", "x-y", "1ST", "_", "ÄÖ", "with space", "", "a" * 300, "PATH", "HOME", "SECRET_KEY"]
_STRINGS = [
    "",
    "plain",
    "ünïcødé ✓",
    "\u0000nul",
    "\ud7ff",
    "line\nbreak",
    "$(id)",
    "{{ A }}",
    "'\"\\",
    "x" * 5000,
]


def _value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([0, -1, 1, 2**31, 2**63, -(2**64), 10**40])
    if kind == 1:
        return rng.choice([0.5, -0.0, 1e308, 5e-324, 3.141592653589793])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind in (3, 4, 5):
        return rng.choice(_STRINGS)
    if kind in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(_NAMES): _value(rng, depth + 1) for _ in range(rng.randrange(4))}


_WEIGHTS = [1, 1, 0.5, 1, 9, 9, 9, 9, 6, 1.5, 9, 2, 9, 9]


def payload(rng: random.Random) -> bytes:
    """A payload: a valid JSON object, or one of the ways a payload goes wrong."""
    obj = {rng.choice(_NAMES): _value(rng) for _ in range(rng.randrange(1, 6))}
    text = json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode()
    # About one in ten is accepted, and runs a container: valid objects, other JSON values, and
    # what Python's parser takes (NaN, duplicate keys, "{}" and the like).
    way = rng.choices(range(14), weights=_WEIGHTS)[0]
    if way <= 2:
        return text
    if way == 3:
        return json.dumps(_value(rng)).encode()  # valid JSON, maybe not an object
    if way == 4:
        return text[: rng.randrange(max(1, len(text)))]  # cut short
    if way == 5:
        n = rng.choice([65, 1000, 200_000])
        return b"{" + b'"a":[' * n + b"]" * n + b"}"  # deep
    if way == 6:
        return rng.randbytes(rng.randrange(1, 300))  # noise
    if way == 7:
        at = rng.randrange(len(text) + 1)
        return text[:at] + bytes([rng.choice([0x80, 0xC3, 0xFF, 0xED])]) + text[at:]  # not UTF-8
    if way == 8:
        return rng.choice([b'{"A": NaN}', b'{"A": Infinity}', b'{"A": -Infinity}', b'{"A": 1e99999}'])
    if way == 9:
        return b'{"A": 1, "A": 2, "B": ' + b"9" * rng.choice([10, 5000, 100_000]) + b"}"  # duplicate, long
    if way == 10:
        return b"\xef\xbb\xbf" + text  # a BOM
    if way == 11:
        return rng.choice([b"", b" ", b"null", b"[]", b'"s"', b"{}", b"{} {}"])
    if way == 12:
        return text + rng.choice([b" trailing", b"}", b"\x00", b"\n\n{}"])
    return text.replace(b'"', b"'", 1)  # single quotes


_BASE = f"""\
environment:
  image: {BB}
variables:
  A: "1"
train:
  job:
    - echo train $A
    - mkdir -p out && echo 42 > out/r.txt
  output:
    result: out/r.txt
    artifact: [out/]
  timeout: 30s
  network: none
fail:
  job: ['exit 3']
  network: none
"""

_SNIPPETS = [
    "!!python/object/apply:os.system ['touch CANARY']",
    "&a [*a]",
    "*nowhere",
    "{{ MISSING }}",
    "${{A}}",
    "$((1+1))",
    "[" * 80 + "]" * 80,
    "{a: [b, {c: d}]}",
    "null",
    "~",
    "- - - x",
    "'unclosed",
    '"\\x00"',
    "0o777",
    "1e400",
    "9" * 4000,
    "2024-13-45",
    "yes",
    "@daily",
    "'* * * * * *'",
    "{tz: Mars/Olympus}",
    "-1",
    "1b",
    "500",
    "../../etc/passwd",
    "/abs/path",
    "ünï",
    "\t",
    "<<: *x",
    "? complex key",
]


def project_text(rng: random.Random, canary: Path) -> bytes:
    """askanna.yml: the valid base with a few lines changed, added, doubled or dropped."""
    lines = _BASE.splitlines()
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(2, len(lines))  # the image stays: no registry is reachable here
        line = lines[at]
        snippet = rng.choice(_SNIPPETS).replace("CANARY", str(canary))
        way = rng.randrange(6)
        if way == 0 and ":" in line:
            key = line.split(":", 1)[0]
            lines[at] = f"{key}: {snippet}"
        elif way == 1:
            lines.insert(at, " " * rng.choice([0, 2, 4, 6]) + f"{rng.choice(_NAMES) or 'k'}: {snippet}")
        elif way == 2:
            lines.insert(at, line)
        elif way == 3:
            del lines[at]
        elif way == 4:
            lines[at] = line + " " + snippet
        else:
            lines.insert(at, "    - " + snippet)
    text = "\n".join(lines) + "\n"
    data = text.encode()
    if rng.random() < 0.05:
        data = data[: rng.randrange(len(data))] + rng.randbytes(3)
    return data


# -- the checks ------------------------------------------------------------------------------------
def _runs(store: Path) -> set[str]:
    return {p.name for p in (store / "runs").iterdir()} if (store / "runs").is_dir() else set()


def _invoke(args: list[str]):
    return runner.invoke(app, args, catch_exceptions=True)


def _clean(result, allowed: set[int], what: str) -> None:
    where = f"{what}: exit {result.exit_code}\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}"
    assert result.exception is None or isinstance(result.exception, SystemExit), where
    assert result.exit_code in allowed, where
    assert "Traceback" not in result.stdout + result.stderr and "internal error" not in result.stderr, where
    if result.exit_code == 2:
        errors = [line for line in result.stderr.splitlines() if line.startswith("anna-run: error:")]
        assert len(errors) == 1, where


@pytest.mark.timeout(600)
@pytest.mark.case("GN-01", exit="0 or 2")
def test_a_thousand_generated_payloads(tmp_path: Path, busybox, monkeypatch, case):
    root = tmp_path / "project"
    root.mkdir()
    (root / "askanna.yml").write_text(f"environment: {{image: {BB}}}\nwork:\n  job: ['echo ran']\n  network: none\n")
    store = tmp_path / "store"
    monkeypatch.chdir(root)
    rng = random.Random(SEED)
    outcomes = {0: 0, 2: 0}
    for i in range(COUNT):
        path = tmp_path / "payloads" / f"{i:04d}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(payload(rng))
        result = _invoke(["run", "work", "--payload", str(path), "--store", str(store), "-q"])
        _clean(result, {0, 2}, f"payload {path}")
        outcomes[result.exit_code] += 1
        if result.exit_code == 0:
            assert "ran" in result.stdout
    print(f"\n{COUNT} generated payloads: {outcomes[0]} ran, {outcomes[2]} refused")
    assert outcomes[0] >= COUNT // 20 and outcomes[2] >= COUNT // 2  # both paths, many times each
    runs = list((store / "runs").iterdir())
    assert len(runs) == outcomes[0]  # a refused payload leaves no run behind


@pytest.mark.timeout(600)
@pytest.mark.case("GN-02", exit="0 or 2")
def test_a_thousand_generated_project_files(tmp_path: Path, busybox, monkeypatch, case):
    canary = tmp_path / "canary"
    store = tmp_path / "store"
    rng = random.Random(SEED + 1)
    valid: list[Path] = []
    refused = 0
    for i in range(COUNT):
        root = tmp_path / "projects" / f"{i:04d}"
        root.mkdir(parents=True)
        (root / "askanna.yml").write_bytes(project_text(rng, canary))
        result = _invoke(["validate", "--project", str(root)])
        _clean(result, {0, 2}, f"project {root}")
        if result.exit_code == 0:
            valid.append(root)
        else:
            refused += 1
    print(f"\n{COUNT} generated project files: {len(valid)} valid, {refused} refused")
    assert len(valid) >= COUNT // 10 and refused >= COUNT // 10
    ran = 0
    for root in rng.sample(valid, min(RUN_AT_MOST, len(valid))):
        monkeypatch.chdir(root)
        for job in ("train", "fail"):
            before = _runs(store)
            result = _invoke(["run", job, "--store", str(store), "-q"])
            made = _runs(store) - before
            if not made:  # refused before anything: one clear error
                _clean(result, {2}, f"run {job} of {root}")
                continue
            ran += 1
            [run_id] = made
            record = RunRecord.from_json((store / "runs" / run_id / "run.json").read_text())
            where = f"run {job} of {root}: exit {result.exit_code}\n{result.stderr[-1500:]}"
            assert result.exit_code == exit_code_for(record), where  # the job's own code, as documented
            assert "Traceback" not in result.stdout + result.stderr and "internal error" not in result.stderr, where
    print(f"{ran} runs of the valid ones")
    assert ran >= 10
    assert not canary.exists()  # no YAML tag ever ran anything
