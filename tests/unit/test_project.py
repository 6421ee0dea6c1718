"""askanna.yml parsing: real files in tmp_path, errors checked for file:line:col and wording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from anna_run.errors import ConfigError
from anna_run.project import (
    DEFAULT_IMAGE,
    PULL_POLICIES,
    RESERVED_NAMES,
    Credentials,
    Environment,
    Job,
    Notifications,
    Output,
    Resources,
    check_relative_path,
    default_environment,
    find_project_file,
    json_schema,
    load_project,
)

SEED = """\
name of the job:
  job:
    - pip install -r requirements.txt
    - python --input_file {{ PAYLOAD_PATH }}
  output:
    result: models/model_summary.json
    artifact:
      - models/
"""


@pytest.fixture
def write(tmp_path: Path):
    """Write `text` (or bytes) as askanna.yml in tmp_path and return its path."""

    def _write(text: str | bytes, name: str = "askanna.yml") -> Path:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    return _write


def load(write, text: str):
    return load_project(write(text))


def error(write, text: str | bytes) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_project(write(text))
    return info.value


def at(path: Path, line: int, column: int) -> str:
    return f"{path}:{line}:{column}: "


# --- the seed and the overall shape ----------------------------------------------------------


def test_seed_example(write) -> None:
    path = write(SEED)
    project = load_project(path)
    assert project.file == path
    assert project.root == path.parent.absolute()
    assert project.job_names() == ("name of the job",)
    job = project.job("name of the job")
    assert job.commands == ("pip install -r requirements.txt", "python --input_file {{ PAYLOAD_PATH }}")
    assert job.output == Output(result="models/model_summary.json", artifacts=("models/",))
    assert job.line == 1
    assert job.environment is None and job.timeout is None and job.resources == Resources()
    assert project.warnings == ()


def test_full_spec_example(write) -> None:
    project = load(
        write,
        """\
environment:
  image: python:3.11-slim
  pull: if-not-present
  credentials: {username: "${REG_USER}", password: "${REG_PASSWORD}"}
variables:
  MODEL: linear
timezone: Europe/Amsterdam

train:
  job:
    - python train.py --input_file {{ PAYLOAD_PATH }}
  output:
    result: models/model_summary.json
    artifact: models/
  environment: {image: "my/image:${TAG}", build: docker/}
  timeout: 30m
  resources: {cpus: 2, memory: 4g, gpus: 0}
  network: none
  cache: [/root/.cache/pip]
  timezone: UTC
  description: trains the model
