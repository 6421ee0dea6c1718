"""A runner host prepares a submitted run with the same `prepare` as the submitting machine:
the same commands and settings, and every check again (the `$(( ))` guard at least), with the
code from a real store. No broker or engine needed: the message is the one `submit` sends."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import pytest
from anna_run.errors import ConfigError
from anna_run.hosts.submit import task_message
from anna_run.hosts.worker import PackageCache, prepare_submitted
from anna_run.report import SilentReporter
from anna_run.request import FromStore, RunRequest, prepare
from anna_run.run import stage
from anna_run.store.local import LocalStore

YML = """
environment: {image: anna-run/busybox:latest}
variables: {N: "3"}
square:
  job: ['echo $(( {{ N }} * {{ N }} )) > out.txt; echo {{ WHO }}']
  timeout: 5m
  output: {result: out.txt}
"""


def _submitted(tmp_path: Path, **options) -> tuple[dict, LocalStore, RunRequest]:
    root = tmp_path / "project"
    root.mkdir()
    (root / "askanna.yml").write_text(textwrap.dedent(YML))
    (tmp_path / "env").write_text("WHO=env-file\n")
    store = LocalStore(tmp_path / "store")
    request = RunRequest(
        job="square", project=root, env_files=(tmp_path / "env",), run_id="abcd-efgh-ijkl-mnop", **options
    )
    prepared = prepare(request, SilentReporter())
    staged = stage(prepared, store, SilentReporter())
    return task_message(prepared, staged, "gpu"), store, request


def test_a_host_prepares_the_run_the_submitter_checked(tmp_path: Path) -> None:
    message, store, request = _submitted(tmp_path, variables=("N=4",), timeout="90s", memory="1g")
    local = prepare(request, SilentReporter())
    hosted = prepare_submitted(message, store, PackageCache(tmp_path / "cache"), SilentReporter())
    assert isinstance(hosted.source, FromStore)
    assert hosted.shell_commands == local.shell_commands
    assert hosted.settings == local.settings and hosted.settings.timeout == 90
    assert hosted.variables.as_dict() == local.variables.as_dict()  # --env-file values travel too
    assert hosted.variables.as_dict()["WHO"] == "env-file"
    assert hosted.project_id == local.project_id and hosted.run_id == request.run_id


@pytest.mark.parametrize("value", ["a[$(id)]", "1; id", "$(touch /tmp/x)"])
def test_a_host_refuses_what_a_local_run_refuses(tmp_path: Path, value: str) -> None:
    """A message that reaches a host with a value a local run refuses (written by another
    client, or changed in the broker) is refused there too, before anything runs."""
    message, store, _ = _submitted(tmp_path)
    tampered = copy.deepcopy(message)
    tampered["open"]["request"]["variables"] = [f"N={value}"]
    with pytest.raises(ConfigError, match=r"\$\(\( \)\) arithmetic"):
        prepare_submitted(tampered, store, PackageCache(tmp_path / "cache"), SilentReporter())
    with pytest.raises(ConfigError, match=r"\$\(\( \)\) arithmetic"):
        local = RunRequest(job="square", project=tmp_path / "project", variables=(f"N={value}", "WHO=me"))
        prepare(local, SilentReporter())


def test_a_host_refuses_a_message_of_another_version(tmp_path: Path) -> None:
    message, store, _ = _submitted(tmp_path)
    message["v"] = 1
    with pytest.raises(ConfigError, match="version 1"):
        prepare_submitted(message, store, PackageCache(tmp_path / "cache"), SilentReporter())


def test_a_sealed_message_holds_no_secret_and_opens_on_a_host_with_the_key(tmp_path: Path, monkeypatch) -> None:
    from anna_run.hosts.sealed import new_key

    key = new_key()
    root = tmp_path / "project"
    root.mkdir()
    (root / "askanna.yml").write_text(textwrap.dedent(YML))
    (tmp_path / "env").write_text("WHO=env-file-value-4711\n")
    store = LocalStore(tmp_path / "store")
    request = RunRequest(
        job="square",
        project=root,
        env_files=(tmp_path / "env",),
        secrets=("DB_PASSWORD=hunter2-sealed",),
        variables=("API_TOKEN=tok-sealed-99",),
        run_id="abcd-efgh-ijkl-mnop",
    )
    prepared = prepare(request, SilentReporter())
    message = task_message(prepared, stage(prepared, store, SilentReporter()), "gpu", (key,))
    text = json.dumps(message)
    for secret in ("hunter2-sealed", "tok-sealed-99", "env-file-value-4711", "DB_PASSWORD"):
        assert secret not in text
    assert "open" not in message and message["v"] == 3

    monkeypatch.setenv("ANNA_RUN_SECRET_KEY", key)
    hosted = prepare_submitted(message, store, PackageCache(tmp_path / "cache"), SilentReporter())
    values = hosted.variables.as_dict()
    assert values["DB_PASSWORD"] == "hunter2-sealed" and values["WHO"] == "env-file-value-4711"

    monkeypatch.setenv("ANNA_RUN_SECRET_KEY", new_key())
    with pytest.raises(ConfigError, match="sealed with a key this runner host does not have"):
        prepare_submitted(message, store, PackageCache(tmp_path / "cache2"), SilentReporter())
    monkeypatch.delenv("ANNA_RUN_SECRET_KEY")
    with pytest.raises(ConfigError, match="has no key"):
        prepare_submitted(message, store, PackageCache(tmp_path / "cache3"), SilentReporter())
