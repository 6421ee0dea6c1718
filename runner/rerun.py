"""`anna-run rerun RUN`: the same code (from the store, not the working tree), the same payload,
the same image (by id or repo digest) and the same variables, as a new run."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

from .errors import ConfigError, NotFound
from .progress import Reporter
from .record import ImageInfo, RunRecord
from .run import Pin, Prepared, RunRequest, Settings, execute
from .store import open_store
from .variables import new_suuid, parse_assignments, read_payload, render_command

PROJECT_FILES = ("askanna.yml", "askanna.yaml")


def rerun(run_ref: str, *, secrets: tuple[str, ...], store: str | None, keep: bool, reporter: Reporter) -> RunRecord:
    """Run ``run_ref`` again exactly; secrets must be given again (they are never stored)."""
    st = open_store(store)
    original = st.get(run_ref)
    prepared = prepare_rerun(original, st, secrets=secrets, store=store, keep=keep, reporter=reporter)
    try:
        return execute(prepared, reporter)
    finally:
        prepared.cleanup()


def prepare_rerun(
    original: RunRecord, st, *, secrets: tuple[str, ...], store: str | None, keep: bool, reporter: Reporter
) -> Prepared:
    from .package import Package
    from .project import load_project

    if original.package is None or original.image is None:
        raise ConfigError(f"run {original.id} never started a container: there is nothing to repeat")
    supplied = parse_assignments(secrets, option="--secret")
    missing = [name for name in original.secret_names if name not in supplied]
    if missing:
        raise ConfigError(
            f"run {original.id} used secrets that are never stored: {', '.join(missing)}",
            hint="give them again: " + " ".join(f"--secret {name}=..." for name in missing),
        )
    package_path = st.package_path(original.package.sha256)  # fetched when only a remote store has it
    if not package_path.is_file():
        raise NotFound(f"the code package of run {original.id} ({original.package.sha256[:12]}) is not in the store")
    tmp = Path(tempfile.mkdtemp(prefix="anna-run-rerun-"))
    try:
        project = load_project(_extract_project_file(package_path, tmp, original))
        job = project.job(original.job)
        payload_file = payload = None
        if original.payload is not None:
            payload_file = st.payload_path(original.payload.sha256)
            if not payload_file.is_file():
                raise NotFound(f"the payload of run {original.id} is not in the store")
            payload = read_payload(payload_file)
        user_vars = {
            "project": {},
            "env_file": {},
            "cli": {k: v for k, v in original.variables.items() if k not in original.secret_names},
            "secrets": supplied,
            "payload": dict(payload.variables) if payload else {},
        }
        known = set().union(*user_vars.values()) | _builtin_names()
        commands = [render_command(c, known, where=f"job '{job.name}'")[0] for c in job.commands]
        request = RunRequest(job=job.name, store=store, keep=keep, name=original.name, description=original.description)
        package = Package(
            sha256=original.package.sha256, size=package_path.stat().st_size, files=0, path=package_path, reused=True
        )
        return Prepared(
            request=request,
            project=project,
            job=job,
            project_id=original.project,
            run_id=new_suuid(),
            payload_file=payload_file,
            payload=payload,
            user_vars=user_vars,
            shell_commands=commands,
            settings=_settings(original),
            warnings=[],
            _tmp=tmp,
            pin=Pin(rerun_of=original.id, package=package, image=_image(original), project_root=original.project_root),
        )
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _extract_project_file(package: Path, dest: Path, original: RunRecord) -> Path:
    with tarfile.open(package) as tar:
        for name in PROJECT_FILES:
            try:
                member = tar.getmember(name)
            except KeyError:
                continue
            if not member.isfile():
                continue
            target = dest / name
            src = tar.extractfile(member)
            target.write_bytes(src.read() if src else b"")
            return target
    raise NotFound(f"the code package of run {original.id} holds no askanna.yml")


def _settings(original: RunRecord) -> Settings:
    s = original.settings
    return Settings(
        image=original.image.name if original.image else "",
        pull="never",
        timeout=s.get("timeout_s"),
        cpus=s.get("cpus"),
        memory=s.get("memory"),
        gpus=s.get("gpus"),
        network=s.get("network") or "bridge",
        timezone=s.get("timezone") or "UTC",
        cache=tuple(s.get("cache") or ()),
    )


def _image(original: RunRecord) -> ImageInfo:
    assert original.image is not None
    return original.image


def _builtin_names() -> set[str]:
    from .variables import builtin_variables

    return set(
        builtin_variables(token="", run_id="", job="", project_id="", package_id="", payload_id="x", timezone="UTC")
    )