""",
    )
    assert project.environment == Environment(
        image="python:3.11-slim",
        pull="if-not-present",
        credentials=Credentials("${REG_USER}", "${REG_PASSWORD}"),
    )
    assert project.variables == (("MODEL", "linear"),)
    assert project.timezone == "Europe/Amsterdam"
    job = project.job("train")
    assert job.line == 9
    assert job.output.artifacts == ("models/",)
    assert job.environment == Environment(image="my/image:${TAG}", build="docker/")
    assert job.timeout == 1800.0
    assert job.resources == Resources(cpus=2.0, memory=4 * 1024**3, gpus=0)
    assert job.network == "none"
    assert job.cache == ("/root/.cache/pip",)
    assert project.timezone_for(job) == "UTC"
    assert project.environment_for(job) == job.environment
    assert project.warnings == ()


def test_push_target_and_scalars_are_not_jobs(write) -> None:
    project = load(
        write,
        "push-target: https://beta.askanna.eu/workspace/abc/project/def\n"
        "some-setting: 3\n"
        "train:\n  job: [python train.py]\n"
        "serve:\n  job: [python serve.py]\n",
    )
    assert project.job_names() == ("train", "serve")
    assert project.warnings == ()


def test_jobs_keep_file_order_and_lines(write) -> None:
    project = load(write, "b:\n  job: [x]\na:\n  job: [y]\nc:\n  job: [z]\n")
    assert project.job_names() == ("b", "a", "c")
    assert [job.line for job in project.jobs] == [1, 3, 5]


def test_names_with_spaces_unicode_and_slash(write) -> None:
    project = load(write, "'train model':\n  job: [a]\ntrain/gpu:\n  job: [b]\nmodèle 🚀:\n  job: [c]\n")
    assert project.job_names() == ("train model", "train/gpu", "modèle 🚀")
    assert project.job("modèle 🚀").commands == ("c",)


def test_unknown_job(write) -> None:
    project = load(write, "a:\n  job: [x]\nb:\n  job: [y]\n")
    with pytest.raises(ConfigError) as info:
        project.job("c")
    assert "unknown job 'c'" in str(info.value)
    assert "jobs: a, b" in str(info.value)
    assert "a, b" in (info.value.hint or "")


def test_merge_keys_share_settings(write) -> None:
    project = load(
        write,
        "base: &base\n  job: [echo base]\n  timeout: 1h\ntrain:\n  <<: *base\n  job: [python train.py]\n",
    )
    train = project.job("train")
    assert train.commands == ("python train.py",)
    assert train.timeout == 3600.0


# --- environment and timezone defaults -------------------------------------------------------


def test_default_environment(write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANNA_RUN_DEFAULT_IMAGE", raising=False)
    project = load(write, "a:\n  job: [x]\n")
    assert project.environment_for(project.job("a")) == Environment(image=DEFAULT_IMAGE)
    assert project.timezone_for(project.job("a")) == "UTC"
    monkeypatch.setenv("ANNA_RUN_DEFAULT_IMAGE", "alpine:3")
    assert default_environment().image == "alpine:3"
    assert project.environment_for(project.job("a")).image == "alpine:3"


def test_environment_precedence_and_filling(write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANNA_RUN_DEFAULT_IMAGE", raising=False)
    project = load(
        write,
        "environment: {pull: always}\ntimezone: Asia/Tokyo\n"
        "a:\n  job: [x]\n"
        "b:\n  job: [x]\n  environment: {image: 'r/b:1'}\n  timezone: UTC\n"
        "c:\n  job: [x]\n  environment: {build: .}\n",
    )
    assert project.environment_for(project.job("a")) == Environment(image=DEFAULT_IMAGE, pull="always")
    assert project.environment_for(project.job("b")) == Environment(image="r/b:1")
    # a built image is never tagged as the default image
    assert project.environment_for(project.job("c")) == Environment(build=".")
    assert project.timezone_for(project.job("a")) == "Asia/Tokyo"
    assert project.timezone_for(project.job("b")) == "UTC"


@pytest.mark.parametrize(
    ("text", "message", "where"),
    [
        ("environment: {pull: sometimes}\n", "pull must be one of if-not-present, always, never", (1, 21)),
        ("environment: {image: 3}\n", "image must be a string, not a number", (1, 22)),
        ("environment: {image: ''}\n", "image must not be empty", (1, 22)),
        ("environment: {credentials: {username: u}}\n", "missing password", (1, 28)),
        ("environment: {build: ../outside}\n", "contains '..'", (1, 22)),
        ("environment: [a]\n", "environment must be a mapping, not a list", (1, 14)),
    ],
)
def test_environment_errors(write, text: str, message: str, where: tuple[int, int]) -> None:
    path = write(text + "a:\n  job: [x]\n")
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert str(info.value).startswith(at(path, *where))
    assert message in str(info.value)


def test_environment_unknown_key_warns(write) -> None:
    path = write("environment: {image: x, platform: arm}\na:\n  job: [x]\n")
    project = load_project(path)
    assert len(project.warnings) == 1
    assert project.warnings[0].startswith(at(path, 1, 25)) and "'platform'" in project.warnings[0]


def test_pull_policies_constant() -> None:
    assert PULL_POLICIES == ("if-not-present", "always", "never")


# --- reserved names and top-level shapes ------------------------------------------------------


def test_reserved_names() -> None:
    assert {"push-target", "environment", "cluster", "image", "worker", "variables"} <= RESERVED_NAMES
    assert {"askanna", "job", "project", "notifications", "timezone"} <= RESERVED_NAMES


@pytest.mark.parametrize("name", ["environment", "variables", "cluster", "job", "notifications"])
def test_reserved_name_as_job(write, name: str) -> None:
    path = write(f"ok:\n  job: [x]\n{name}:\n  job:\n    - echo hi\n")
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert str(info.value) == f"{at(path, 3, 1)}'{name}' is a reserved name and cannot be a job name"


def test_reserved_names_keep_their_meaning(write) -> None:
    project = load(
        write,
        "cluster: {name: x}\nimage: python:3\nworker: w\naskanna: {a: 1}\nproject: p\njob: j\na:\n  job: [x]\n",
    )
    assert project.job_names() == ("a",)


def test_reserved_mapping_with_a_job_key_that_is_not_a_list(write) -> None:
    project = load(write, "variables:\n  job: nightly\na:\n  job: [x]\n")
    assert project.variables == (("job", "nightly"),)


def test_environment_as_string_hint(write) -> None:
    err = error(write, "a:\n  job: [x]\n  environment: python:3.12\n")
    assert "environment must be a mapping, not a string" in str(err)
    assert "image: python:3.12" in (err.hint or "")


def test_job_as_string_is_not_a_job(write) -> None:
    project = load(write, "train: python train.py\na:\n  job: [x]\n")
    assert project.job_names() == ("a",)


def test_job_as_list_of_commands(write) -> None:
    path = write("a:\n  job: [x]\ntrain:\n  - pip install x\n  - python train.py\n")
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert str(info.value).startswith(at(path, 3, 1))
    assert "'train'" in str(info.value) and "`job:`" in str(info.value)
    assert info.value.hint == "put the commands under `job:`"


def test_job_null_warns(write) -> None:
    path = write("a:\n  job: [x]\ntrain:\n")
    project = load_project(path)
    assert project.job_names() == ("a",)
    assert project.warnings == (f"{at(path, 3, 1)}'train' is empty; not a job",)


def test_no_jobs_warns(write) -> None:
    project = load(write, "variables: {A: b}\n")
    assert project.jobs == ()
    assert "no jobs" in project.warnings[0]


@pytest.mark.parametrize("key", ["1", "true", "~", "1.5"])
def test_non_string_job_names(write, key: str) -> None:
    path = write(f"a:\n  job: [x]\n{key}:\n  job: [y]\n")
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert str(info.value).startswith(at(path, 3, 1))
    assert "job names must be strings" in str(info.value)


def test_quoted_number_is_a_fine_job_name(write) -> None:
    assert load(write, "'1':\n  job: [x]\n").job_names() == ("1",)


@pytest.mark.parametrize("name", ['"a\\nb"', '"a\\0b"', '"a\\tb"', "''", "'  '"])
def test_bad_job_names(write, name: str) -> None:
    path = write(f"{name}:\n  job: [x]\n")
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert str(info.value).startswith(at(path, 1, 1))
    assert "control character" in str(info.value) or "empty" in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_top_level_not_a_mapping(write, text: str) -> None:
    err = error(write, text)
    assert "top level must be a mapping" in str(err)
    assert err.line == 1 and err.column == 1


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "~\n"])
def test_empty_file(write, text: str) -> None:
    assert "empty" in str(error(write, text))


# --- commands ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "kind"),
    [
        ("42", "a number"),
        ("{a: b}", "a mapping"),
        ("[a, b]", "a list"),
        ("~", "empty"),
        ("true", "a boolean"),
    ],
)
def test_command_must_be_a_string(write, item: str, kind: str) -> None:
    path = write(f"train:\n  job:\n    - echo ok\n    - {item}\n")
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert str(info.value) == f"{at(path, 4, 7)}command must be a string, not {kind}"


def test_command_with_colon_space_hint(write) -> None:
    err = error(write, "train:\n  job:\n    - echo time: now\n")
    assert "command must be a string, not a mapping" in str(err)
    assert "quote" in (err.hint or "")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("  job: []\n", "empty list"),
        ("  job:\n", "has no commands"),
        ("  output: {result: x}\n", "has no commands"),
        ("  job: python train.py\n", "must be a list of commands, not a string"),
        ("  job: ['  ']\n", "command is empty"),
    ],
)
def test_job_list_errors(write, body: str, message: str) -> None:
    err = error(write, "train:\n" + body)
    assert message in str(err)
    assert err.line is not None and err.column is not None


def test_quoted_number_command_is_fine(write) -> None:
    assert load(write, "a:\n  job: ['42', \"true\"]\n").job("a").commands == ("42", "true")


def test_unknown_job_keys_warn(write) -> None:
    path = write("a:\n  job: [x]\n  retries: 3\n  image: foo\n")
    project = load_project(path)
    assert len(project.warnings) == 2
    assert project.warnings[0].startswith(at(path, 3, 3)) and "'retries'" in project.warnings[0]
    assert project.warnings[1].startswith(at(path, 4, 3)) and "'image'" in project.warnings[1]


# --- output -----------------------------------------------------------------------------------


def test_output_forms(write) -> None:
    project = load(
        write,
        "a:\n  job: [x]\n  output: {artifact: 'out/*.csv'}\n"
        "b:\n  job: [x]\n  output: {result: '{{ NAME }}.json', artifacts: [x]}\n",
    )
    assert project.job("a").output == Output(artifacts=("out/*.csv",))
    assert project.job("b").output == Output(result="{{ NAME }}.json")
    assert "'artifacts'" in project.warnings[0]


def test_output_paths_is_the_old_artifact_list(write) -> None:
    path = write(
        "a:\n  job: [x]\n  output:\n    paths: [models/, 'report.html']\n"
        "b:\n  job: [x]\n  output: {artifact: x/, paths: [x/, y]}\n"
        "c:\n  job: [x]\n  output: {paths: '*.csv'}\n"
    )
    project = load_project(path)
    assert project.job("a").output == Output(artifacts=("models/", "report.html"))
    assert project.job("b").output == Output(artifacts=("x/", "y"))
    assert project.job("c").output == Output(artifacts=("*.csv",))
    assert len(project.warnings) == 3
    assert project.warnings[0].startswith(f"{at(path, 4, 12)}output.paths is deprecated")
    assert all("rename it to artifact" in w for w in project.warnings)


def test_output_paths_is_checked_like_artifact(write) -> None:
    assert "output.paths '../x' contains '..'" in str(error(write, "a:\n  job: [x]\n  output: {paths: ../x}\n"))


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("{result: /etc/passwd}", "output.result '/etc/passwd' is absolute"),
        ("{result: ../x.json}", "contains '..'"),
        ("{artifact: [ok/, 'a\\\\..\\\\b']}", "contains '..'"),
        ("{artifact: [ok/, 3]}", "output.artifact must be a string"),
        ("{result: ''}", "is empty"),
        ("[a]", "output must be a mapping"),
    ],
)
def test_output_errors(write, output: str, message: str) -> None:
    err = error(write, f"a:\n  job: [x]\n  output: {output}\n")
    assert message in str(err)
    assert err.line == 3


# --- resources, network, cache, timeout -------------------------------------------------------


def test_resources_values(write) -> None:
    job = load(write, "a:\n  job: [x]\n  resources: {cpus: 0.5, memory: 512m, gpus: 2}\n").job("a")
    assert job.resources == Resources(cpus=0.5, memory=512 * 1024**2, gpus=2)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ("{cpus: 0}", "cpus must be a number above 0"),
        ("{cpus: two}", "cpus must be a number above 0"),
        ("{cpus: true}", "cpus must be a number above 0"),
        ("{memory: 1m}", "below Docker's minimum"),
        ("{memory: lots}", "not a memory size"),
        ("{gpus: -1}", "gpus must be a whole number"),
        ("{gpus: some}", "gpus must be a whole number"),
    ],
)
def test_resources_errors(write, resources: str, message: str) -> None:
    err = error(write, f"a:\n  job: [x]\n  resources: {resources}\n")
    assert message in str(err)
    assert (err.line, err.column) == (3, len("  resources: ") + resources.index(": ") + 3)  # the value


def test_network(write) -> None:
    assert load(write, "a:\n  job: [x]\n  network: bridge\n").job("a").network == "bridge"
    err = error(write, "a:\n  job: [x]\n  network: host\n")
    assert "host" in str(err) and "not allowed" in str(err) and (err.line, err.column) == (3, 12)
    assert "bridge or none" in str(error(write, "a:\n  job: [x]\n  network: overlay\n"))


@pytest.mark.parametrize(
    ("cache", "message"),
    [
        ("[root/.cache]", "must be an absolute path"),
        ("[/]", "cannot be / itself"),
        ("[/a/../etc]", "must not contain '..'"),
        ("[3]", "cache must be a string"),
    ],
)
def test_cache_errors(write, cache: str, message: str) -> None:
    err = error(write, f"a:\n  job: [x]\n  cache: {cache}\n")
    assert message in str(err) and err.line == 3


def test_timeout_values(write) -> None:
    job = load(write, "a:\n  job: [x]\n  timeout: 90\n").job("a")
    assert job.timeout == 90.0
    assert load(write, "a:\n  job: [x]\n  timeout: 1.5h\n").job("a").timeout == 5400.0


@pytest.mark.parametrize("timeout", ["soon", "0", "-5", "1:30", "[1]"])
def test_timeout_errors(write, timeout: str) -> None:
    err = error(write, f"a:\n  job: [x]\n  timeout: {timeout}\n")
    assert (err.line, err.column) == (3, 12)
    assert "timeout" in str(err)


# --- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["models/", "a/b.json", "{{ OUT }}/x", "${OUT}/x", "out/*.csv", "a..b", ".hidden", "~/x"]
)
def test_check_relative_path_accepts(path: str) -> None:
    check_relative_path(path, what="result")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "is empty"),
        ("  ", "is empty"),
        ("/etc/passwd", "is absolute"),
        ("\\\\server\\share", "is absolute"),
        ("C:\\x", "is absolute"),
        ("c:/x", "is absolute"),
        ("..", "contains '..'"),
        ("a/../../b", "contains '..'"),
        ("a\\..\\b", "contains '..'"),
        ("a\x00b", "NUL or newline"),
        ("a\nb", "NUL or newline"),
    ],
)
def test_check_relative_path_refuses(path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_relative_path(path, what="result", file="askanna.yml", line=3, column=5)
    assert str(info.value).startswith("askanna.yml:3:5: result ")
    assert message in str(info.value)


# --- variables and timezone -------------------------------------------------------------------


def test_variables_as_strings(write) -> None:
    project = load(
        write,
        "variables:\n  A: text\n  B: 0x10\n  C: 1.50\n  D: true\n  E: no\n  F:\n  G: 2020-01-02\n  _h9: '3'\n"
        "a:\n  job: [x]\n",
    )
    assert project.variables == (
        ("A", "text"),
        ("B", "0x10"),
        ("C", "1.50"),
        ("D", "true"),
        ("E", "false"),
        ("F", ""),
        ("G", "2020-01-02"),
        ("_h9", "3"),
    )


@pytest.mark.parametrize(
    ("variables", "message", "column"),
    [
        ("{1A: x}", "variable name '1A' is not valid", 13),
        ("{'A-B': x}", "variable name 'A-B' is not valid", 13),
        ("{A: [1, 2]}", "variable 'A' must be a string, number or boolean, not a list", 16),
        ("[A, B]", "variables must be a mapping", 12),
    ],
)
def test_variable_errors(write, variables: str, message: str, column: int) -> None:
    err = error(write, f"variables: {variables}\na:\n  job: [x]\n")
    assert message in str(err)
    assert (err.line, err.column) == (1, column)


def test_timezones(write) -> None:
    project = load(write, "timezone: America/New_York\na:\n  job: [x]\n  timezone: Europe/Amsterdam\n")
    assert project.timezone == "America/New_York"
    assert project.job("a").timezone == "Europe/Amsterdam"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../etc/passwd", "''", "Europe", "42"])
def test_timezone_errors(write, zone: str) -> None:
    err = error(write, f"a:\n  job: [x]\n  timezone: {zone}\n")
    assert (err.line, err.column) == (3, 13)
    assert "timezone" in str(err)


def test_timezone_without_tz_database(write, monkeypatch: pytest.MonkeyPatch) -> None:
    import zoneinfo

    def missing(key: str) -> None:
        raise zoneinfo.ZoneInfoNotFoundError(key)

    monkeypatch.setattr(zoneinfo, "ZoneInfo", missing)
    monkeypatch.setattr(zoneinfo, "available_timezones", set)
    assert load(write, "timezone: Europe/Amsterdam\na:\n  job: [x]\n").timezone == "Europe/Amsterdam"
    assert load(write, "timezone: UTC\na:\n  job: [x]\n").timezone == "UTC"
    assert "unknown timezone" in str(error(write, "timezone: 'not a zone'\na:\n  job: [x]\n"))


# --- schedule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("'*/5 * * * *'", ("*/5 * * * *",)),
        ("'0  3 * * MON-FRI'", ("0 3 * * MON-FRI",)),
        ("'0 0 1 jan,jul sun'", ("0 0 1 jan,jul sun",)),
        ("'0-30/10 1,2,3 1-31/2 */3 0-7'", ("0-30/10 1,2,3 1-31/2 */3 0-7",)),
        ("'@daily'", ("@daily",)),
        ("'@Hourly'", ("@hourly",)),
        ("['@weekly', '@annually', '@midnight', '@monthly', '@yearly']", None),
        ("{minute: 30, hour: 2}", ("30 2 * * *",)),
        # AskAnna's rule: a missing minute or hour is 0, any other missing field is *
        ("[{minute: '*/15', weekday: 'mon-fri'}, '0 0 * * *']", ("*/15 0 * * mon-fri", "0 0 * * *")),
        ("{}", ("0 0 * * *",)),
        ("{day: 1, month: 12}", ("0 0 1 12 *",)),
        ("{hour: 5, day: 5, month: 5}", ("0 5 5 5 *",)),
        ("{minute: 7}", ("7 0 * * *",)),
        ("{hour: '*/2'}", ("0 */2 * * *",)),
    ],
)
def test_schedule_valid(write, schedule: str, expected: tuple[str, ...] | None) -> None:
    job = load(write, f"a:\n  job: [x]\n  schedule: {schedule}\n").job("a")
    if expected is None:
        assert job.schedule == ("@weekly", "@annually", "@midnight", "@monthly", "@yearly")
    else:
        assert job.schedule == expected


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("'* * * *'", "5 fields"),
        ("'* * * * * *'", "5 fields"),
        ("'60 * * * *'", "minute 60 is out of range 0-59"),
        ("'* 24 * * *'", "hour 24 is out of range 0-23"),
        ("'* * 0 * *'", "day 0 is out of range 1-31"),
        ("'* * * 13 *'", "month 13 is out of range 1-12"),
        ("'* * * * 8'", "weekday 8 is out of range 0-7"),
        ("'* * * FOO *'", "month 'FOO' is not a number or a name"),
        ("'* * * * MON-SUX'", "weekday 'SUX'"),
        ("'*/0 * * * *'", "step must be a number"),
        ("'5-2 * * * *'", "range runs backwards"),
        ("'a * * * *'", "minute 'a' is not a number"),
        ("'1,,2 * * * *'", "minute '' is not a number"),
        ("'@reboot'", "unknown alias"),
        ("{minute: 99}", "minute 99 is out of range"),
        ("{seconds: 1}", "unknown key 'seconds' in schedule"),
        ("{minute: true}", "must be a number or a string"),
        ("42", "schedule entry must be a string, not a number"),
    ],
)
def test_schedule_invalid_entry_is_dropped_with_a_warning(write, schedule: str, message: str) -> None:
    path = write(f"a:\n  job: [x]\n  schedule: [{schedule}, '@daily']\nb:\n  job: [y]\n")
    project = load_project(path)
    assert project.job("a").schedule == ("@daily",)  # the other entry stays
    assert project.job_names() == ("a", "b")  # and so do all jobs
    [warning] = project.warnings
    assert message in warning
    assert warning.startswith(f"{path}:3:")
    assert warning.endswith("(ignored)")


def test_schedule_warning_names_the_entry(write) -> None:
    path = write("a:\n  job: [x]\n  schedule:\n    - '@daily'\n    - '61 * * * *'\n")
    project = load_project(path)
    assert project.job("a").schedule == ("@daily",)
    assert project.warnings[0].startswith(f"{at(path, 5, 7)}schedule entry '61 * * * *': ")


def test_askanna_test_project_schedule_keeps_its_jobs(write) -> None:
    """AskAnna's own test project: two bad entries among good ones; AskAnna drops just those."""
    path = write(
        "a:\n  job: [x]\n  schedule:\n"
        "    - '@midnight'\n"
        "    - {hour: 8, century: 2}\n"
        "    - some rubbish, no cron\n"
        "    - {hour: 5, day: 5, month: 5}\n"
        "b:\n  job: [y]\n  schedule: '0 6 * * 1-5'\n"
    )
    project = load_project(path)
    assert project.job("a").schedule == ("@midnight", "0 5 5 5 *")
    assert project.job("b").schedule == ("0 6 * * 1-5",)
    assert len(project.warnings) == 2
    assert project.warnings[0].startswith(f"{at(path, 5, 17)}unknown key 'century' in schedule")
    assert project.warnings[1].startswith(f"{at(path, 6, 7)}schedule entry 'some rubbish, no cron'")


