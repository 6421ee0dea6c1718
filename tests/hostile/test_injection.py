"""Values are data, never code: in commands (every quoting context), in paths and in the image."""

from __future__ import annotations

import contextlib
import json

import pytest

from .support import BB, PY, assert_clean, assert_error, nothing_created, output_lines

# Each would run `touch /tmp/pwned` (or split, glob, comment out) if it were pasted into shell text.
HOSTILE = {
    "SUBST": "$(touch /tmp/pwned)",
    "BACKTICK": "`touch /tmp/pwned`",
    "SEMICOLON": "x; touch /tmp/pwned",
    "QUOTES": "'\"; touch /tmp/pwned; echo \"'",
    "NEWLINE": "x\ntouch /tmp/pwned",
    "HASH": "x # not a comment",
    "OPTION": "--output=/etc/passwd",
    "GLOB": "*",
    "SPACES": "a  b\tc",
}
# The contexts a {{ NAME }} can stand in: bare, double quotes, single quotes, $( ), backquotes.
CONTEXTS = (
    "printf '<%s>\\n' {{{{ {n} }}}}",
    'printf "<%s>\\n" "{{{{ {n} }}}}"',
    "printf '<%s>\\n' '{{{{ {n} }}}}'",
    "echo \"$(printf '<%s>' {{{{ {n} }}}})\"",
    "echo \"`printf '<%s>' {{{{ {n} }}}}`\"",
)
CANARY = "if [ -e /tmp/pwned ]; then echo PWNED; else echo clean; fi"


def _job(variables: str = "") -> str:
    commands = [context.format(n=name) for name in HOSTILE for context in CONTEXTS] + [CANARY]
    listed = "\n".join(f"    - {json.dumps(command)}" for command in commands)
    return f"environment: {{image: {BB}}}\n{variables}inj:\n  job:\n{listed}\n"


def _each_value_arrived_whole(res) -> None:
    out = "\n".join(output_lines(res.stdout)) + "\n"
    for name, value in HOSTILE.items():
        assert out.count(f"<{value}>\n") == len(CONTEXTS), (name, out)
    assert output_lines(res.stdout)[-1] == "clean"
    assert "PWNED" not in output_lines(res.stdout)


@pytest.mark.case("IN-01", exit=0)
def test_payload_values_in_every_quoting_context(env, busybox, case):
    env.project(_job())
    (env.root / "p.json").write_text(json.dumps(HOSTILE))
    res = env.run("inj", "--payload", "p.json", "--network", "none")
    assert_clean(res, case.exit)
    _each_value_arrived_whole(res)


@pytest.mark.case("IN-02", exit=0)
def test_variable_values_from_every_source(env, busybox, case):
    # askanna.yml variables
    yml = "variables:\n" + "".join(f"  {name}: {json.dumps(value)}\n" for name, value in HOSTILE.items())
    env.project(_job(yml))
    res = env.run("inj", "--network", "none")
    assert_clean(res, case.exit)
    _each_value_arrived_whole(res)
    # --env-file (double-quoted, with escapes) and --var
    env.project(_job())
    escaped = {k: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in HOSTILE.items()}
    (env.root / "vars.env").write_text("".join(f'{name}="{value}"\n' for name, value in escaped.items()))
    res = env.run("inj", "--env-file", "vars.env", "--network", "none")
    assert_clean(res, case.exit)
    _each_value_arrived_whole(res)
    res = env.run("inj", *(f"--var={name}={value}" for name, value in HOSTILE.items()), "--network", "none")
    assert_clean(res, case.exit)
    _each_value_arrived_whole(res)


@pytest.mark.case("IN-03", exit=0)
def test_values_in_output_paths_are_file_names(env, busybox, case):
    name = "a;b $(touch pwned) 'q' `id` #c --rm"
    env.project(f"""
        environment: {{image: {BB}}}
        out:
          job:
            - mkdir -p out && printf result > "out/{{{{ NAME }}}}" && printf art > "out/{{{{ NAME }}}}.bin"
            - ls
          output:
            result: "out/{{{{ NAME }}}}"
            artifact: ["out/${{NAME}}.bin"]
        """)
    res = env.run("out", "--var", f"NAME={name}", "--network", "none")
    assert_clean(res, case.exit)
    assert "pwned" not in output_lines(res.stdout)  # nothing ran: `ls` of /code shows no such file
    record = env.last()
    assert record["result"]["path"] == f"out/{name}"
    assert [a["path"] for a in record["artifacts"]] == [f"out/{name}.bin"]
    run_dir = env.run_dir(record["id"])
    assert (run_dir / "result" / "out" / name).read_text() == "result"
    assert (run_dir / "artifacts" / "out" / f"{name}.bin").read_text() == "art"


@pytest.mark.case("IN-04", exit=2)
def test_values_that_would_bend_an_output_path(env, ours, case):
    env.project(f"""
        environment: {{image: {BB}}}
        out:
          job: [echo hi]
          output: {{result: "out/{{{{ NAME }}}}"}}
        """)
    before = ours()
    for value, problem in (("x\n../../etc/passwd", "NUL or newline"), ("../../../etc/passwd", "contains '..'")):
        (env.root / "p.json").write_text(json.dumps({"NAME": value}))
        res = env.run("out", "--payload", "p.json", "--network", "none")
        assert_error(res, case.exit, "output.result", problem)
    nothing_created(env, ours, before)


