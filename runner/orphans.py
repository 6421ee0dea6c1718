"""Runs whose anna-run process died: find them by our labels, record them, remove their leftovers."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import TYPE_CHECKING, Any

from .errors import AnnaRunError
from .record import RunRecord, now_iso
from .sandbox import LABEL

if TYPE_CHECKING:
    import docker

    from .store.base import Store


def runner_identity() -> str:
    """host:pid:start — enough to tell later whether the process that owns a run still lives."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{process_start(pid)}"


def process_start(pid: int) -> str:
    """The start time of a process in clock ticks since boot: with the pid, it names the process
    for sure (a recycled pid has another start time)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return "?"


def runner_alive(runner: str | None) -> bool:
    """Whether the anna-run process named ``host:pid:start`` still runs. A run owned by another
    host is taken as alive: only that host can tell."""
    if not runner:
        return False
    host, _, rest = runner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname():
        return True
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    return os.path.exists(f"/proc/{pid}") and process_start(pid) == start


def mark_lost(store: Store, record: RunRecord) -> RunRecord:
    """A run left `running` by a dead anna-run: recorded failed, reason runner lost. A submitted
    run (``queue`` set) is not: its lease decides, and another runner host takes it over."""
    if record.status != "running" or record.queue is not None or runner_alive(record.runner):
        return record
    lost = record.evolve(status="failed", reason="runner lost", finished_at=now_iso(), runner=None)
    store.save_record(lost)
    return lost


def collect_garbage(api: docker.APIClient, store: Store, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Remove our containers and volumes whose owning anna-run is gone; never anything unlabelled."""
    removed: list[dict[str, Any]] = []
    for container in api.containers(all=True, filters={"label": f"{LABEL}.run"}):
        labels = container.get("Labels") or {}
        if labels.get(f"{LABEL}.keep") == "1" or runner_alive(labels.get(f"{LABEL}.runner")):
            continue
        run_id = labels.get(f"{LABEL}.run", "")
        name = (container.get("Names") or [container["Id"][:12]])[0].lstrip("/")
        removed.append({"kind": "container", "name": name, "run": run_id})
        if not dry_run:
            with contextlib.suppress(Exception):
                api.remove_container(container["Id"], v=True, force=True)
        _mark_run_lost(store, run_id, dry_run)
    for volume in (api.volumes(filters={"label": f"{LABEL}.run"}) or {}).get("Volumes") or []:
        labels = volume.get("Labels") or {}
        if labels.get(f"{LABEL}.keep") == "1" or runner_alive(labels.get(f"{LABEL}.runner")):
            continue
        removed.append({"kind": "volume", "name": volume["Name"], "run": labels.get(f"{LABEL}.run", "")})
        if not dry_run:
            with contextlib.suppress(Exception):
                api.remove_volume(volume["Name"], force=True)
    return removed


def _mark_run_lost(store: Store, run_id: str, dry_run: bool) -> None:
    if dry_run or not run_id:
        return
    with contextlib.suppress(AnnaRunError):
        mark_lost(store, store.get(run_id))
