"""Where the environment lacks a part anna-run needs: the runner-host commands without the `hosts`
extra say what to install (exit 2, one message, no traceback)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from anna_run.ids import new_suuid
from anna_run.record import RunRecord, now_iso
from anna_run.store.local import LocalStore

INSTALL = "pip install 'anna-run[hosts]'"


@pytest.fixture
def without_hosts_extra(tmp_path: Path) -> dict[str, str]:
    """Environment variables under which `import celery` and `import redis` fail, as they do
    where the extra is not installed (a shim first on PYTHONPATH)."""
    shim = tmp_path / "shim"
    for name in ("celery", "redis"):
        (shim / name).mkdir(parents=True)
        (shim / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n"
        )
    path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def _says_install(res) -> None:
    assert res.returncode == 2, res.output
    assert INSTALL in res.stderr
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("with_broker", [True, False])
def test_submit_without_the_extra(env, without_hosts_extra, with_broker):
    env.project("a: {job: [echo a]}\n")
    broker = {"ANNA_RUN_BROKER": "redis://127.0.0.1:1/0"} if with_broker else {}
    _says_install(env.run("submit", "a", **without_hosts_extra, **broker))
    assert not (env.store / "runs").exists() or not any((env.store / "runs").iterdir())  # nothing queued


@pytest.mark.parametrize("command", [("worker",), ("hosts",), ("hosts", "--json")])
def test_host_commands_without_the_extra(env, without_hosts_extra, command):
    env.project("a: {job: [echo a]}\n")
    _says_install(env.run(*command, ANNA_RUN_BROKER="redis://127.0.0.1:1/0", **without_hosts_extra))


def test_cancel_of_a_queued_run_without_the_extra(env, without_hosts_extra):
    env.project("a: {job: [echo a]}\n")
    run_id = new_suuid()
    record = RunRecord(id=run_id, job="a", project="p", status="queued", queue="default", created_at=now_iso())
    LocalStore(env.store).save_record(record)
    _says_install(env.run("cancel", run_id, ANNA_RUN_BROKER="redis://127.0.0.1:1/0", **without_hosts_extra))


def test_local_commands_need_no_extra(env, without_hosts_extra):
    env.project("a: {job: [echo a]}\n")
    assert env.run("validate", **without_hosts_extra).returncode == 0
    assert env.run("runs", **without_hosts_extra).returncode == 0
