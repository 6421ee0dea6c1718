"""RunRecord: run.json round trip, forward compatibility, final statuses, immutability."""

from __future__ import annotations

import dataclasses
import json

import pytest
from anna_run.record import (
    FINAL_STATUSES,
    RECORD_VERSION,
    STATUSES,
    BlobRef,
    CommandResult,
    FileInfo,
    ImageInfo,
    InputRun,
    RunRecord,
    now_iso,
    parse_iso,
)


def full_record() -> RunRecord:
    return RunRecord(
        id="k68o-Mi2L-mYte-7E54",
        job="train",
        project="abcd-efgh-ijkl-mnop",
        status="failed",
        project_root="/home/me/project",
        reason="command failed with exit code 3",
        exit_code=3,
        commands=(
            CommandResult("pip install -r requirements.txt", 0, 1.25),
            CommandResult("python train.py --token ***", 3, 0.5),
            CommandResult("python report.py", None, None),
        ),
        created_at="2024-05-01T10:00:00.000Z",
        started_at="2024-05-01T10:00:01.000Z",
        finished_at="2024-05-01T10:00:04.400Z",
        duration_s=3.4,
        image=ImageInfo("python:3.11-slim", "python@sha256:" + "a" * 64, "sha256:" + "b" * 64),
        package=BlobRef("pack-aaaa-bbbb-cccc", "c" * 64, 4096),
        payload=BlobRef("payl-aaaa-bbbb-cccc", "d" * 64, 12),
        variables={"MODEL": "linear", "API_TOKEN": "***", "UNICODE": "héllo ✓"},
        secret_names=("API_TOKEN",),
        result=FileInfo("models/model_summary.json", 123, "e" * 64),
        artifacts=(FileInfo("models/model.pkl", 456, "f" * 64), FileInfo("models/a b.txt", 0, "0" * 64)),
        refused=("etc-link: a symlink to /etc (outside the workspace), not collected",),
        warnings=("secret 'ab' is too short to mask",),
        name="nightly",
        description="a run with everything",
        host="box",
        runner_version="1.2.3",
        runner="box:123:456",
        container="0123456789ab",
        rerun_of="zzzz-yyyy-xxxx-wwww",
        trigger="rerun",
        queue="gpu",
        attempts=2,
        worker="anna-run.42@box",
        log_truncated=True,
        upload="pending",
        settings={"image": "python:3.11-slim", "cpus": 1.5, "memory": 1 << 30, "network": "none"},
        inputs=(InputRun(run="Ab12-Cd34-Ef56-Gh78", job="train", status="succeeded"),),
        metrics={
            "accuracy": {"last": 0.93, "min": 0.81, "max": 0.93, "count": 3},
            "stage": {"last": "done", "count": 1},
        },
        tracked={"MODEL": "linear", "API_KEY": "***", "layers": [3, 2]},
    )


def test_every_field_is_populated_in_the_fixture() -> None:
    record = full_record()
    defaults = RunRecord(id="x", job="j", project="p", status="queued")
    for f in dataclasses.fields(RunRecord):
        if f.name in ("id", "job", "project", "status", "version"):
            continue
        assert getattr(record, f.name) != getattr(defaults, f.name), f.name


def test_json_round_trip_with_every_field() -> None:
    record = full_record()
    text = record.to_json()
    back = RunRecord.from_json(text)
    assert back == record
    assert back.to_json() == text
    assert isinstance(back.commands, tuple) and isinstance(back.commands[0], CommandResult)
    assert isinstance(back.artifacts, tuple) and isinstance(back.artifacts[0], FileInfo)
    assert isinstance(back.result, FileInfo)
    assert isinstance(back.image, ImageInfo)
    assert isinstance(back.package, BlobRef) and isinstance(back.payload, BlobRef)
    assert isinstance(back.refused, tuple) and isinstance(back.warnings, tuple)
    assert isinstance(back.secret_names, tuple)


def test_json_shape_matches_the_spec() -> None:
    data = json.loads(full_record().to_json())
    assert data["commands"][2] == {"command": "python report.py", "exit_code": None, "duration_s": None}
    assert data["image"]["name"] == "python:3.11-slim"
    assert data["package"] == {"id": "pack-aaaa-bbbb-cccc", "sha256": "c" * 64, "size": 4096}
    assert data["result"] == {"path": "models/model_summary.json", "size": 123, "sha256": "e" * 64}
    assert data["artifacts"][0] == {"path": "models/model.pkl", "size": 456, "sha256": "f" * 64}
    assert data["variables"]["API_TOKEN"] == "***"
    assert data["version"] == RECORD_VERSION
    for key in ("id", "job", "project", "status", "reason", "exit_code", "started_at", "finished_at"):
        assert key in data


def test_to_json_keeps_unicode_and_ends_with_newline() -> None:
    text = full_record().to_json()
    assert "héllo ✓" in text
    assert text.endswith("}\n")


