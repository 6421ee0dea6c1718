"""What the CLI shows: records, listings and tables as text, JSON as text. Each function takes
what a command got and returns what it prints; printing (and to which stream) is the CLI's."""

from __future__ import annotations

import json
from collections.abc import Callable, Container, Iterable
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


def runs_table(records: Iterable[RunRecord], metrics: Iterable[str] = (), stale: Container[str] = ()) -> list[str]:
    """`anna-run runs`: one row a run, newest first as given; a column of each metric's last value.
    A run in ``stale`` that had not ended is marked: it is shown as this machine last saw it."""
    metrics = tuple(metrics)
    rows = [("ID", "JOB", "STATUS", "EXIT", "STARTED", "DURATION", "HOST", "NAME", *metrics)]
    for r in records:
        rows.append(
            (
                r.id,
                r.job,
                r.status
                + (" (upload pending)" if r.upload == "pending" else "")
                + (" (as last seen)" if r.id in stale and not r.is_final else ""),
                "" if r.exit_code is None else str(r.exit_code),
                _when(r.started_at or r.created_at),
                "" if r.duration_s is None else f"{r.duration_s:.1f}s",
                f"queue {r.queue}" if r.queue is not None and r.status == "queued" else r.host,
                r.name or "",
                *(_value(metric_last(r, m)) if m in r.metrics else "" for m in metrics),
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


# -- schedules -------------------------------------------------------------------------------------
def schedules_table(entries: list[dict]) -> list[str]:
    """`anna-run schedules`: one row a registered entry (``EntryState.to_dict()`` each)."""
    if not entries:
        return ["no schedules registered (`anna-run schedules enable` in a project registers its jobs')"]
    rows = [("JOB", "CRON", "TIMEZONE", "NEXT (TZ)", "NEXT (UTC)", "LAST RUN", "MISSED", "SKIPPED", "PROJECT")]
    for e in entries:
        last = f"{e['last_run']} {e['last_status'] or '?'}" if e["last_run"] else "-"
        rows.append(
            (
                e["job"],
                e["cron"],
                e["timezone"],
                _when(e["next_fire"]) or "-",
                _when(e["next_fire_utc"]) or "-",
                last,
                str(len(e["missed"])) + (f" (last {_when(e['missed'][-1])})" if e["missed"] else ""),
                str(len(e["skipped"])) + (f" (last {_when(e['skipped'][-1])})" if e["skipped"] else ""),
                e["project_root"],
            )
        )
    return table(rows)


# -- tracking --------------------------------------------------------------------------------------
def _value(value: Any) -> str:
    """A tracked value in a cell: text as it is, anything else as compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def metrics_json(record: RunRecord) -> dict[str, Any]:
    """`anna-run metrics RUN --json`."""
    return {"run": record.id, "metrics": record.metrics, "tracked": record.tracked}


def metrics_lines(record: RunRecord) -> list[str]:
    """`anna-run metrics RUN`: its metrics (last, min, max, count), then its tracked variables."""
    if not record.metrics and not record.tracked:
        return [f"run {record.id} tracked no metrics or variables"]
    lines = []
    if record.metrics:
        rows = [("METRIC", "LAST", "MIN", "MAX", "COUNT")]
        for name, stat in sorted(record.metrics.items()):
            cells = (_value(stat.get("last")), _value(stat.get("min")), _value(stat.get("max")))
            rows.append((name, *cells, str(stat.get("count", ""))))
        lines += table(rows)
    if record.tracked:
        if lines:
            lines.append("")
        lines += table([("VARIABLE", "VALUE"), *((name, _value(v)) for name, v in sorted(record.tracked.items()))])
    return lines


def metric_last(record: RunRecord, name: str) -> Any:
    """The last value of metric ``name`` of a run (None when it has none)."""
    stat = record.metrics.get(name)
    return stat.get("last") if isinstance(stat, dict) else None


def with_metric_last(data: dict[str, Any], record: RunRecord, metrics: list[str]) -> dict[str, Any]:
    """A record's JSON form for `runs --json --metric`: with the last value of each metric asked for."""
    data["metric_last"] = {name: metric_last(record, name) for name in metrics}
    return data


COMPARED = ("settings", "variables", "tracked", "metrics", "result")


def compare_json(records: list[RunRecord]) -> dict[str, Any]:
    """`anna-run compare --json`: per section, per key, the value of each run (in the order given)
    and whether they differ."""

    def section(values_of: Callable[[RunRecord], dict[str, Any]]) -> dict[str, Any]:
        per_run = [values_of(r) for r in records]
        keys = sorted({key for values in per_run for key in values})
        out = {}
        for key in keys:
            values = [values.get(key) for values in per_run]
            out[key] = {"values": values, "differs": any(v != values[0] for v in values[1:])}
        return out

    def metric_view(record: RunRecord) -> dict[str, Any]:
        return {name: {k: stat.get(k) for k in ("last", "min", "max")} for name, stat in record.metrics.items()}

    return {
        "runs": [{"id": r.id, "job": r.job, "status": r.status, "name": r.name} for r in records],
        "settings": section(lambda r: r.settings),
        "variables": section(lambda r: r.variables),
        "tracked": section(lambda r: r.tracked),
        "metrics": section(metric_view),
        "result": section(lambda r: {"sha256": r.result.sha256 if r.result else None}),
    }


def compare_lines(records: list[RunRecord]) -> list[str]:
    """`anna-run compare`: the sections side by side, one column a run; `*` marks a row that differs."""
    data = compare_json(records)
    rows: list[tuple[str, ...]] = [("", "", *(r.id for r in records))]
    rows.append(("", "job", *(r.job for r in records)))
    rows.append(("", "status", *(r.status for r in records)))
    for name in COMPARED:
        entries = data[name]
        if not entries:
            continue
        rows.append(("", f"[{name}]", *("" for _ in records)))
        for key, entry in entries.items():
            mark = "*" if entry["differs"] else ""
            if name == "metrics":
                cells = tuple(_metric_cell(v) for v in entry["values"])
            elif name == "result":
                cells = tuple((v or "-")[:12] for v in entry["values"])
            else:
                cells = tuple(_value(v) for v in entry["values"])
            rows.append((mark, key, *cells))
    return [*table(rows), "", "* differs"]


def _metric_cell(stat: dict[str, Any] | None) -> str:
    if stat is None:
        return "-"
    if stat.get("min") is None:
        return _value(stat.get("last"))
    return f"{_value(stat['last'])} ({_value(stat['min'])}..{_value(stat['max'])})"
