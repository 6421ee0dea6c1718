"""`anna-run hosts keygen` and the options of `gc --blobs`, through typer's CliRunner."""

from __future__ import annotations

import base64
import json

from anna_run.cli import app, command_names
from anna_run.hosts.sealed import seal, unseal
from typer.testing import CliRunner

runner = CliRunner()


def test_keygen_prints_a_new_usable_key_each_time() -> None:
    first = runner.invoke(app, ["hosts", "keygen"])
    second = runner.invoke(app, ["hosts", "keygen", "--json"])
    assert first.exit_code == 0 and second.exit_code == 0
    key = first.stdout.strip()
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert json.loads(second.stdout)["key"] != key
    assert unseal(seal({"a": 1}, (key,)), (key,)) == {"a": 1}


def test_hosts_takes_only_keygen_and_is_registered_once() -> None:
    res = runner.invoke(app, ["hosts", "nope"])
    assert res.exit_code == 2 and "keygen" in res.stderr
    assert [c.name for c in app.registered_commands].count("hosts") == 1 and "hosts" in command_names()


def test_gc_keep_days_must_be_a_number_of_days() -> None:
    res = runner.invoke(app, ["gc", "--blobs", "--keep-days", "-1"])
    assert res.exit_code == 2 and "--keep-days" in res.stderr
    assert "--blobs" in runner.invoke(app, ["gc", "--help"]).stdout
