"""Variables (SPEC §2): sources and precedence, templating, masking."""

from __future__ import annotations

import json
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anna_run.variables as variables_module
import pytest
from anna_run.errors import ConfigError
from anna_run.variables import (
    MASK,
    PAYLOAD_PATH,
    Masker,
    builtin_variables,
    is_secret_name,
    parse_assignments,
    parse_env_file,
    render,
    render_command,
    resolve,
    template_names,
)

# -- names, --var, --secret, --env-file -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("API_KEY", True),
        ("api_token", True),
        ("MySecretThing", True),
        ("DB_PASSWORD", True),
        ("KEYRING", True),
        ("MODEL", False),
        ("PASSWD", False),
        ("", False),
    ],
)
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_parse_assignments_keeps_equals_in_value_and_last_wins() -> None:
    items = ["A=1", "URL=https://x/?a=b=c", "EMPTY=", "A=2"]
    assert parse_assignments(items, option="--var") == {"A": "2", "URL": "https://x/?a=b=c", "EMPTY": ""}


@pytest.mark.parametrize("item", ["NOEQUALS", "1BAD=x", "=x", "BAD-NAME=x", "A B=x"])
def test_parse_assignments_rejects_bad_items_naming_option_and_item(item: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_assignments(["OK=1", item], option="--var")
    assert "--var" in str(caught.value)
    assert item.partition("=")[0] in str(caught.value)


def test_parse_assignments_for_secrets_never_echoes_the_value() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_assignments(["hunter2-the-secret"], option="--secret")
    assert "hunter2" not in str(caught.value) and "--secret" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_assignments(["1BAD=hunter2-the-secret"], option="--secret")
    assert "hunter2" not in str(caught.value) and "1BAD" in str(caught.value)


def test_parse_env_file_forms(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "# a comment\n"
        "\n"
        "PLAIN=value\n"
        "export EXPORTED=yes\n"
        "SPACED = around  \n"
        "TRAILING=abc   # comment\n"
        "HASH=a#b\n"
        "EMPTY=\n"
        "COMMENT_ONLY= # nothing\n"
        "SINGLE='lit $HOME \\n \"x\"' # c\n"
        'DOUBLE="a\\nb \\"q\\" \\\\ \\x $HOME"\n'
        'MULTI="line1\n'
        'line2"\n'
        "WIN=crlf\r\n"
        "export=is a name\n"
    )
    assert parse_env_file(env) == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SPACED": "around",
        "TRAILING": "abc",
        "HASH": "a#b",
        "EMPTY": "",
        "COMMENT_ONLY": "",
        "SINGLE": 'lit $HOME \\n "x"',
        "DOUBLE": 'a\nb "q" \\ \\x $HOME',
        "MULTI": "line1\nline2",
        "WIN": "crlf",
        "export": "is a name",
    }


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("A=1\nNOT AN ASSIGNMENT\n", 2),
        ("A=1\n\n1BAD=x\n", 3),
        ("A=1\nB='unterminated\nC=3\n", 2),
        ('A="x" trailing\n', 1),
        ("export B\n", 1),
    ],
)
def test_parse_env_file_errors_name_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    env = tmp_path / "vars.env"
    env.write_text(text)
    with pytest.raises(ConfigError) as caught:
        parse_env_file(env)
    assert caught.value.file == str(env)
    assert caught.value.line == line
    assert f"{env}:{line}" in str(caught.value)


def test_parse_env_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        parse_env_file(tmp_path / "nope.env")


# -- built-ins and precedence ----------------------------------------------------------------------


def _builtins(payload_id: str | None = "PAYL-OAD0-0000-0001") -> dict[str, str]:
    return builtin_variables(
        token="tok",
        run_id="RUN0-0000-0000-0001",
        job="train",
        project_id="PROJ-0000-0000-0001",
        package_id="PACK-0000-0000-0001",
        payload_id=payload_id,
        timezone="Europe/Amsterdam",
    )


