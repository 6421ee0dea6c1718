"""What the CLI shows: records, listings and tables as text, JSON as text. Each function takes
what a command got and returns what it prints; printing (and to which stream) is the CLI's."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .project import Project
    from .record import RunRecord
    from .store.base import SyncReport

MAX_ARTIFACTS_SHOWN = 20  # `show` lists this many artifacts, then how many more there are


def json_text(data: Any) -> str:
    """``data`` as JSON text ending with a newline: a non-empty list one item a line, else indented."""
    if isinstance(data, list) and data:
        # One item per line: json's C encoder writes a line (an indent falls back to the Python
        # one, ten times slower: 0.65 s for 10,000 runs), and `grep` still finds one run a line.
        encode = json.JSONEncoder(ensure_ascii=False).encode
        return "[\n" + ",\n".join(map(encode, data)) + "\n]\n"
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns, the first row a header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _when(iso: str | None) -> str:
    """An ISO timestamp to the second, with a space instead of the T."""
    return (iso or "")[:19].replace("T", " ")


# -- runs ------------------------------------------------------------------------------------------
def summary(record: RunRecord) -> str:
    """The one line that ends `run`, `rerun` and `submit --wait`."""
    took = f" in {record.duration_s:.1f} s" if record.duration_s is not None else ""
    line = f"run {record.id} {record.status}{took}"
    if record.reason:
        line += f" ({record.reason})"
    if record.result:
        line += f"; result {record.result.path} ({record.result.size} bytes)"
    if record.artifacts:
        line += f"; {len(record.artifacts)} artifact file(s)"
    if getattr(record, "upload", None) == "pending":
        line += "; upload pending: run `anna-run sync`"
    return line + f"; `anna-run show {record.id}`"


def runs_table(records: Iterable[RunRecord]) -> list[str]:
    """`anna-run runs`: one row a run, newest first as given."""
    rows = [("ID", "JOB", "STATUS", "EXIT", "STARTED", "DURATION", "HOST", "NAME")]
    for r in records:
        rows.append(
            (
                r.id,
                r.job,
                r.status + (" (upload pending)" if r.upload == "pending" else ""),
                "" if r.exit_code is None else str(r.exit_code),
                _when(r.started_at or r.created_at),
                "" if r.duration_s is None else f"{r.duration_s:.1f}s",
                f"queue {r.queue}" if r.queue is not None and r.status == "queued" else r.host,
                r.name or "",
            )
        )
    return table(rows)


def record_lines(record: RunRecord) -> list[str]:
    """`anna-run show`: a run's record for people."""
    lines = [
        f"run       {record.id}  {record.name or ''}".rstrip(),
        f"job       {record.job}",
        f"status    {record.status}" + (f" ({record.reason})" if record.reason else ""),
    ]
    if record.queue is not None:  # a submitted run
        worker = f"   worker {record.worker}" if record.worker else ""
        lines.append(f"queue     {record.queue}   host {record.host or '-'}{worker}   attempts {record.attempts}")
    lines.append(f"exit code {record.exit_code}")
    lines.append(f"started   {record.started_at}   finished {record.finished_at}   ({record.duration_s} s)")
    if record.image:
        lines.append(f"image     {record.image.name}  {record.image.digest or record.image.id}")
    for command in record.commands:
        code = "not reached" if command.exit_code is None else f"exit {command.exit_code}"
        lines.append(f"  $ {command.command}   [{code}, {command.duration_s} s]")
    if record.result:
        result = record.result
        lines.append(f"result    {result.path} ({result.size} bytes, sha256 {result.sha256[:12]})")
    for artifact in record.artifacts[:MAX_ARTIFACTS_SHOWN]:
        lines.append(f"artifact  {artifact.path} ({artifact.size} bytes)")
    if len(record.artifacts) > MAX_ARTIFACTS_SHOWN:
        lines.append(f"artifact  ... and {len(record.artifacts) - MAX_ARTIFACTS_SHOWN} more")
    lines.extend(f"refused   {refused}" for refused in record.refused)
    return lines


def artifacts_json(record: RunRecord) -> list[dict[str, Any]]:
    return [{"path": a.path, "size": a.size, "sha256": a.sha256} for a in record.artifacts]


def artifact_lines(record: RunRecord) -> list[str]:
    return [f"{a.path}\t{a.size}\t{a.sha256}" for a in record.artifacts]


# -- the project file ------------------------------------------------------------------------------
def jobs_json(project: Project) -> list[dict[str, Any]]:
    return [
        {
            "name": j.name,
            "commands": list(j.commands),
            "result": j.output.result,
            "artifacts": list(j.output.artifacts),
            "image": project.environment_for(j).image,
            "timeout_s": j.timeout,
            "schedule": list(j.schedule),
        }
        for j in project.jobs
    ]


def job_lines(project: Project) -> list[str]:
    return [f"{job.name}\t{len(job.commands)} command(s)\t{project.environment_for(job).image}" for job in project.jobs]


def validation_json(project: Project) -> dict[str, Any]:
    return {"file": str(project.file), "jobs": list(project.job_names()), "warnings": list(project.warnings)}


def validation_line(project: Project) -> str:
    return f"{project.file}: ok, {len(project.jobs)} job(s): {', '.join(project.job_names())}"


# -- housekeeping ----------------------------------------------------------------------------------
def removed_lines(items: list[dict], dry_run: bool, describe: Callable[[dict], str], none: str) -> list[str]:
    """What a clean-up removed (or, with --dry-run, would remove); ``none`` when nothing."""
    verb = "would remove" if dry_run else "removed"
    return [f"{verb} {describe(item)}" for item in items] or [none]


def garbage_item(item: dict) -> str:
    """One thing `anna-run gc` removed: a run's leftover, or (--blobs) a package or payload."""
    if "run" not in item:
        return f"{item['kind']} {item['name']} ({item['size'] / 1e6:.1f} MB, {item['where']})"
    return f"{item['kind']} {item['name']} (run {item['run']})"


def build_item(item: dict) -> str:
    """One build `anna-run images prune` removed."""
    return f"{item['name']} ({item['size'] / 1e6:.1f} MB)"


def sync_json(report: SyncReport) -> dict[str, Any]:
    pending = [{"run": run_id, "reason": why} for run_id, why in report.pending]
    return {"uploaded": list(report.uploaded), "pending": pending, "running": list(report.running)}


def images_table(images: list[dict]) -> list[str]:
    """`anna-run images`: one row an image."""
    rows = [("IMAGE", "ID", "SIZE", "LAST USED", "RUNS")]
    for image in images:
        rows.append(
            (
                image["name"],
                (image["id"] or "")[7:19],
                "" if image["size"] is None else f"{image['size'] / 1e6:.1f} MB",
                _when(image["last_used"]),
                str(image["runs"]),
            )
        )
    return table(rows)


# -- runner hosts ----------------------------------------------------------------------------------
def hosts_table(workers: list[dict]) -> list[str]:
    """`anna-run hosts`: one row a live worker, with the runs it runs."""
    rows = [("WORKER", "HOST", "QUEUES", "SLOTS", "STATE", "RUNNING")]
    for w in workers:
        running = ", ".join(f"{run['id']} ({run['job']})" for run in w["runs"]) or "-"
        rows.append(
            (w["worker"], w["host"], ",".join(w["queues"]), f"{len(w['runs'])}/{w['concurrency']}", w["state"], running)
        )
    return table(rows)
