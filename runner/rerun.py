"""`anna-run rerun RUN`: the same code (from the store, not the working tree), the same payload,
the same image (by id or repo digest) and the same variables, as a new run.

A rerun is a :class:`~.request.RunRequest` made from the record, with the code, payload and
image taken from the store (:class:`~.request.FromStore`): it goes through the same
``prepare`` as a new run, so it refuses what a new run refuses.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

from .errors import ConfigError, NotFound
from .record import RunRecord
from .report import Reporter
from .request import FromStore, RunRequest, prepare
from .store import open_store
from .store.base import Store
from .variables import parse_assignments

PROJECT_FILES = ("askanna.yml", "askanna.yaml")


def rerun(run_ref: str, *, secrets: tuple[str, ...], store: str | None, keep: bool, reporter: Reporter) -> RunRecord:
    """Run ``run_ref`` again exactly; secrets must be given again (they are never stored)."""
    from .engine import connect
    from .run import execute

    st = open_store(store)
    original = st.get(run_ref)
    tmp = Path(tempfile.mkdtemp(prefix="anna-run-rerun-"))
    try:
        request, source = rerun_request(original, st, tmp, secrets=secrets, store=store, keep=keep)
        prepared = prepare(request, reporter, source)
        return execute(prepared, connect(), st, reporter)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def rerun_request(
    original: RunRecord, st: Store, tmp: Path, *, secrets: tuple[str, ...], store: str | None, keep: bool
) -> tuple[RunRequest, FromStore]:
    """The request that repeats ``original``, and where its code, payload and image come from.
    The recorded settings become the request's options, so the one settings rule gives them."""
    from .package import Package

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
    payload_file = None
    if original.payload is not None:
        payload_file = st.payload_path(original.payload.sha256)
        if not payload_file.is_file():
            raise NotFound(f"the payload of run {original.id} is not in the store")
    s = original.settings
    request = RunRequest(
        job=original.job,
        variables=tuple(f"{k}={v}" for k, v in original.variables.items() if k not in original.secret_names),
        secrets=tuple(f"{k}={v}" for k, v in supplied.items()),
        store=store,
        image=original.image.name,  # the image itself is pinned by id or digest (source.image)
        pull="never",
        timeout=f"{s['timeout_s']:.9f}s" if s.get("timeout_s") else None,
        cpus=s.get("cpus"),
        memory=str(s["memory"]) if s.get("memory") else None,
        gpus=str(s["gpus"]) if s.get("gpus") is not None else None,
        network=s.get("network") or "bridge",
        user=s.get("user"),
        input_runs=tuple(i.run for i in original.inputs),
        keep=keep,
        name=original.name,
        description=original.description,
        no_cache=not s.get("cache"),
        trigger="rerun",
    )
    package = Package(
        sha256=original.package.sha256, size=package_path.stat().st_size, files=0, path=package_path, reused=True
    )
    source = FromStore(
        project_file=_extract_project_file(package_path, tmp, original),
        package=package,
        project_id=original.project,
        project_root=original.project_root,
        payload_file=payload_file,
        rerun_of=original.id,
        image=original.image,
    )
    return request, source


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