def test_minimal_record_round_trip() -> None:
    record = RunRecord(id="a", job="j", project="p", status="queued")
    back = RunRecord.from_json(record.to_json())
    assert back == record
    data = json.loads(record.to_json())
    assert data["payload"] is None and data["result"] is None and data["image"] is None
    assert data["commands"] == [] and data["artifacts"] == []


def test_from_dict_with_only_required_keys() -> None:
    record = RunRecord.from_dict({"id": "a", "job": "j", "project": "p", "status": "running"})
    assert record == RunRecord(id="a", job="j", project="p", status="running")


def test_from_dict_accepts_null_lists() -> None:
    record = RunRecord.from_dict(
        {
            "id": "a",
            "job": "j",
            "project": "p",
            "status": "running",
            "commands": None,
            "artifacts": None,
            "refused": None,
            "warnings": None,
            "secret_names": None,
        }
    )
    assert record.commands == () and record.artifacts == () and record.refused == ()


def test_unknown_top_level_keys_are_ignored() -> None:
    data = json.loads(full_record().to_json())
    data["from_the_future"] = {"anything": [1, 2, 3]}
    data["another"] = None
    assert RunRecord.from_dict(data) == full_record()
    assert RunRecord.from_json(json.dumps(data)) == full_record()


def test_unknown_nested_keys_are_ignored() -> None:
    """A newer anna-run may add a field to a command, a file, the image or a blob reference;
    an older one must still read that run.json (forward compatibility)."""
    data = json.loads(full_record().to_json())
    data["commands"][0]["signal"] = None
    data["artifacts"][0]["mime"] = "application/octet-stream"
    data["result"]["mime"] = "application/json"
    data["image"]["platform"] = "linux/amd64"
    data["package"]["format"] = "tar"
    data["payload"]["format"] = "json"
    assert RunRecord.from_dict(data) == full_record()


def test_is_final() -> None:
    assert set(STATUSES) >= FINAL_STATUSES
    for status in STATUSES:
        record = RunRecord(id="a", job="j", project="p", status=status)
        assert record.is_final == (status in ("succeeded", "failed", "timeout", "cancelled"))
    assert not RunRecord(id="a", job="j", project="p", status="queued").is_final
    assert not RunRecord(id="a", job="j", project="p", status="running").is_final


def test_evolve_returns_a_new_record() -> None:
    record = RunRecord(id="a", job="j", project="p", status="running")
    done = record.evolve(status="succeeded", exit_code=0, commands=(CommandResult("true", 0, 0.1),))
    assert done is not record
    assert record.status == "running" and record.exit_code is None and record.commands == ()
    assert done.status == "succeeded" and done.exit_code == 0 and done.id == "a"
    assert done.is_final and not record.is_final


def test_records_are_frozen() -> None:
    record = full_record()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = "succeeded"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.commands[0].exit_code = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.evolve(status="succeeded").status = "failed"  # type: ignore[misc]


def test_evolve_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError):
        full_record().evolve(no_such_field=1)


def test_now_iso_parses_back() -> None:
    stamp = now_iso()
    assert stamp.endswith("Z")
    parsed = parse_iso(stamp)
    assert parsed.tzinfo is not None
    assert parse_iso("2024-05-01T10:00:04.400Z").microsecond == 400000


def test_a_record_read_back_whole_is_the_same_frozen_record() -> None:
    """from_dict skips __init__ when every field is there: the result must still be the same,
    frozen, hashable-by-value record, and one missing fields still gets fresh defaults."""
    record = full_record()
    back = RunRecord.from_dict(json.loads(record.to_json()))
    assert back == record and type(back) is RunRecord
    assert list(vars(back)) == [f.name for f in dataclasses.fields(RunRecord)]  # field order kept
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.status = "succeeded"  # type: ignore[misc]
    assert back.evolve(status="succeeded").status == "succeeded" and back.status == "failed"
    partial = RunRecord.from_dict({"id": "a", "job": "j", "project": "p", "status": "queued"})
    other = RunRecord.from_dict({"id": "b", "job": "j", "project": "p", "status": "queued"})
    assert partial.variables == {} and partial.variables is not other.variables
    assert partial.attempts == 1 and partial.version == RECORD_VERSION
    with pytest.raises(TypeError):
        RunRecord.from_dict({"id": "a", "job": "j"})  # required fields missing: as __init__ says


def test_a_record_from_before_tracking_reads_with_empty_summaries() -> None:
    data = json.loads(full_record().to_json())
    del data["metrics"], data["tracked"]
    record = RunRecord.from_dict(data)
    assert record.metrics == {} and record.tracked == {}
    assert RunRecord.from_dict({**data, "metrics": None, "tracked": None}).tracked == {}


def test_masked_reaches_tracked_values_and_metric_values() -> None:
    record = full_record().evolve(
        tracked={"url": "https://user:hunter22@host", "nested": {"a": ["hunter22"]}},
        metrics={"note": {"last": "pw hunter22", "count": 1}},
    )
    masked = record.masked(lambda text: text.replace("hunter22", "***"))
    assert masked.tracked == {"url": "https://user:***@host", "nested": {"a": ["***"]}}
    assert masked.metrics["note"]["last"] == "pw ***"