@pytest.mark.case("IN-05", exit=2)
def test_values_in_the_image_name(env, ours, case):
    env.project("""
        environment: {image: "{{ IMAGE }}"}
        run: {job: [echo hi]}
        """)
    before = ours()
    for value in ("busybox;id", "$(id)", "busybox --privileged", "--privileged", "Busybox", "x\ny", "a@sha256:zz"):
        res = env.run("run", "run", "--var", f"IMAGE={value}", "--network", "none")
        assert_error(res, case.exit, "is not a valid image reference")
    res = env.run("run", "run", "--network", "none", "--image", "-v=/:/host")
    assert_error(res, case.exit, "is not a valid image reference")
    nothing_created(env, ours, before)
    assert not env.store.exists()  # refused before packaging: no store entry at all


@pytest.fixture(scope="session")
def bash_sh_image(api, python_image):
    """The python image with /bin/sh -> bash, as in Fedora, RHEL, UBI and Amazon Linux images."""
    name = "anna-run/test-bash-sh:latest"
    container = api.create_container(python_image, command=["ln", "-sf", "bash", "/bin/sh"], network_disabled=True)
    try:
        api.start(container)
        assert api.wait(container, timeout=60)["StatusCode"] == 0
        api.commit(container, repository="anna-run/test-bash-sh", tag="latest")
    finally:
        api.remove_container(container, force=True)
    yield name
    with contextlib.suppress(Exception):  # another suite sharing the engine may have removed it
        api.remove_image(name, force=True)


@pytest.mark.case("IN-06", exit=2)
def test_value_in_arithmetic_where_sh_is_bash(env, ours, bash_sh_image, case):
    env.project(f"""
        environment: {{image: "{bash_sh_image}"}}
        calc:
          job:
            - 'echo "shell=${{BASH_VERSION:+bash}} sum=$(( {{{{ N }}}} + 1 ))"'
            - if [ -e /tmp/pwned ]; then echo PWNED; else echo clean; fi
        """)
    before = ours()
    (env.root / "p.json").write_text(json.dumps({"N": "a[$(touch /tmp/pwned)]"}))
    res = env.run("calc", "--payload", "p.json", "--network", "none")
    assert_error(res, case.exit, "{{ N }} stands in $(( )) arithmetic", "not a whole number")
    nothing_created(env, ours, before)
    (env.root / "p.json").write_text(json.dumps({"N": "41"}))  # a number still works, under bash
    res = env.run("calc", "--payload", "p.json", "--network", "none")
    assert_clean(res, 0)
    assert output_lines(res.stdout) == ["shell=bash sum=42", "clean"]


@pytest.mark.case("IN-07", exit=0)
def test_option_shaped_values_stay_values(env, busybox, ours, case):
    env.project(f"""
        environment: {{image: {BB}}}
        opt:
          job:
            - printf '<%s>\\n' {{{{ A }}}} {{{{ B }}}} {{{{ C }}}}
            - ls -- {{{{ C }}}} 2>&1 || true
        """)
    before = ours()
    res = env.run(
        "opt", "--var", "A=--network=host", "--var", "B=--privileged", "--var", "C=-la /", "--network", "none"
    )
    assert_clean(res, case.exit)
    lines = output_lines(res.stdout)
    assert lines[:3] == ["<--network=host>", "<--privileged>", "<-la />"]
    assert "No such file or directory" in lines[3]  # one file name, not the options -l -a and /
    record = env.last()
    assert record["settings"]["network"] == "none"
    assert ours() == before  # and not kept, privileged or otherwise changed: removed as usual


@pytest.mark.case("IN-08", exit=0)
def test_job_name_with_shell_syntax(env, busybox, api, case):
    name = "x; touch /tmp/pwned $(id) `id` '\""
    env.project(f"environment: {{image: {BB}}}\n{json.dumps(name)}: {{job: ['echo \"[$AA_JOB_NAME]\"', ls /tmp]}}\n")
    res = env.run("run", name, "--network", "none", "--keep")
    assert_clean(res, case.exit)
    assert output_lines(res.stdout) == [f"[{name}]"]  # and /tmp is empty
    record = env.last()
    container = api.inspect_container(record["container"])
    assert container["Config"]["Labels"]["io.anna-run.job"] == name
    assert record["job"] == name


@pytest.mark.case("IN-09", exit=0)
def test_values_with_a_python_image_too(env, python_image, case):
    """The same values under Debian's dash, and handed on to python as argv: still whole."""
    env.project(f"""
        environment: {{image: "{PY}"}}
        py:
          job:
            - python -c 'import sys, json; print(json.dumps(sys.argv[1:]))' {{{{ A }}}} "{{{{ B }}}}" '{{{{ C }}}}'
            - {CANARY}
        """)
    values = {"A": HOSTILE["SUBST"], "B": HOSTILE["QUOTES"], "C": HOSTILE["NEWLINE"]}
    (env.root / "p.json").write_text(json.dumps(values))
    res = env.run("py", "--payload", "p.json", "--network", "none")
    assert_clean(res, case.exit)
    assert json.loads(output_lines(res.stdout)[0]) == list(values.values())
    assert output_lines(res.stdout)[-1] == "clean"
