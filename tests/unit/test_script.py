"""The generated sh script, run for real by /bin/sh, and the status-file parser."""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from anna_run.script import STATUS_PATH, WORKDIR, CommandStatus, build_script, parse_status, sh_quote

# -- sh_quote --------------------------------------------------------------------------------------

AWKWARD = [
    "",
    "plain",
    "with space",
    "'",
    "''",
    "it's",
    "'\"'\"'",
    '"double"',
    "\\",
    "back\\slash\\",
    "$HOME",
    "${HOME}",
    "$(echo pwned)",
    "`echo pwned`",
    "line1\nline2\n",
    "\n",
    "tab\there",
    "; rm -rf / ; echo",
    "a && b || c | d > e < f &",
    "*",
    "?[a]",
    "~",
    "#comment",
    "-n",
    "%s %d %%",
    "héllo wörld ✓ 日本語 🎉",
    "'$(`\\\n\"",
]


def _printf(quoted: str) -> bytes:
    proc = subprocess.run(["/bin/sh", "-c", f"printf %s {quoted}"], capture_output=True, check=True)
    return proc.stdout


@pytest.mark.parametrize("text", AWKWARD)
def test_sh_quote_round_trips_through_sh(text: str) -> None:
    assert _printf(sh_quote(text)) == text.encode()


def test_sh_quote_round_trips_random_strings() -> None:
    rng = random.Random(20240601)
    alphabet = "'\"\\$`(){}[]*?~#&|;<> \t\nabcXYZ019-=%!é✓"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(300)]
    script = "printf '%s\\000' " + " ".join(sh_quote(t) for t in texts)
    proc = subprocess.run(["/bin/sh", "-c", script], capture_output=True, check=True)
    assert proc.stdout.split(b"\0")[:-1] == [t.encode() for t in texts]


def test_sh_quote_is_one_single_quoted_word() -> None:
    assert sh_quote("abc") == "'abc'"
    assert sh_quote("it's") == "'it'\\''s'"


# -- build_script, run by the real /bin/sh ---------------------------------------------------------


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    status: str
    workdir: Path


def _script_file(tmp_path: Path, commands: list[str], echoes: list[str] | None = None) -> tuple[Path, Path, Path]:
    workdir = tmp_path / "code"
    workdir.mkdir(exist_ok=True)
    status = tmp_path / "status"
    status.write_text("")
    text = build_script(commands, commands if echoes is None else echoes)
    assert STATUS_PATH in text and f"cd {WORKDIR}" in text
    text = text.replace(STATUS_PATH, str(status)).replace(f"cd {WORKDIR} ", f"cd {workdir} ")
    script = tmp_path / "script.sh"
    script.write_text(text)
    return script, workdir, status