def test_a_single_bad_schedule_leaves_none(write) -> None:
    project = load(write, "a:\n  job: [x]\n  schedule: '* * *'\n")
    assert project.job("a").schedule == ()
    assert "5 fields" in project.warnings[0]


# --- notifications ----------------------------------------------------------------------------


def test_notifications_valid(write) -> None:
    project = load(
        write,
        "notifications:\n  all:\n    email: [ops@example.com, '${TEAM_MAIL}']\n"
        "  error:\n    email: 'a@b.nl, c.d@e.co.uk'\n"
        "a:\n  job: [x]\n  notifications:\n    error:\n      email: '{{ ONCALL }}'\n",
    )
    assert project.notifications == Notifications(
        all=("ops@example.com", "${TEAM_MAIL}"), error=("a@b.nl", "c.d@e.co.uk")
    )
    assert project.job("a").notifications == Notifications(error=("{{ ONCALL }}",))


@pytest.mark.parametrize(
    ("notifications", "message"),
    [
        ("{all: {email: not-an-email}}", "'not-an-email' is not an email address"),
        ("{all: {email: [a@b.com, 'x@y']}}", "'x@y' is not an email address"),
        ("{all: {email: ['$HOME']}}", "'$HOME' is not an email address"),
        ("{all: {email: 42}}", "email must be a string"),
        ("{all: {slack: '#ops'}}", "unknown key 'slack'"),
        ("{success: {email: a@b.com}}", "unknown key 'success'"),
        ("[a@b.com]", "notifications must be a mapping"),
    ],
)
def test_notifications_invalid_entry_is_dropped_with_a_warning(write, notifications: str, message: str) -> None:
    path = write(f"a:\n  job: [x]\n  notifications: {notifications}\n")
    project = load_project(path)
    assert project.job_names() == ("a",)
    [warning] = project.warnings
    assert message in warning
    assert warning.startswith(f"{path}:3:")


