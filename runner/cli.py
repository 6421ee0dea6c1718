"""The command line: parses, calls, prints. Exit codes are decided here, and only here."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from . import views
from .errors import (
    AnnaRunError,
    BrokerError,
    Cancelled,
    ConfigError,
    EngineError,
    JobTimeout,
    NotFound,
    StoreError,
)

if TYPE_CHECKING:
    from .record import RunRecord

app = typer.Typer(
    name="anna-run",
    help="Run the jobs of an askanna.yml project in a container sandbox, reproducibly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
F = TypeVar("F", bound=Callable[..., Any])


ProjectOpt = Annotated[Path | None, typer.Option("--project", help="Project folder (default: search upward).")]
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="Run store: a folder (default ~/.local/share/anna-run) or s3://bucket/prefix."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
RunArg = Annotated[str | None, typer.Argument(help="Run id or unique prefix (default: the latest run).")]

# The run options `run` and `submit` share (`rerun` takes --keep and --quiet too).
PayloadOpt = Annotated[str | None, typer.Option("--payload", help="JSON payload file, - for stdin.")]
VarOpt = Annotated[list[str] | None, typer.Option("--var", help="Variable K=V (repeatable).")]
SecretOpt = Annotated[list[str] | None, typer.Option("--secret", help="Secret K=V, masked everywhere.")]
EnvFileOpt = Annotated[list[Path] | None, typer.Option("--env-file", help="File of K=V lines.")]
ImageOpt = Annotated[str | None, typer.Option("--image", help="Image to use instead of the job's.")]
PullOpt = Annotated[str | None, typer.Option("--pull", help="if-not-present, always or never.")]
TimeoutOpt = Annotated[str | None, typer.Option("--timeout", help="Wall-clock limit, e.g. 30m.")]
CpusOpt = Annotated[float | None, typer.Option("--cpus", help="CPU limit.")]
MemoryOpt = Annotated[str | None, typer.Option("--memory", help="Memory limit, e.g. 4g.")]
GpusOpt = Annotated[str | None, typer.Option("--gpus", help="GPUs: a count or 'all'.")]
NetworkOpt = Annotated[str | None, typer.Option("--network", help="bridge or none.")]
InputRunOpt = Annotated[
    list[str] | None, typer.Option("--input-run", help="An earlier run whose outputs the job reads (repeatable).")
]
UserOpt = Annotated[str | None, typer.Option("--user", help="Run as uid[:gid] or name[:group] (default: the image's).")]
KeepOpt = Annotated[bool, typer.Option("--keep", help="Keep the container after the run.")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="No dependency cache volume.")]
NameOpt = Annotated[str | None, typer.Option("--name", help="A name for the run.")]
DescriptionOpt = Annotated[str | None, typer.Option("--description", help="A description.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only the job's output.")]
RecordJsonOpt = Annotated[bool, typer.Option("--json", help="Print the final record as JSON.")]


# -- exit codes ------------------------------------------------------------------------------------
# Every exit code anna-run ends with, and what leads to it (README "Exit codes"). Nothing else
# decides one: errors and records say what went wrong, this table says which code that is.
ENGINE_FAILED = "failed: engine"
ALREADY_ENDED = "cancel: already ended"
EXIT_CODES: dict[type[BaseException] | str, int | None] = {
    # A run's final record (run, rerun, _detached, submit --wait), by its status:
    "succeeded": 0,
    # The job's own exit code (its first failing command), 1 when it has none (a missing result,
    # a refused output). A record of another status (not final) counts as failed.
    "failed": None,
    # Failed with a reason `engine: ...` (run and the worker record it so): the engine failed or
    # went away mid-run, a runner failure and not the job's.
    ENGINE_FAILED: 125,
    "timeout": 124,
    "cancelled": 130,
    # `cancel` of a run that had ended before it could be cancelled.
    ALREADY_ENDED: 1,
    # An error, by the first class of its MRO found here:
    ConfigError: 2,  # bad askanna.yml, job, payload, variable or option: nothing was created
    NotFound: 1,  # no such run, result or artifact
    JobTimeout: 124,
    EngineError: 125,  # no engine, image missing with --pull never, engine lost
    StoreError: 125,
    BrokerError: 125,
    Cancelled: 130,
    AnnaRunError: 1,  # any other error of ours
    KeyboardInterrupt: 130,  # Ctrl-C, or SIGTERM (turned into one)
    BrokenPipeError: 0,  # the reader of our output went away (`| head`): not a failure
    Exception: 125,  # a bug of ours: "internal error", a runner failure
}


def exit_code_for(outcome: BaseException | RunRecord | str) -> int:
    """The exit code of an error, of a run's final record, or of an outcome named in ``EXIT_CODES``."""
    job_code: int | None = None
    if isinstance(outcome, BaseException):
        key: type[BaseException] | str = next(cls for cls in type(outcome).__mro__ if cls in EXIT_CODES)
    elif isinstance(outcome, str):
        key = outcome
    else:
        key = outcome.status if outcome.status in EXIT_CODES else "failed"
        if key == "failed" and (outcome.reason or "").startswith("engine:"):
            key = ENGINE_FAILED
        job_code = outcome.exit_code
    code = EXIT_CODES[key]
    if code is None:  # the job's own code
        return job_code or 1
    return code


