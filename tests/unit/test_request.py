"""The run's pure logic, without a container: the one builder of a prepared run (every check,
nothing created), settings precedence, variable sources, the verdict, and the request's JSON."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from anna_run.errors import ConfigError
from anna_run.report import SilentReporter
from anna_run.request import STAND_IN_PACKAGE_ID, RunRequest, prepare, settings_for
from anna_run.run import verdict

YML = """
environment: {image: anna-run/busybox:latest}
timezone: Europe/Amsterdam
variables: {A: project, B: project, C: project, API_KEY: project-key-1}
train:
  job: ['echo {{ A }} {{ B }} {{ C }}']
  timeout: 10m
  resources: {memory: 1g, cpus: 2}
  output: {result: 'out/{{ A }}.json', artifacts: ['models/{{ B }}/']}
"""


def _project(tmp_path: Path, yml: str = YML) -> Path:
    root = tmp_path / "project"
    root.mkdir(exist_ok=True)
    (root / "askanna.yml").write_text(textwrap.dedent(yml))
    return root


def _prepare(tmp_path: Path, yml: str = YML, **options):
    root = _project(tmp_path, yml)
    return prepare(RunRequest(job=options.pop("job", "train"), project=root, **options), SilentReporter())


def test_settings_take_the_option_over_the_job_over_the_project(tmp_path: Path) -> None:
    prepared = _prepare(tmp_path)
    s = prepared.settings
    assert (s.timeout, s.memory, s.cpus, s.network, s.pull) == (600, 2**30, 2, "bridge", "if-not-present")
    assert s.timezone == "Europe/Amsterdam" and s.image == "anna-run/busybox:latest"
    given = RunRequest(job="train", timeout="90s", memory="512m", cpus=0.5, network="none", pull="never", image="x:1")
    s = settings_for(given, prepared.project, prepared.job)
    assert (s.timeout, s.memory, s.cpus, s.network, s.pull, s.image) == (90, 512 * 2**20, 0.5, "none", "never", "x:1")
    assert settings_for(RunRequest(job="train", no_cache=True), prepared.project, prepared.job).cache == ()


def test_variable_sources_in_precedence_order(tmp_path: Path) -> None:
    env_file = tmp_path / "vars.env"
    env_file.write_text("B=env-file\nC=env-file\n")
    payload = tmp_path / "p.json"
    payload.write_text('{"C": "payload"}')
    prepared = _prepare(tmp_path, env_files=(env_file,), variables=("C=cli",), payload=str(payload))
    values = prepared.variables.as_dict()
    assert (values["A"], values["B"], values["C"]) == ("project", "env-file", "payload")
    assert values["AA_PACKAGE_SUUID"] == STAND_IN_PACKAGE_ID  # until the package exists
    real = prepared.variables_for("ab" * 32).as_dict()
    assert real["AA_PACKAGE_SUUID"] != STAND_IN_PACKAGE_ID and real["C"] == "payload"
    assert "API_KEY" in prepared.variables.secret_names  # a secret by its name


def test_the_masker_is_built_once_from_every_secret(tmp_path: Path) -> None:
    prepared = _prepare(tmp_path, secrets=("TOKEN=s3cr3t-value",))
    assert prepared.masker.mask("a s3cr3t-value and project-key-1") == "a *** and ***"


@pytest.mark.parametrize(
    ("yml_change", "options", "message"),
    [
        (("{{ A }} {{ B }}", "{{ NOPE }}"), {}, "unknown variable"),
        (("echo {{ A }}", "echo $(( {{ A }} + 1 ))"), {}, r"\$\(\( \)\) arithmetic"),
        (("out/{{ A }}.json", "../{{ A }}.json"), {}, "contains '..'"),
        (("anna-run/busybox:latest", "Not An Image"), {}, "not a valid image reference"),
        ((), {"network": "host"}, "--network"),
        ((), {"pull": "sometimes"}, "--pull"),
        ((), {"gpus": "two"}, "--gpus"),
        ((), {"timeout": "soon"}, "--timeout"),
        ((), {"variables": ("no-equals",)}, "--var"),
        ((), {"job": "nope"}, "nope"),
        ((), {"payload": "missing.json"}, "no such file"),
    ],
)
def test_every_check_refuses_before_anything_is_created(tmp_path: Path, yml_change, options, message) -> None:
    yml = YML.replace(*yml_change) if yml_change else YML
    with pytest.raises(ConfigError, match=message):
        _prepare(tmp_path, yml, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]  # no store, nothing else


def test_a_secret_in_a_refused_value_stays_out_of_the_message(tmp_path: Path) -> None:
    yml = YML.replace("out/{{ A }}.json", "{{ TOKEN }}/../x.json")
    with pytest.raises(ConfigError) as caught:
        _prepare(tmp_path, yml, secrets=("TOKEN=hunter2-hunter2",))
    assert "hunter2" not in str(caught.value)


def test_the_request_survives_its_json(tmp_path: Path) -> None:
    request = RunRequest(
        job="train",
        project=tmp_path,
        variables=("A=1",),
        secrets=("S=2",),
        env_files=(tmp_path / "e",),
        cpus=1.5,
        keep=True,
        run_id="abcd",
    )
    assert RunRequest.from_json(request.to_json()) == request
    assert RunRequest.from_json({**request.to_json(), "unknown_later_field": 1}) == request


@dataclass
class Outcome:
    exit_code: int = 0
    timed_out: bool = False
    oom: bool = False
    cancelled: bool = False


@dataclass
class Collected:
    result_problem: str | None = None
    result_missing: bool = False


@dataclass
class Rendered:
    result: str | None = "out/r.json"


@dataclass
class Limits:
    timeout: float | None = 5


@pytest.mark.parametrize(
    ("outcome", "collected", "expected"),
    [
        (Outcome(), Collected(), ("succeeded", None, 0)),
        (Outcome(exit_code=137, timed_out=True), Collected(), ("timeout", "timed out after 5 s", 137)),
        (Outcome(exit_code=137, oom=True), Collected(), ("failed", "oom", 137)),
        (Outcome(exit_code=3), Collected(), ("failed", "command failed with exit code 3", 3)),
        (Outcome(), Collected(result_problem="result is a folder"), ("failed", "result is a folder", 0)),
        (Outcome(), Collected(result_missing=True), ("failed", "result missing: out/r.json", 0)),
    ],
)
def test_verdict(outcome, collected, expected) -> None:
    assert verdict(outcome, collected, Rendered(), Limits()) == expected