def test_builtin_variables_under_seed_and_askanna_names() -> None:
    values = _builtins()
    pairs = {
        ("AA_TOKEN", "AA_TOKEN"): "tok",
        ("JOBRUN_SUUID", "AA_RUN_SUUID"): "RUN0-0000-0000-0001",
        ("JOBRUN_JOBNAME", "AA_JOB_NAME"): "train",
        ("PROJECT_SUUID", "AA_PROJECT_SUUID"): "PROJ-0000-0000-0001",
        ("PACKAGE_SUUID", "AA_PACKAGE_SUUID"): "PACK-0000-0000-0001",
        ("PAYLOAD_SUUID", "AA_PAYLOAD_SUUID"): "PAYL-OAD0-0000-0001",
        ("PAYLOAD_PATH", "AA_PAYLOAD_PATH"): PAYLOAD_PATH,
    }
    for (seed, askanna), expected in pairs.items():
        assert values[seed] == values[askanna] == expected
    assert values["TZ"] == "Europe/Amsterdam"
    assert values["LANG"] == values["LC_ALL"] == "C.UTF-8"
    assert values["PYTHONUNBUFFERED"] == "1"


def test_builtin_payload_variables_are_empty_without_payload() -> None:
    values = _builtins(payload_id=None)
    for name in ("PAYLOAD_SUUID", "AA_PAYLOAD_SUUID", "PAYLOAD_PATH", "AA_PAYLOAD_PATH"):
        assert values[name] == ""


def test_resolve_precedence_each_level_beats_the_one_below() -> None:
    layers = ["project", "env_file", "cli", "payload", "builtins"]
    for top, layer in enumerate(layers):
        given = {name: {"X": name} for name in layers[: top + 1]}
        assert resolve(**given).as_dict()["X"] == layer  # type: ignore[arg-type]
    assert resolve(cli={"X": "var"}, secrets={"X": "secret"}).as_dict()["X"] == "secret"
    assert resolve(secrets={"X": "secret"}, payload={"X": "payload"}).as_dict()["X"] == "payload"


def test_resolve_builtins_win_over_payload_and_order_is_stable() -> None:
    variables = resolve(
        project={"MODEL": "p", "B": "1"},
        payload={"JOBRUN_SUUID": "forged", "MODEL": "payload"},
        builtins=_builtins(),
    )
    values = variables.as_dict()
    assert values["JOBRUN_SUUID"] == "RUN0-0000-0000-0001"
    assert values["MODEL"] == "payload"
    names = [name for name, _ in variables.values]
    assert names == sorted(names)


def test_secret_names_and_masked() -> None:
    variables = resolve(
        project={"MODEL": "linear", "API_KEY": "k-123456", "NOTE": "uses hunter2-pw inside"},
        secrets={"DB_URL": "hunter2-pw"},
        builtins={"AA_TOKEN": ""},
    )
    assert variables.secret_names == {"DB_URL", "API_KEY", "AA_TOKEN"}
    masked = variables.masked()
    assert masked == {
        "AA_TOKEN": MASK,
        "API_KEY": MASK,
        "DB_URL": MASK,
        "MODEL": "linear",
        "NOTE": f"uses {MASK} inside",  # a secret value inside another value is masked as well
    }
    assert set(variables.secret_values()) == {"k-123456", "hunter2-pw"}  # the empty one is left out
    assert variables.as_dict()["DB_URL"] == "hunter2-pw"  # the container gets the real value


def test_a_payload_value_for_a_secret_name_stays_secret() -> None:
    variables = resolve(secrets={"DB_URL": "hunter2-pw"}, payload={"DB_URL": "from-payload"})
    assert variables.masked()["DB_URL"] == MASK
    assert variables.masker().mask("connect from-payload") == f"connect {MASK}"


# -- render ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["{{ A }}", "{{A}}", "{{   A\t}}", "{{\nA\n}}", "${A}", "x-{{ A }}-${A}-y", "{{{ A }}}"]
)
def test_render_both_syntaxes(text: str) -> None:
    expected = text.replace("{{{ A }}}", "{v}")
    for ref in ("{{ A }}", "{{A}}", "{{   A\t}}", "{{\nA\n}}", "${A}"):
        expected = expected.replace(ref, "v")
    assert render(text, {"A": "v"}, where="output.result") == expected


def test_render_is_one_pass() -> None:
    values = {"A": "${B} and {{ B }}", "B": "b"}
    assert render("{{ A }}/${A}", values, where="x") == "${B} and {{ B }}/${B} and {{ B }}"


def test_render_leaves_other_text_alone() -> None:
    assert render("$A ${A:-x} {{.Id}} {{ a b }} {{ A", {"A": "v"}, where="x") == "$A ${A:-x} {{.Id}} {{ a b }} {{ A"