def test_notifications_keep_the_good_entries(write) -> None:
    path = write(
        "notifications:\n  all:\n    email: [ops@example.com, 'not an address']\n  success: {email: x@y.com}\n"
        "a:\n  job: [x]\n  notifications:\n    error: {email: [a@b.nl], slack: '#ops'}\n"
    )
    project = load_project(path)
    assert project.notifications == Notifications(all=("ops@example.com",))
    assert project.job("a").notifications == Notifications(error=("a@b.nl",))
    where = [at(path, 3, 30), at(path, 4, 3), at(path, 8, 30)]
    assert [w[: len(prefix)] for w, prefix in zip(project.warnings, where, strict=True)] == where


# --- merge keys -------------------------------------------------------------------------------


def test_recursive_merge_refused(write) -> None:
    assert "merge key" in str(error(write, "a: &a\n  <<: *a\n  job: [x]\n"))


# --- finding the file -------------------------------------------------------------------------


def test_find_upward(tmp_path: Path) -> None:
    (tmp_path / "askanna.yml").write_text("a:\n  job: [x]\n")
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_project_file(cwd=deep) == tmp_path / "askanna.yml"
    assert find_project_file(cwd=tmp_path) == tmp_path / "askanna.yml"


def test_find_yaml_extension_and_preference(tmp_path: Path) -> None:
    (tmp_path / "askanna.yaml").write_text("a:\n  job: [x]\n")
    assert find_project_file(cwd=tmp_path) == tmp_path / "askanna.yaml"
    (tmp_path / "askanna.yml").write_text("a:\n  job: [x]\n")
    assert find_project_file(cwd=tmp_path) == tmp_path / "askanna.yml"
    assert find_project_file(tmp_path) == tmp_path / "askanna.yml"