# Modules of the `hosts` extra: failing to import one is a missing extra, not a bug of ours.
_HOSTS_EXTRA = frozenset({"celery", "redis", "kombu", "billiard", "vine", "amqp"})


def handled(func: F) -> F:
    """Map anna-run's errors to one message and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AnnaRunError as exc:
            _fail(exc)
        except KeyboardInterrupt as exc:
            _say("cancelled")
            raise typer.Exit(exit_code_for(exc)) from None
        except BrokenPipeError as exc:
            raise typer.Exit(exit_code_for(exc)) from None
        except typer.Exit:
            raise
        except ImportError as exc:
            if (exc.name or "").partition(".")[0] not in _HOSTS_EXTRA:
                _internal_error(exc)
            from .hosts.celery_app import missing_hosts_extra

            _fail(missing_hosts_extra(exc))
        except Exception as exc:  # a bug of ours: still one message, and the traceback on request
            _internal_error(exc)

    return wrapper  # type: ignore[return-value]


def _fail(exc: AnnaRunError) -> NoReturn:
    _say(f"error: {exc.message}")
    if exc.hint:
        _say(f"hint: {exc.hint}")
    raise typer.Exit(exit_code_for(exc)) from None


def _internal_error(exc: Exception) -> NoReturn:
    if os.environ.get("ANNA_RUN_DEBUG"):
        raise exc
    _say(f"internal error: {type(exc).__name__}: {exc} (set ANNA_RUN_DEBUG=1 for the traceback)")
    raise typer.Exit(exit_code_for(exc)) from None


def _say(text: str) -> None:
    sys.stderr.write(f"anna-run: {text}\n")
    sys.stderr.flush()


def _reporter(json_lines: bool = False):
    from .progress import JsonReporter, PlainReporter, RichReporter

    if json_lines or os.environ.get("ANNA_RUN_PROGRESS") == "json":
        return JsonReporter()
    if sys.stderr.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb":
        return RichReporter()
    return PlainReporter()


def _print_json(data: Any) -> None:
    sys.stdout.write(views.json_text(data))


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        typer.echo(line)


# -- running -------------------------------------------------------------------------------------
@app.command("run", context_settings={"allow_interspersed_args": True})
@handled
def run_cmd(
    job: Annotated[str, typer.Argument(help="The job to run.")],
    payload: PayloadOpt = None,
    var: VarOpt = None,
    secret: SecretOpt = None,
    env_file: EnvFileOpt = None,
    project: ProjectOpt = None,
    store: StoreOpt = None,
    image: ImageOpt = None,
    pull: PullOpt = None,
    timeout: TimeoutOpt = None,
    cpus: CpusOpt = None,
    memory: MemoryOpt = None,
    gpus: GpusOpt = None,
    network: NetworkOpt = None,
    user: UserOpt = None,
    input_run: InputRunOpt = None,
    keep: KeepOpt = False,
    no_cache: NoCacheOpt = False,
    name: NameOpt = None,
    description: DescriptionOpt = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Validate, print the run id, run in the background.")
    ] = False,
    json_out: RecordJsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run JOB (also: `anna-run JOB`)."""
    from .run import run_job

    request = _run_request(locals())
    if detach:
        _detach(request)
        return
    import signal

    # SIGTERM (a service manager, `kill`) stops the run like Ctrl-C: recorded, container removed.
    signal.signal(signal.SIGTERM, _interrupt)
    reporter = _reporter()
    if quiet:
        reporter.quiet = True
    record = run_job(request, reporter)
    if json_out:
        _print_json(record.to_dict())
    _say(views.summary(record))
    raise typer.Exit(exit_code_for(record))