@pytest.mark.parametrize("text", ["models/{{ MODLE }}.pkl", "img:${MODLE}"])
def test_render_unknown_variable(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        render(text, {"MODEL": "x", "PAYLOAD_PATH": ""}, where="job 'train' output.result")
    assert str(caught.value).startswith("job 'train' output.result: unknown variable ")
    assert "MODLE" in str(caught.value)
    assert caught.value.hint is not None and "MODEL" in caught.value.hint


def test_template_names() -> None:
    assert template_names("a {{ X }} ${Y} {{Z}} $W {{.Id}} ${V:-d}") == {"X", "Y", "Z"}


# -- render_command ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("echo {{ X }}", 'echo "${X}"'),
        ("echo {{X}}", 'echo "${X}"'),
        ('echo "a {{ X }} b"', 'echo "a ${X} b"'),
        ("echo 'a {{ X }} b'", "echo 'a '\"${X}\"' b'"),
        ("echo \\'{{ X }}", 'echo \\\'"${X}"'),
        ('echo "it\'s {{ X }}"', 'echo "it\'s ${X}"'),
        ("echo '\\' {{ X }}", "echo '\\' \"${X}\""),
        ('echo "$(printf %s {{ X }})"', 'echo "$(printf %s "${X}")"'),
        ("echo `printf %s {{ X }}`", 'echo `printf %s "${X}"`'),
        ("echo ${X} $X", "echo ${X} $X"),
        ("echo $(( {{ X }} + 1 )) {{ X }}", 'echo $(( ${X} + 1 )) "${X}"'),
        ('echo "$(( ({{ X }} + 1) * 2 ))" {{ X }}', 'echo "$(( (${X} + 1) * 2 ))" "${X}"'),
        ("echo hi # it's {{ X }}\necho {{ X }}", 'echo hi # it\'s {{ X }}\necho "${X}"'),
    ],
)
def test_render_command_text_by_quoting_context(command: str, expected: str) -> None:
    assert render_command(command, {"X"}, where="c") == (expected, ())


def test_render_command_unknown_variable() -> None:
    with pytest.raises(ConfigError, match=r"^job 'train' command 1: unknown variable \{\{ MODLE \}\}"):
        render_command("python x.py {{ MODLE }}", {"MODEL"}, where="job 'train' command 1")


def test_render_command_leaves_unknown_dollar_names_to_the_shell() -> None:
    assert render_command("export OUT=1; echo ${OUT}", set(), where="c") == ("export OUT=1; echo ${OUT}", ())


@pytest.mark.parametrize("ref", ["{{.Id}}", "{{ a b }}", "{{ X", "{{ 1X }}"])
def test_render_command_leaves_non_references_with_a_warning(ref: str) -> None:
    command = f"docker inspect -f '{ref}' c"
    text, warnings = render_command(command, {"X"}, where="job 'j' command 2")
    assert text == command
    assert len(warnings) == 1 and warnings[0].startswith("job 'j' command 2: ")


HOSTILE = [
    "$(touch {marker})",
    "`touch {marker}`",
    '"; touch {marker} #',
    "'; touch {marker} #",
    "a\nb; touch {marker}\n",
    "--option",
    "two  words *",
    "*",
    "",
    "\\'\"\\\\ ${HOME} $HOME {{ Y }}",
    "\t lead and trail \t",
]

ARGV = "import json, sys; sys.stdout.write(json.dumps(sys.argv[1:]))"
# The job's script runs in the image's sh: dash (Debian), busybox ash (Alpine) or bash.
SHELLS = [["/bin/sh"]] + [shell for shell in (["bash", "--posix"], ["busybox", "sh"]) if shutil.which(shell[0])]