def run_script(tmp_path: Path, commands: list[str], echoes: list[str] | None = None, **env: str) -> Ran:
    script, workdir, status = _script_file(tmp_path, commands, echoes)
    proc = subprocess.run(
        ["/bin/sh", str(script)],
        capture_output=True,
        timeout=10,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    return Ran(
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
        status.read_text(),
        workdir,
    )


def _marks(status: str) -> list[tuple[str, ...]]:
    """The status lines as (kind, index[, exit code]), without the clock values."""
    out = []
    for line in status.splitlines():
        fields = line.split()
        out.append((fields[0], fields[1], *fields[3:]))
    return out


def test_commands_run_in_order_with_echo_lines(tmp_path: Path) -> None:
    ran = run_script(tmp_path, ["echo one", "echo two", "echo three"])
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "$ echo one\none\n$ echo two\ntwo\n$ echo three\nthree\n"


def test_echo_lines_are_the_given_echoes_not_the_commands(tmp_path: Path) -> None:
    ran = run_script(
        tmp_path,
        ['echo "$TOKEN"', "echo done"],
        ["echo ***", "echo $(touch pwned) `touch pwned2` 'x"],
        TOKEN="hunter22",
    )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines == ["$ echo ***", "hunter22", "$ echo $(touch pwned) `touch pwned2` 'x", "done"]
    # the echo is printed, never evaluated
    assert not (ran.workdir / "pwned").exists() and not (ran.workdir / "pwned2").exists()


def test_one_shell_cd_and_export_carry_over(tmp_path: Path) -> None:
    ran = run_script(
        tmp_path,
        [
            "mkdir -p sub/deeper",
            "cd sub",
            "export MODEL=linear",
            "pwd",
            'echo "model=$MODEL"',
            "cd deeper && pwd",
        ],
    )
    assert ran.returncode == 0, ran.stderr
    out = [line for line in ran.stdout.splitlines() if not line.startswith("$ ")]
    assert out == [str(ran.workdir / "sub"), "model=linear", str(ran.workdir / "sub" / "deeper")]


def test_script_starts_in_the_workdir(tmp_path: Path) -> None:
    ran = run_script(tmp_path, ["pwd"])
    assert ran.stdout.splitlines()[1] == str(ran.workdir)


def test_stops_at_first_failure_with_its_exit_code(tmp_path: Path) -> None:
    ran = run_script(tmp_path, ["echo before", "sh -c 'exit 7'", "echo never"])
    assert ran.returncode == 7
    assert "before" in ran.stdout and "never" not in ran.stdout
    assert "$ echo never" not in ran.stdout
    assert _marks(ran.status) == [("start", "0"), ("end", "0", "0"), ("start", "1"), ("end", "1", "7")]


def test_failing_first_command(tmp_path: Path) -> None:
    ran = run_script(tmp_path, ["false", "echo never"])
    assert ran.returncode == 1
    assert "never" not in ran.stdout


def test_stdin_is_dev_null(tmp_path: Path) -> None:
    script, _, _ = _script_file(tmp_path, ["cat", "echo after-cat"])
    out_file = tmp_path / "out"
    with open(out_file, "wb") as out:
        proc = subprocess.Popen(["/bin/sh", str(script)], stdin=subprocess.PIPE, stdout=out, stderr=out)
        assert proc.stdin is not None
        try:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(b"data from the caller\n")
                proc.stdin.flush()
            # stdin stays open: only /dev/null lets `cat` return
            rc = proc.wait(timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
    assert rc == 0
    text = out_file.read_text()
    assert "data from the caller" not in text
    assert text == "$ cat\n$ echo after-cat\nafter-cat\n"


def test_read_gets_nothing(tmp_path: Path) -> None:
    ran = run_script(tmp_path, ["read line || echo eof"])
    assert ran.returncode == 0
    assert "eof" in ran.stdout


@pytest.mark.parametrize(
    "broken",
    ["echo 'unclosed", 'echo "unclosed', "echo `unclosed", "echo $(unclosed", "if true; then echo x"],
)
def test_unclosed_quote_does_not_swallow_the_rest(tmp_path: Path, broken: str) -> None:
    ran = run_script(tmp_path, ["echo first", broken, "echo third", "touch third-ran"])
    assert ran.returncode != 0
    assert "first" in ran.stdout
    assert "$ " + broken in ran.stdout
    assert "third" not in ran.stdout.replace("$ echo third", "")
    assert not (ran.workdir / "third-ran").exists()
    marks = _marks(ran.status)
    assert marks[:3] == [("start", "0"), ("end", "0", "0"), ("start", "1")]
    assert ("start", "2") not in marks and ("start", "3") not in marks
    statuses = parse_status(ran.status, 4, ran.returncode)
    assert [s.exit_code for s in statuses] == [0, ran.returncode, None, None]


def test_trailing_backslash_does_not_join_the_next_command(tmp_path: Path) -> None:
    ran = run_script(tmp_path, ["echo a \\", "echo b"])
    assert ran.returncode == 0, ran.stderr
    # dash keeps a backslash at the end of the eval'd text literally; the next command runs apart
    assert ran.stdout.splitlines() == ["$ echo a \\", "a \\", "$ echo b", "b"]


def test_multi_line_command_runs_whole(tmp_path: Path) -> None:
    ran = run_script(tmp_path, ["for i in 1 2 3; do\n  echo n$i\ndone", "echo end"])
    assert ran.returncode == 0, ran.stderr
    assert [x for x in ran.stdout.splitlines() if x.startswith(("n", "end"))] == ["n1", "n2", "n3", "end"]


def test_status_file_gets_start_and_end_lines(tmp_path: Path) -> None:
    ran = run_script(tmp_path, ["true", "echo x", "sleep 0.05"])
    assert ran.returncode == 0
    lines = ran.status.splitlines()
    assert len(lines) == 6
    assert _marks(ran.status) == [
        ("start", "0"),
        ("end", "0", "0"),
        ("start", "1"),
        ("end", "1", "0"),
        ("start", "2"),
        ("end", "2", "0"),
    ]
    for line in lines:
        float(line.split()[2])  # the clock (uptime) is a number
    statuses = parse_status(ran.status, 3, ran.returncode)
    assert [s.exit_code for s in statuses] == [0, 0, 0]
    assert all(s.duration_s is not None and s.duration_s >= 0 for s in statuses)


def test_output_of_a_job_cannot_fake_status(tmp_path: Path) -> None:
    """The job's printed output goes to stdout, never to the status file."""
    ran = run_script(tmp_path, ["echo 'end 0 1.0 0'", "echo 'start 5 1.0'"])
    assert ran.returncode == 0
    assert _marks(ran.status) == [("start", "0"), ("end", "0", "0"), ("start", "1"), ("end", "1", "0")]


def test_shell_exit_inside_a_command(tmp_path: Path) -> None:
    ran = run_script(tmp_path, ["echo a", "exit 3", "echo never"])
    assert ran.returncode == 3
    assert _marks(ran.status) == [("start", "0"), ("end", "0", "0"), ("start", "1")]
    statuses = parse_status(ran.status, 3, ran.returncode)
    assert [s.exit_code for s in statuses] == [0, 3, None]
    assert statuses[1].duration_s is None


SHELLS = [
    pytest.param(shell, id=shell[-1].rsplit("/", 1)[-1])
    for shell in (["/bin/sh"], ["/usr/bin/busybox", "sh"], ["/usr/bin/bash"])
    if Path(shell[0]).exists()
]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("last", "code"), [("echo done", 0), ("false", 1), ("exit 3", 3)], ids=["ends", "fails", "exits"]
)
def test_a_shell_that_leads_its_group_ends_what_the_job_left_behind(
    tmp_path: Path, shell: list[str], last: str, code: int
) -> None:
    """The container's init makes the shell a group leader: at its end, whatever the job left
    running in the group gets SIGTERM (JB-01: a fork bomb would otherwise keep the container
    alive until the timeout). The shell's own exit code is kept."""
    script, workdir, _ = _script_file(tmp_path, ["sleep 60 & echo $! >bg.pid", last])
    started = time.monotonic()
    proc = subprocess.run(  # the sleep holds stdout: without the reap this waits 60 s
        [*shell, str(script)], capture_output=True, timeout=30, start_new_session=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert proc.returncode == code, proc.stderr
    assert time.monotonic() - started < 20
    pid = int((workdir / "bg.pid").read_text())
    assert _gone_within(pid, 5)


@pytest.mark.parametrize("shell", SHELLS)
def test_a_shell_that_does_not_lead_its_group_signals_nothing(tmp_path: Path, shell: list[str]) -> None:
    """Run where the shell is not a group leader (here, in the test's own group), the script
    must leave every other process alone: it never signals a group it does not lead."""
    script, workdir, _ = _script_file(tmp_path, ["sleep 60 >/dev/null 2>&1 & echo $! >bg.pid"])
    proc = subprocess.run([*shell, str(script)], capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    pid = int((workdir / "bg.pid").read_text())
    try:
        assert proc.returncode == 0, proc.stderr
        time.sleep(0.3)
        assert _alive(pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_missing_workdir_exits_125_before_any_command(tmp_path: Path) -> None:
    script, workdir, status = _script_file(tmp_path, ["touch ran"])
    workdir.rmdir()
    proc = subprocess.run(["/bin/sh", str(script)], capture_output=True, timeout=10)
    assert proc.returncode == 125
    assert status.read_text() == ""
    assert parse_status("", 1, 125) == [CommandStatus(0, None, None)]


def test_no_commands(tmp_path: Path) -> None:
    ran = run_script(tmp_path, [])
    assert ran.returncode == 0 and ran.stdout == "" and ran.status == ""


def test_build_script_needs_one_echo_per_command() -> None:
    with pytest.raises(ValueError):
        build_script(["a", "b"], ["a"])


# -- parse_status ----------------------------------------------------------------------------------


def test_the_only_command_ending_the_shell_takes_the_engines_run_time() -> None:
    text = "start 0 10.00 \n"  # `exit 4`: the shell ended before the end mark
    assert parse_status(text, 1, 4, runtime_s=2.25) == [CommandStatus(0, 4, 2.25)]
    assert parse_status(text, 1, 4) == [CommandStatus(0, 4, None)]  # an engine that did not say
    assert parse_status("", 1, 125, runtime_s=0.1) == [CommandStatus(0, None, None)]  # never started
    # With more commands the engine's run time covers them all: not one command's duration.
    two = "start 0 10.00 \nend 0 11.00 0\nstart 1 11.00 \n"
    assert parse_status(two, 2, 4, runtime_s=5.0) == [CommandStatus(0, 0, 1.0), CommandStatus(1, 4, None)]


def test_parse_all_succeeded() -> None:
    text = "start 0 10.00 \nend 0 11.50 0\nstart 1 11.50 \nend 1 12.00 0\n"
    assert parse_status(text, 2, 0) == [CommandStatus(0, 0, 1.5), CommandStatus(1, 0, 0.5)]


def test_parse_failure_in_the_middle() -> None:
    text = "start 0 1.0 \nend 0 2.0 0\nstart 1 2.0 \nend 1 4.25 3\n"
    assert parse_status(text, 3, 3) == [
        CommandStatus(0, 0, 1.0),
        CommandStatus(1, 3, 2.25),
        CommandStatus(2, None, None),
    ]


def test_parse_shell_exited_inside_a_command() -> None:
    text = "start 0 1.0 \nend 0 2.0 0\nstart 1 2.0 \n"
    assert parse_status(text, 3, 137) == [
        CommandStatus(0, 0, 1.0),
        CommandStatus(1, 137, None),
        CommandStatus(2, None, None),
    ]


def test_parse_empty_file_nothing_started() -> None:
    assert parse_status("", 3, 1) == [CommandStatus(i, None, None) for i in range(3)]


def test_parse_no_commands() -> None:
    assert parse_status("start 0 1 \nend 0 2 0\n", 0, 0) == []


def test_parse_forged_end_cannot_turn_failed_container_into_success() -> None:
    # the last command wrote a fake "end 1 ... 0" line and then the container ended with 5
    text = "start 0 1.0 \nend 0 2.0 0\nstart 1 2.0 \nend 1 3.0 0\n"
    statuses = parse_status(text, 2, 5)
    assert statuses[1].exit_code == 5
    assert statuses[0].exit_code == 0


def test_parse_forged_lines_are_ignored() -> None:
    text = "\n".join(
        [
            "start 0 1.0 ",
            "garbage",
            "",
            "   ",
            "start",
            "start 0",
            "start x 1.0",
            "start -1 1.0",
            "end -1 1.0 0",
            "start 99 1.0",
            "end 99 1.0 0",
            "start 2 1.0",  # index == count: out of range
            "end 0 2.0 notanumber",
            "end 0 2.0",
            "end 0 2.0 0 extra",
            "finish 0 2.0 0",
            "end 0 2.0 0",
            "start 1 2.0 ",
            "end 1 3.0 0",  # forged success of the last command
            "\x00\x01binary\xff",
        ]
    )
    statuses = parse_status(text, 2, 5)
    assert statuses == [CommandStatus(0, 0, 1.0), CommandStatus(1, 5, 1.0)]


def test_parse_forged_start_of_a_later_command_keeps_the_failure() -> None:
    # command 0 writes "start 1" itself, then fails with 4 (the real end line follows)
    text = "start 0 1.0 \nstart 1 1.5 \nend 0 2.0 4\n"
    statuses = parse_status(text, 2, 4)
    assert any(s.exit_code == 4 for s in statuses)
    assert all(s.exit_code != 0 for s in statuses if s.exit_code is not None)


def test_parse_first_start_wins() -> None:
    text = "start 0 1.0 \nstart 0 5.0 \nend 0 2.0 0\n"
    assert parse_status(text, 1, 0) == [CommandStatus(0, 0, 1.0)]


def test_parse_negative_exit_code_in_file() -> None:
    text = "start 0 1.0 \nend 0 2.0 -1\nstart 1 2.0 \n"
    assert parse_status(text, 2, 1)[0] == CommandStatus(0, -1, 1.0)


def test_parse_durations_none_when_missing_or_backwards() -> None:
    text = "start 0 5.0 \nend 0 4.0 0\nstart 1 4.0 \nend 1 bogus 0\nstart 2 6.0 \n"
    statuses = parse_status(text, 3, 9)
    assert [s.duration_s for s in statuses] == [None, None, None]
    assert [s.exit_code for s in statuses] == [0, 0, 9]


def test_parse_durations_are_rounded() -> None:
    text = "start 0 1.0001 \nend 0 2.3456 0\n"
    assert parse_status(text, 1, 0)[0].duration_s == 1.35


def test_parse_container_exit_unknown() -> None:
    text = "start 0 1.0 \nend 0 2.0 0\n"
    assert parse_status(text, 1, None) == [CommandStatus(0, None, 1.0)]


@pytest.mark.parametrize("index", ["²", "³", "١", "٣", "𝟙"])
def test_parse_unicode_digit_index_does_not_crash(index: str) -> None:
    """str.isdigit() is true for '²' but int('²') raises: the job can write such a line."""
    text = f"start 0 1.0 \nstart {index} 1.0 \nend {index} 2.0 0\nend 0 2.0 0\n"
    statuses = parse_status(text, 2, 0)
    assert statuses[0].exit_code == 0


@pytest.mark.parametrize("code", ["²", "-²", "٣"])
def test_parse_unicode_digit_exit_code_does_not_crash(code: str) -> None:
    text = f"start 0 1.0 \nend 0 2.0 {code}\nstart 1 2.0 \nend 1 3.0 0\n"
    statuses = parse_status(text, 2, 0)
    assert statuses[1].exit_code == 0


@pytest.mark.parametrize("stamp", ["nan", "inf", "-inf", "NaN", "infinity", "1e999"])
def test_parse_durations_are_finite(stamp: str) -> None:
    """A start line the job forged ahead of time (first start wins) must not give a NaN or
    infinite duration, which would end up as NaN/Infinity (not JSON) in run.json."""
    text = f"start 0 1.0 \nstart 1 {stamp} \nend 0 2.0 0\nstart 1 2.0 \nend 1 3.0 0\n"
    statuses = parse_status(text, 2, 0)
    for status in statuses:
        assert status.duration_s is None or math.isfinite(status.duration_s)