@app.command("rerun")
@handled
def rerun_cmd(
    run: Annotated[str, typer.Argument(help="The run to repeat (id or unique prefix).")],
    secret: Annotated[list[str] | None, typer.Option("--secret", help="The run's secrets, K=V, again.")] = None,
    store: StoreOpt = None,
    keep: KeepOpt = False,
    json_out: RecordJsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Repeat a run exactly: same code package, payload, image and variables."""
    import signal

    from .rerun import rerun

    signal.signal(signal.SIGTERM, _interrupt)
    reporter = _reporter()
    if quiet:
        reporter.quiet = True
    record = rerun(run, secrets=tuple(secret or ()), store=store, keep=keep, reporter=reporter)
    if json_out:
        _print_json(record.to_dict())
    _say(views.summary(record))
    raise typer.Exit(exit_code_for(record))


def _detach(request) -> None:
    """Validate here (a config error is still exit 2), then hand the run to a process of its own
    session that outlives this one; its own output goes to runner.log beside the run."""
    import subprocess
    from dataclasses import replace

    from .progress import PlainReporter
    from .request import prepare, with_run_id
    from .run import queued_record
    from .store import open_store

    request = with_run_id(request)
    prepared = prepare(request, PlainReporter())
    payload = request.payload
    if payload == "-" and prepared.payload_file is not None:
        payload = str(prepared.payload_file)  # the child removes this copy of stdin when done
    store = open_store(request.store)
    files = store.run_files(request.run_id)
    store.save_record(queued_record(prepared))
    fields = {
        "request": replace(request, payload=payload).to_json(),
        "temp_payload": str(prepared.payload_file) if request.payload == "-" else None,
    }
    with files.open_runner_log() as log:
        # The request (secrets included) goes through a pipe, not the environment or argv,
        # where other processes could read it.
        child = subprocess.Popen(
            [sys.executable, "-m", "anna_run.cli", "_detached"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=os.getcwd(),
        )
        child.stdin.write(json.dumps(fields).encode())
        child.stdin.close()
    typer.echo(request.run_id)


@app.command("_detached", hidden=True)
@handled
def detached_cmd() -> None:
    """The background half of `run --detach`."""
    from .progress import PlainReporter
    from .request import RunRequest
    from .run import run_job

    fields = json.loads(sys.stdin.read())
    temp_payload = fields.get("temp_payload")
    try:
        record = run_job(RunRequest.from_json(fields["request"]), PlainReporter())
    finally:
        if temp_payload:
            shutil.rmtree(Path(temp_payload).parent, ignore_errors=True)
    raise typer.Exit(exit_code_for(record))


def _run_request(options: dict[str, Any]):
    """The RunRequest of `run` and `submit`, from their (identical) run options."""
    from .request import RunRequest

    return RunRequest(
        job=options["job"],
        project=options["project"],
        payload=options["payload"],
        variables=tuple(options["var"] or ()),
        secrets=tuple(options["secret"] or ()),
        env_files=tuple(options["env_file"] or ()),
        store=options["store"],
        image=options["image"],
        pull=options["pull"],
        timeout=options["timeout"],
        cpus=options["cpus"],
        memory=options["memory"],
        gpus=options["gpus"],
        network=options["network"],
        user=options["user"],
        input_runs=tuple(options["input_run"] or ()),
        keep=options["keep"],
        no_cache=options["no_cache"],
        name=options["name"],
        description=options["description"],
        token=os.environ.get("AA_TOKEN", ""),
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# -- the project file ----------------------------------------------------------------------------
@app.command("jobs")
@handled
def jobs_cmd(project: ProjectOpt = None, json_out: JsonOpt = False) -> None:
    """List the project's jobs."""
    proj = _project(project)
    if json_out:
        _print_json(views.jobs_json(proj))
        return
    _echo_lines(views.job_lines(proj))


@app.command("validate")
@handled
def validate_cmd(
    project: ProjectOpt = None,
    json_out: JsonOpt = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 2 when there is any warning.")] = False,
) -> None:
    """Check askanna.yml; exit 2 with one clear message when it is wrong (with --strict: or warned about)."""
    proj = _project(project)
    if json_out:
        _print_json(views.validation_json(proj))
    else:
        for warning in proj.warnings:
            _say(f"warning: {warning}")
        typer.echo(views.validation_line(proj))
    from .notify import smtp_note

    if (note := smtp_note(proj)) is not None:
        _say(note)  # a note, not a warning: --strict does not fail on it
    if strict and proj.warnings:
        count = len(proj.warnings)
        raise ConfigError(f"--strict: {count} warning{'s' if count != 1 else ''} in {proj.file}")


@app.command("schema")
@handled
def schema_cmd() -> None:
    """Print a JSON Schema of askanna.yml (for editors)."""
    from .project import json_schema

    _print_json(json_schema())


def _project(project: Path | None):
    from .project import find_project_file, load_project

    return load_project(find_project_file(project))


# -- reading runs --------------------------------------------------------------------------------
@app.command("runs")
@handled
def runs_cmd(
    all_projects: Annotated[bool, typer.Option("--all", help="Runs of every project.")] = False,
    status: Annotated[str | None, typer.Option("--status", help="Only runs with this status.")] = None,
    job: Annotated[str | None, typer.Option("--job", help="Only runs of this job.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many.")] = None,
    reindex: Annotated[bool, typer.Option("--reindex", help="Rebuild the index from the records.")] = False,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="Add a column of this metric's last value (repeatable).")
    ] = None,
    project: ProjectOpt = None,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List runs, newest first (this project's unless --all)."""
    st = _store(store)
    if reindex:
        _say(f"reindexed {st.reindex()} run(s)")
    project_id = None if all_projects else _project_id_or_none(project)
    records = _notice_lost(st, st.list_runs(project=project_id, job=job, status=status, limit=limit))
    metrics = metric or []
    if json_out:
        # With --metric each record has "metric_last": {name: last value} of the metrics asked for.
        _print_json([views.with_metric_last(r.to_dict(), r, metrics) if metrics else r.to_dict() for r in records])
        return
    _echo_lines(views.runs_table(records, metrics, st.stale_ids))
    waiting = sum(r.upload == "pending" for r in records)
    if waiting:
        _say(f"{waiting} run(s) not uploaded to {st.location} yet: run `anna-run sync`")


def _store(location: str | None):
    from .progress import PlainReporter
    from .store import open_store

    # Warnings only (e.g. an S3 server that does not answer, and what is shown instead).
    return open_store(location, reporter=PlainReporter(quiet=True))


def _project_id_or_none(project: Path | None) -> str | None:
    from .project import find_project_file, load_project
    from .request import project_id_of

    try:
        return project_id_of(load_project(find_project_file(project)))
    except ConfigError:
        if project is not None:
            raise
        return None


def _notice_lost(st, records: list) -> list:
    """A run still `running` whose anna-run died is recorded failed (runner lost) when seen."""
    if not any(r.status == "running" for r in records):
        return records
    from .orphans import mark_lost

    return [mark_lost(st, r) if r.status == "running" else r for r in records]


def _record(store: str | None, run: str | None, project: Path | None = None):
    st = _store(store)
    if run:
        return st, _notice_lost(st, [st.get(run)])[0]
    latest = st.list_runs(project=_project_id_or_none(project), limit=1)
    if not latest:
        raise NotFound("no runs yet", hint="run a job first: anna-run JOB")
    return st, _notice_lost(st, latest)[0]


@app.command("show")
@handled
def show_cmd(run: RunArg = None, store: StoreOpt = None, project: ProjectOpt = None, json_out: JsonOpt = False) -> None:
    """Show a run's record."""
    st, record = _record(store, run, project)
    if json_out:
        _print_json(record.to_dict())
        return
    _echo_lines(views.record_lines(record))
    if record.id in st.stale_ids:
        _say(f"run {record.id} is shown as this machine last saw it")


@app.command("logs")
@handled
def logs_cmd(
    run: RunArg = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow while the run goes on.")] = False,
    stream: Annotated[str, typer.Option("--stream", help="log (both), stdout or stderr.")] = "log",
    store: StoreOpt = None,
    project: ProjectOpt = None,
) -> None:
    """Print a run's stored log (masked)."""
    if stream not in ("log", "stdout", "stderr"):
        raise ConfigError("--stream must be log, stdout or stderr")
    st, record = _record(store, run, project)
    out = sys.stdout.buffer
    if not follow:
        for chunk in st.iter_log(record.id, stream):
            out.write(chunk)
        out.flush()
        return
    if record.queue is not None and not record.is_final:
        _follow_remote(st, record, stream, out)
        return
    _follow(st, record, stream, out)


def _follow_remote(st, record, stream: str, out) -> None:
    """A submitted run: its live log from the runner host (Redis), then the stored log."""
    from .hosts.submit import follow_remote

    wanted = ("stdout", "stderr", "stored-log") if stream == "log" else (stream, f"stored-{stream}")

    def emit(kind: str, text: str) -> None:
        if kind in wanted and text:
            out.write(text.encode("utf-8", "replace"))
            out.flush()
        elif kind == "attempt" and text != "attempt 1" and not text.startswith("attempt 1 "):
            _say(f"{text}: an earlier host was lost, the log starts over")

    follow_remote(st, record, emit)


def _follow(st, record, stream: str, out) -> None:
    offset = 0
    while True:
        # Through the store: the log of an S3 run moves from the spool to S3 when the run ends.
        for chunk in st.iter_log(record.id, stream, offset):
            out.write(chunk)
            offset += len(chunk)
        out.flush()
        if record.is_final:
            return
        time.sleep(0.3)
        record = st.get(record.id)


@app.command("result")
@handled
def result_cmd(
    run: RunArg = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")] = None,
    store: StoreOpt = None,
    project: ProjectOpt = None,
) -> None:
    """Print (or save) a run's result file."""
    st, record = _record(store, run, project)
    if record.result is None:
        raise NotFound(f"run {record.id} has no result")
    chunks = st.iter_file(record.id, f"result/{record.result.path}")
    if output is not None:
        try:
            with open(output, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
        except OSError as exc:
            raise ConfigError(f"--output {output}: {exc.strerror or exc}") from None
        _say(f"wrote {output} ({record.result.size} bytes)")
        return
    for chunk in chunks:
        sys.stdout.buffer.write(chunk)
    sys.stdout.flush()


@app.command("artifact")
@handled
def artifact_cmd(
    run: RunArg = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder to copy into.")] = None,
    store: StoreOpt = None,
    project: ProjectOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List a run's artifacts, or copy them into a folder with -o."""
    st, record = _record(store, run, project)
    if output is None:
        if json_out:
            _print_json(views.artifacts_json(record))
        else:
            _echo_lines(views.artifact_lines(record))
        return
    count = st.fetch_artifacts(record, output)
    _say(f"copied {count} file(s) into {output}")


# -- housekeeping --------------------------------------------------------------------------------
@app.command("gc")
@handled
def gc_cmd(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go.")] = False,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
    blobs: Annotated[
        bool, typer.Option("--blobs", help="Also remove the packages and payloads that no run in the store names.")
    ] = False,
    keep_days: Annotated[
        float, typer.Option("--keep-days", help="With --blobs: keep those younger than N days anyway (default 1).")
    ] = 1.0,
) -> None:
    """Remove containers and volumes a killed anna-run left behind (only ours, only dead runs);
    with --blobs, the store's packages and payloads no run names, and this host's worker cache past
    its bound. Runs themselves are never deleted."""
    from .engine import connect
    from .orphans import collect_garbage

    if not 0 <= keep_days < 1e6:
        raise ConfigError(f"--keep-days {keep_days:g}: give a number of days, 0 or more")
    st = _store(store)
    removed = collect_garbage(connect(), st, dry_run=dry_run)
    if blobs:
        from .hosts.pkgcache import trim_default_cache

        removed += st.collect_blobs(keep_days * 86400, dry_run=dry_run)
        removed += trim_default_cache(dry_run=dry_run)
    _removed(removed, dry_run, json_out, views.garbage_item, "nothing to remove")


@app.command("sync")
@handled
def sync_cmd(store: StoreOpt = None, json_out: JsonOpt = False) -> None:
    """Complete the uploads that could not finish (S3 store); idempotent, safe while runs go on."""
    from .store import open_store

    st = open_store(store, reporter=_reporter())
    _notice_lost(st, st.pending())  # a spooled run whose anna-run died: recorded failed, then uploaded
    report = st.sync()
    if json_out:
        _print_json(views.sync_json(report))
    else:
        for run_id in report.uploaded:
            typer.echo(f"uploaded {run_id}")
        for run_id, why in report.pending:
            _say(f"still pending {run_id}: {why}")
        if report.running:
            typer.echo(f"{len(report.running)} run(s) going on: each uploads itself when it ends")
        if not report.uploaded and not report.pending:
            typer.echo("nothing to upload")
    if report.pending:
        raise StoreError(
            f"{len(report.pending)} run(s) not uploaded to {st.location} yet",
            hint="nothing is lost: run `anna-run sync` again once the store answers",
        )


def _removed(items: list[dict], dry_run: bool, json_out: bool, describe: Callable[[dict], str], none: str) -> None:
    """What a clean-up removed (or, with --dry-run, would remove)."""
    if json_out:
        _print_json(items)
        return
    _echo_lines(views.removed_lines(items, dry_run, describe, none))


@app.command("images")
@handled
def images_cmd(
    action: Annotated[str | None, typer.Argument(help="`prune`: remove anna-run's builds no container uses.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With prune: only say what would go.")] = False,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The images anna-run used or built: size, last used, runs; `images prune` removes unused builds."""
    from .engine import connect
    from .images import list_images, prune_builds

    api = connect()
    if action not in (None, "prune"):
        raise ConfigError(f"images {action!r}: the only action is `prune`")
    if action == "prune":
        removed = prune_builds(api, dry_run=dry_run)
        _removed(removed, dry_run, json_out, views.build_item, "no unused builds")
        return
    images = list_images(api, _store(store))
    if json_out:
        _print_json(images)
        return
    _echo_lines(views.images_table(images))


# -- runner hosts (Celery; see README "Runner hosts") -------------------------------------------
@app.command("submit", context_settings={"allow_interspersed_args": True})
@handled
def submit_cmd(
    job: Annotated[str, typer.Argument(help="The job to run on a runner host.")],
    queue: Annotated[str, typer.Option("--queue", help="The runner hosts' queue.")] = "default",
    wait: Annotated[bool, typer.Option("--wait", help="Follow the log; exit with the job's code.")] = False,
    payload: PayloadOpt = None,
    var: VarOpt = None,
    secret: SecretOpt = None,
    env_file: EnvFileOpt = None,
    project: ProjectOpt = None,
    store: StoreOpt = None,
    image: ImageOpt = None,
    pull: PullOpt = None,
    timeout: TimeoutOpt = None,
    cpus: CpusOpt = None,
    memory: MemoryOpt = None,
    gpus: GpusOpt = None,
    network: NetworkOpt = None,
    user: UserOpt = None,
    input_run: InputRunOpt = None,
    keep: KeepOpt = False,
    no_cache: NoCacheOpt = False,
    name: NameOpt = None,
    description: DescriptionOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="With --wait: print the final record.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Queue JOB for the runner hosts (broker: ANNA_RUN_BROKER); prints the run id."""
    from .hosts.submit import submit
    from .hosts.submit import wait as follow_run

    request = _run_request(locals())
    reporter = _reporter()
    if quiet:
        reporter.quiet = True
    record = submit(request, queue, reporter)
    typer.echo(record.id)
    sys.stdout.flush()
    if not wait:
        return
    try:
        final = follow_run(_store(store), record, sys.stdout, sys.stderr)
    except KeyboardInterrupt as exc:
        _say(f"stopped following; run {record.id} goes on (`anna-run logs -f {record.id}`, `anna-run cancel`)")
        raise typer.Exit(exit_code_for(exc)) from None
    if json_out:
        _print_json(final.to_dict())
    _say(views.summary(final))
    raise typer.Exit(exit_code_for(final))


@app.command("worker")
@handled
def worker_cmd(
    queue: Annotated[str, typer.Option("--queue", "-Q", help="Queues to take runs from: Q or Q1,Q2.")] = "default",
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Runs at once on this host.")] = 1,
    store: StoreOpt = None,
) -> None:
    """Be a runner host: a Celery worker running submitted jobs with this host's engine."""
    from .hosts.worker import serve

    queues = tuple(dict.fromkeys(q.strip() for q in queue.split(",") if q.strip()))
    if not queues:
        raise ConfigError("--queue: name at least one queue")
    if concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    serve(queues, concurrency, store)


@app.command("hosts")
@handled
def hosts_cmd(
    action: Annotated[str | None, typer.Argument(help="`keygen`: print a new ANNA_RUN_SECRET_KEY.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """The live runner hosts (workers): their queues and the runs they run; `hosts keygen` prints a
    new key for ANNA_RUN_SECRET_KEY (the key that seals submitted runs' secrets)."""
    if action is not None:
        if action != "keygen":
            raise ConfigError(f"hosts {action!r}: the only action is `keygen`")
        from .hosts.sealed import new_key

        key = new_key()
        if json_out:
            _print_json({"key": key})
        else:
            typer.echo(key)
        return
    from .hosts.control import list_hosts

    workers = list_hosts()
    if json_out:
        _print_json(workers)
        return
    _echo_lines(views.hosts_table(workers))
    if not workers:
        _say("no live runner hosts")


@app.command("cancel")
@handled
def cancel_cmd(
    run: Annotated[str, typer.Argument(help="The run to cancel (id or unique prefix).")],
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Do not wait until it has stopped.")] = False,
    store: StoreOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Cancel a run: a queued one leaves the queue, a running one is stopped (container removed)."""
    from .hosts.control import cancel
    from .run import grace_s

    st = _store(store)
    record = cancel(st, st.get(run), wait=None if no_wait else grace_s() + 60)
    if json_out:
        _print_json(record.to_dict())
    if record.status == "cancelled":
        _say(f"run {record.id} cancelled")
    elif not record.is_final:
        _say(f"run {record.id}: cancel requested; {record.host or 'its host'} stops it")
    else:
        _say(f"run {record.id} ended {record.status} before it could be cancelled")
        raise typer.Exit(exit_code_for(ALREADY_ENDED))


def command_names() -> set[str]:
    return {command.name for command in app.registered_commands if command.name}


def shorthand(argv: list[str]) -> list[str]:
    """`anna-run JOB ...` means `anna-run run JOB ...` unless JOB names a command."""
    for i, arg in enumerate(argv):
        if arg.startswith("-"):
            if arg in ("--help", "--install-completion", "--show-completion"):
                return argv
            continue
        if arg not in command_names():
            return [*argv[:i], "run", *argv[i:]]
        return argv
    return argv


# -- tracking (SPEC §7) ----------------------------------------------------------------------------
@app.command("metrics")
@handled
def metrics_cmd(
    run: RunArg = None, store: StoreOpt = None, project: ProjectOpt = None, json_out: JsonOpt = False
) -> None:
    """Show a run's tracked metrics (last, min, max, count) and variables."""
    _, record = _record(store, run, project)
    if json_out:
        _print_json(views.metrics_json(record))
        return
    _echo_lines(views.metrics_lines(record))


@app.command("compare")
@handled
def compare_cmd(
    runs: Annotated[list[str], typer.Argument(help="Two or more run ids (or unique prefixes).")],
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare runs side by side: settings, variables, tracked variables, metrics, result."""
    if len(runs) < 2:
        raise ConfigError("compare needs two or more runs", hint="anna-run compare RUN RUN...")
    st = _store(store)
    records = [st.get(run) for run in runs]
    if json_out:
        _print_json(views.compare_json(records))
        return
    _echo_lines(views.compare_lines(records))


def main() -> None:
    try:
        app(args=shorthand(sys.argv[1:]), prog_name="anna-run")
    except SystemExit as exc:
        if exc.code == EXIT_CODES["cancelled"]:
            _exit_cancelled()
        raise
    except KeyboardInterrupt:
        # A Ctrl-C that lands outside a command's own handling (while click sets up or tears
        # down its context) is still exit 130, never a death by SIGINT.
        _exit_cancelled()
    finally:
        # Everything is written and closed by now. Frozen objects are left out of the garbage
        # collector's passes at interpreter exit, which otherwise walk every object the imports
        # made: ~25 ms of a trivial run (bench/RESULTS.md).
        import gc

        gc.freeze()


def _exit_cancelled() -> NoReturn:
    """Exit 130 now. A cancelled command has cleaned up already (its handlers ran on the way
    here); the interpreter's own shutdown is skipped because a Ctrl-C that lands in it, or the
    interrupt it remembers, ends the process by SIGINT instead (FA-10 saw "error: cancelled",
    then -2, about one time in ten)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(EXIT_CODES["cancelled"])


# -- schedules (SPEC §9) ---------------------------------------------------------------------------
ScheduleAction = Annotated[
    str | None, typer.Argument(help="enable or disable; none: list the registered schedules.", show_default=False)
]
ScheduleJobs = Annotated[list[str] | None, typer.Argument(help="Jobs (default: every job with a schedule).")]


@app.command("schedules")
@handled
def schedules_cmd(
    action: ScheduleAction = None,
    jobs: ScheduleJobs = None,
    project: ProjectOpt = None,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List schedules; `schedules enable [JOB...]` registers a project's, `disable` removes them."""
    from . import schedule

    st = _store(store)
    names = tuple(jobs or ())
    if action is None:
        entries = [state.to_dict() for state in schedule.states(st)]
        if json_out:
            _print_json(entries)
        else:
            _echo_lines(views.schedules_table(entries))
        return
    if action == "enable":
        for reg in schedule.enable(project, names, st):
            _say(f"enabled {reg.job}: {reg.cron} ({reg.timezone})")
    elif action == "disable":
        removed = schedule.disable(project, names, st)
        _say(f"disabled {len(removed)} schedule(s)")
    else:
        raise ConfigError(
            f"unknown schedules action {action!r}", hint="use `schedules`, `schedules enable` or `schedules disable`"
        )


def _stop_on_signals():
    """An event set by SIGTERM or Ctrl-C: a service's cue to stop cleanly."""
    import signal
    import threading

    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return stop


@app.command("scheduler")
@handled
def scheduler_cmd(store: StoreOpt = None) -> None:
    """Start the store's scheduled runs on this machine when due (a foreground service)."""
    from . import schedule

    st = _store(store)
    # SIGTERM (systemd) and Ctrl-C: no new fire; the runs going on are stopped and recorded.
    schedule.serve(st, _stop_on_signals(), _say)
    _say("scheduler stopped")


@app.command("beat")
@handled
def beat_cmd(
    queue: Annotated[str, typer.Option("--queue", help="The runner hosts' queue to put the runs on.")] = "default",
    store: StoreOpt = None,
) -> None:
    """Queue the store's scheduled runs on the runner hosts when due (a foreground service)."""
    from . import schedule
    from .hosts.celery_app import host_settings
    from .hosts.submit import check_queue
    from .progress import PlainReporter

    host_settings()  # no broker named: exit 2 before anything
    check_queue(queue)
    st = _store(store)
    # SIGTERM (systemd) and Ctrl-C: no new fire; what is queued stays queued for the hosts.
    schedule.beat(st, _stop_on_signals(), _say, queue, PlainReporter(quiet=True))
    _say("beat stopped")


@app.command("_scheduled-run", hidden=True)
@handled
def scheduled_run_cmd(entry: str, run_id: str, store: StoreOpt = None) -> None:
    """One fire of a registered schedule, started by `anna-run scheduler`."""
    import signal

    from .progress import PlainReporter
    from .schedule import run_scheduled

    signal.signal(signal.SIGTERM, _interrupt)
    record = run_scheduled(_store(store), entry, run_id, PlainReporter())
    _say(views.summary(record))
    raise typer.Exit(exit_code_for(record))


if __name__ == "__main__":
    main()