@pytest.mark.parametrize("shell", SHELLS, ids=lambda shell: shell[0])
@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(
    ("template", "wrap"),
    [
        ("{{ X }}", "{}"),
        ("{{X}}", "{}"),
        ('"{{ X }}"', "{}"),
        ('"pre {{ X }} post"', "pre {} post"),
        ("'{{ X }}'", "{}"),
        ("'pre {{ X }} post'", "pre {} post"),
        ("pre-{{ X }}-post", "pre-{}-post"),
        ('"$(cat <<EOF\nx\nEOF\n)"{{ X }}', "x{}"),
        ("'it'\\''s' {{ X }}", None),
        ('"`printf %s {{ X }}`"', "$()"),
        ("\"$(printf %s '{{ X }}')\"", "$()"),
    ],
)
def test_render_command_runs_in_sh_with_the_exact_value(
    tmp_path: Path, value: str, template: str, wrap: str | None, shell: list[str]
) -> None:
    marker = tmp_path / "pwned"
    value = value.replace("{marker}", shlex.quote(str(marker)))
    (tmp_path / "file-a").touch()  # a glob in the value would match these
    (tmp_path / "file-b").touch()
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(ARGV)} {template}"
    text, warnings = render_command(command, {"X"}, where="c")
    assert warnings == ()
    assert value not in text or value in ("", "*", "--option")
    env = {"X": value, "Y": "expanded?", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    done = subprocess.run([*shell, "-c", text], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout)
    if wrap is None:
        expected = ["it's", value]
    elif wrap == "$()":  # command substitution drops trailing newlines, whatever the quoting
        expected = [value.rstrip("\n")]
    else:
        expected = [wrap.replace("{}", value)]
    assert argv == expected
    assert not marker.exists()


@pytest.mark.parametrize("shell", SHELLS, ids=lambda shell: shell[0])
def test_render_command_in_arithmetic(shell: list[str]) -> None:
    text, _ = render_command("echo $(( ({{ N }} + 1) * 2 )) {{ N }}", {"N"}, where="c")
    done = subprocess.run([*shell, "-c", text], env={"N": "20"}, capture_output=True, text=True)
    assert done.stdout == "42 20\n", done.stderr


def test_render_command_comment_quote_does_not_confuse_the_next_line(tmp_path: Path) -> None:
    command = f"# don't panic\n{shlex.quote(sys.executable)} -c {shlex.quote(ARGV)} {{{{ X }}}}"
    text, _ = render_command(command, {"X"}, where="c")
    done = subprocess.run(["/bin/sh", "-c", text], env={"X": "a b"}, capture_output=True, text=True)
    assert json.loads(done.stdout) == ["a b"]


# -- Masker ------------------------------------------------------------------------------------------


def test_masker_one_shot() -> None:
    masker = Masker(["s3cr3t-value", "token1234"])
    text = "a s3cr3t-value b token1234 c s3cr3t-value"
    assert masker.mask(text) == f"a {MASK} b {MASK} c {MASK}"
    assert masker.mask("nothing here") == "nothing here"


def test_masker_overlapping_secrets_mask_fully() -> None:
    masker = Masker(["secret", "secret-long", "abcdefgh", "efghijkl"])
    assert masker.mask("x secret-long y") == f"x {MASK} y"
    assert masker.mask("x secret y") == f"x {MASK} y"
    masked = masker.mask("x abcdefghijkl y")  # the two overlap: no character of either shows
    assert masked == f"x {MASK} y"
    assert masker.mask("abcdefghabcdefgh") == MASK + MASK


def _stream(masker: Masker, chunks: list[str]) -> str:
    return "".join(masker.feed(chunk) for chunk in chunks) + masker.flush()


def test_masker_secret_split_across_two_chunks_at_every_position() -> None:
    secret = "hunter2-secret"
    text = f"before {secret} after"
    for cut in range(len(text) + 1):
        masker = Masker([secret])
        assert _stream(masker, [text[:cut], text[cut:]]) == f"before {MASK} after", cut


def test_masker_secret_split_across_three_chunks_at_every_position() -> None:
    secret = "hunter2-secret"
    start = len("before ")
    text = f"before {secret} after"
    for first in range(start, start + len(secret) + 1):
        for second in range(first, start + len(secret) + 1):
            masker = Masker([secret])
            chunks = [text[:first], text[first:second], text[second:]]
            assert _stream(masker, chunks) == f"before {MASK} after", (first, second)


def test_masker_character_by_character_with_overlaps() -> None:
    masker = Masker(["abcdefgh", "efghijkl", "ghij-longer-one"])
    text = "x abcdefghijkl y ghij-longer-one z abcd efgh"
    assert _stream(masker, list(text)) == masker.mask(text) == f"x {MASK} y {MASK} z abcd efgh"


def test_masker_stream_equals_one_shot_on_random_splits() -> None:
    rng = random.Random(7)
    secrets = ["abab", "babba", "abba-abba", "xyzxyz", "zzzz"]
    for _ in range(500):
        text = "".join(rng.choice("abxyz-") for _ in range(rng.randint(0, 60)))
        text = text.replace("-", rng.choice(secrets))
        cuts = sorted(rng.randint(0, len(text)) for _ in range(rng.randint(0, 4)))
        chunks = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        masker = Masker(secrets)
        assert _stream(masker, chunks) == masker.mask(text), (text, cuts)
        assert not any(s in masker.mask(text) for s in secrets)


def test_masker_holds_back_only_what_could_start_a_secret() -> None:
    masker = Masker(["topsecret"])
    assert masker.feed("hello world\n") == "hello world\n"  # nothing held: no secret starts so
    assert masker.feed("value: top") == "value: "  # "top" may be the start of the secret
    assert masker.feed("ping") == "topping"
    assert masker.feed("x tops") == "x "
    assert masker.feed("ecret!") == f"{MASK}!"
    assert masker.feed("and top") == "and "
    assert masker.flush() == "top"
    assert masker.flush() == ""


def test_masker_hold_back_is_bounded() -> None:
    masker = Masker(["aaaaaaaaaa"])
    emitted = masker.feed("a" * 9)
    assert emitted == ""
    # A run of a's is overlapping copies of the secret: one mask, emitted as soon as it starts.
    assert masker.feed("b" + "a" * 100) == "a" * 9 + "b" + MASK
    assert masker.feed("a" * 5 + "c") == "c"  # still inside the same mask
    assert masker.flush() == ""


def test_masker_without_secrets_is_a_pass_through() -> None:
    masker = Masker([])
    chunk = "anything " * 10
    assert masker.feed(chunk) is chunk
    assert masker.flush() == ""
    assert Masker(["", "ab"]).feed("ab abc") == "ab abc"


def test_masker_short_secrets_are_reported_not_masked() -> None:
    masker = Masker(["abc", "", "1", "abcd", "abc"])
    assert masker.too_short == ("abc", "1")
    assert masker.mask("abc abcd 1") == f"abc {MASK} 1"


def test_masker_multi_line_secret_masked_whole_and_by_line() -> None:
    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkq\nab\n-----END KEY-----"
    masker = Masker([key])
    assert masker.mask(f"key:\n{key}\nend") == f"key:\n{MASK}\nend"
    assert masker.mask("line MIIEvQIBADANBgkq only") == f"line {MASK} only"
    assert masker.mask("ab stays") == "ab stays"  # a line too short to mask on its own
    crlf = key.replace("\n", "\r\n")
    assert "MIIEvQIBADANBgkq" not in Masker([crlf]).mask(f"x {crlf} y")


def test_masker_is_fast_on_big_logs() -> None:
    masker = Masker(["hunter2-secret", "ghp_0123456789abcdef", "AKIA0000EXAMPLE"])
    line = "INFO 2024-01-01 12:00:00 epoch 12 loss=0.1234 acc=0.98 lr=1e-4 training step ok\n"
    chunk = line * (64 * 1024 // len(line)) + "token ghp_0123456789abcdef used\n"
    start = time.perf_counter()
    out = [masker.feed(chunk) for _ in range(320)]  # ~20 MB
    out.append(masker.flush())
    elapsed = time.perf_counter() - start
    assert "ghp_" not in "".join(out)
    assert elapsed < 5.0


# -- hostile values (docs/hostile-inputs.md: IN-06) ----------------------------------------


def test_render_command_reports_names_used_in_arithmetic() -> None:
    found: set[str] = set()
    command = 'echo $(( {{ A }} + 1 )) "$(( $(echo {{ B }}) ))" {{ C }} "{{ D }}"'
    render_command(command, {"A", "B", "C", "D"}, where="c", arithmetic=found)
    assert found == {"A", "B"}


@pytest.mark.parametrize("value", ["42", " -3 ", "0x1f", "+7", ""])
def test_check_arithmetic_accepts_whole_numbers(value: str) -> None:
    variables_module.check_arithmetic({"N"}, resolve(cli={"N": value}), where="job 'j'")


@pytest.mark.parametrize("value", ["a[$(id)]", "1.5", "x", "1+1", "$(id)", "1 2"])
def test_check_arithmetic_refuses_anything_else(value: str) -> None:
    with pytest.raises(ConfigError, match=r"\{\{ N \}\} stands in \$\(\( \)\) arithmetic"):
        variables_module.check_arithmetic({"N"}, resolve(cli={"N": value}), where="job 'j'")
    with pytest.raises(ConfigError, match=r"its value \*\*\* is not"):  # a secret's value is not shown
        variables_module.check_arithmetic({"N"}, resolve(secrets={"N": value}), where="job 'j'")