def test_find_nearest_wins(tmp_path: Path) -> None:
    (tmp_path / "askanna.yml").write_text("")
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "askanna.yml").write_text("")
    assert find_project_file(cwd=inner / ".") == inner / "askanna.yml"


def test_find_project_dir_and_file(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "askanna.yml").write_text("")
    custom = project / "other.yml"
    custom.write_text("")
    assert find_project_file(project) == project / "askanna.yml"
    assert find_project_file(custom) == custom
    assert find_project_file(Path("proj"), cwd=tmp_path) == project / "askanna.yml"


def test_find_not_found(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError) as info:
        find_project_file(empty)
    assert "create askanna.yml or pass --project DIR" in (info.value.hint or "")
    with pytest.raises(ConfigError, match="no such file or directory"):
        find_project_file(tmp_path / "missing")


def test_find_upward_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only tmp_path's own tree is controlled; make the parents look empty.
    monkeypatch.setattr("anna_run.project._project_file_in", lambda directory: None)
    with pytest.raises(ConfigError) as info:
        find_project_file(cwd=tmp_path)
    assert "no askanna.yml found" in str(info.value)
    assert info.value.hint == "create askanna.yml or pass --project DIR"


# --- schema -----------------------------------------------------------------------------------


def test_json_schema() -> None:
    schema = json_schema()
    assert isinstance(schema, dict)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {"environment", "variables", "timezone", "notifications", "push-target"} <= set(schema["properties"])
    job = schema["additionalProperties"]
    assert job["required"] == ["job"]
    for key in ("job", "output", "environment", "timeout", "resources", "network", "cache"):
        assert job["properties"][key]["description"]
    assert {"timezone", "schedule", "notifications", "description"} <= set(job["properties"])
    assert set(schema["$defs"]) == {"environment", "notifications"}
    assert json.loads(json.dumps(schema)) == schema


def test_dataclasses_are_frozen() -> None:
    job = Job(name="a", commands=("x",))
    with pytest.raises(AttributeError):
        job.name = "b"  # type: ignore[misc]
    assert job.output == Output() and job.resources == Resources() and job.schedule == ()
