"""tracking.py: the JSON lines a job tracks, parsed line by line into a bounded summary."""

from __future__ import annotations

import io
import json
import tracemalloc

import pytest
from anna_run.tracking import Limits, hide_secret_names, limits_from_env, parse_line, read_tracking
from anna_run.variables import Masker


def read(text: str | bytes, kind: str = "metrics", limits: Limits | None = None, secrets=()):
    data = text.encode() if isinstance(text, str) else text
    stored: list[str] = []
    name = f"{kind}.jsonl"
    summary = read_tracking(io.BytesIO(data), kind, name, limits or Limits(), stored.append, Masker(secrets))
    return summary, stored


def test_one_entry_a_line_sums_up_last_min_max_count() -> None:
    lines = [{"name": "accuracy", "value": v, "label": {"fold": i}} for i, v in enumerate((0.81, 0.93, 0.9))]
    summary, stored = read("".join(json.dumps(line) + "\n" for line in lines))
    assert summary.stats == {"accuracy": {"last": 0.9, "min": 0.81, "max": 0.93, "count": 3}}
    assert summary.warnings == []
    assert [json.loads(s) for s in stored] == lines  # stored whole, labels kept


def test_several_entries_a_line_and_non_numeric_values() -> None:
    summary, _ = read('{"loss": 0.5, "stage": "warmup"}\n{"loss": 0.25, "stage": "done", "label": {"epoch": 2}}\n')
    assert summary.stats["loss"] == {"last": 0.25, "min": 0.25, "max": 0.5, "count": 2}
    assert summary.stats["stage"] == {"last": "done", "count": 2}  # no min/max of text


def test_booleans_and_nan_are_no_numbers() -> None:
    summary, _ = read('{"ok": true}\n{"loss": NaN}\n{"loss": 1}\n')
    assert summary.stats["ok"] == {"last": True, "count": 1}
    assert summary.stats["loss"] == {"last": 1, "min": 1, "max": 1, "count": 2}


def test_variables_keep_the_last_value_and_hide_secret_names() -> None:
    text = '{"name": "model", "value": "linear"}\n{"model": "tree", "API_KEY": "abc123", "db_password": 1}\n'
    summary, stored = read(text, kind="variables")
    assert summary.last == {"model": "tree", "API_KEY": "***", "db_password": "***"}
    assert json.loads(stored[1]) == {"model": "tree", "API_KEY": "***", "db_password": "***"}
    assert stored[0] == '{"name": "model", "value": "linear"}\n'  # untouched when nothing to hide


def test_secret_values_are_masked_in_the_stored_lines() -> None:
    summary, stored = read('{"name": "url", "value": "https://x:s3cret-pw@host"}\n', "variables", secrets=["s3cret-pw"])
    assert "s3cret-pw" not in "".join(stored) and "***" in stored[0]
    assert summary.last["url"] == "https://x:s3cret-pw@host"  # the record is masked as a whole by the Recorder


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"name": "a"}', "'a' has no value"),
        ('{"name": 3, "value": 1}', "name is not a non-empty string"),
        ('{"name": "a", "value": 1, "label": [1]}', "label is not an object of scalars"),
        ('{"name": "a", "value": 1, "label": {"x": {"y": 1}}}', "label is not an object of scalars"),
        ("{}", "no name and value"),
    ],
)
def test_bad_lines_are_named_by_number_and_the_rest_is_kept(line: str, why: str) -> None:
    summary, stored = read(f'{{"a": 1}}\n\n{line}\n{{"a": 2}}\n')
    assert summary.warnings == [f"metrics.jsonl line 3: {why}; ignored"]
    assert summary.stats["a"]["count"] == 2
    assert len(stored) == 3  # the bad line is stored too, as written


def test_parse_line_forms() -> None:
    assert parse_line('{"name": "a", "value": [1, 2], "label": {"k": null}}') == [("a", [1, 2])]
    assert parse_line('{"a": 1, "b": {"c": 2}, "label": {"k": 1}}') == [("a", 1), ("b", {"c": 2})]


def test_a_flood_of_bad_lines_is_summed_up_after_twenty() -> None:
    summary, _ = read("x\n" * 50)
    assert len(summary.warnings) == 21
    assert summary.warnings[-1] == "metrics.jsonl: 30 more bad line(s) not listed"


def test_cut_at_the_line_bound() -> None:
    summary, stored = read('{"a": 1}\n' * 10, limits=Limits(lines=4))
    assert len(stored) == 4 and summary.stats["a"]["count"] == 4
    assert summary.warnings == ["metrics.jsonl cut at 4 lines: line 5 and after not kept"]
    exact, _ = read('{"a": 1}\n' * 4, limits=Limits(lines=4))
    assert exact.warnings == []  # exactly the bound: nothing cut


def test_cut_at_the_byte_bound() -> None:
    summary, stored = read('{"a": 1}\n' * 10, limits=Limits(bytes=40))  # 9 bytes a line
    assert len(stored) == 4
    assert summary.warnings == ["metrics.jsonl cut at 40 bytes: line 5 and after not kept"]


def test_an_over_long_line_is_skipped_without_being_held() -> None:
    text = '{"a": 1}\n' + '{"a": "' + "x" * 5000 + '"}\n' + '{"a": 3}\n'
    summary, stored = read(text, limits=Limits(line_bytes=100))
    assert summary.warnings == ["metrics.jsonl line 2: longer than 100 bytes; ignored"]
    assert summary.stats["a"] == {"last": 3, "min": 1, "max": 3, "count": 2}
    assert len(stored) == 2


def test_names_are_bounded() -> None:
    summary, _ = read("".join(f'{{"m{i}": {i}}}\n' for i in range(10)) + '{"m0": 5}\n', limits=Limits(names=3))
    assert sorted(summary.stats) == ["m0", "m1", "m2"] and summary.stats["m0"]["count"] == 2
    assert summary.warnings == [
        "metrics.jsonl: more than 3 names; 7 value(s) of the others left out of the summary "
        "(the stored lines keep them)"
    ]


def test_not_utf8_is_a_bad_line() -> None:
    summary, _ = read(b'\xff\xfe\n{"a": 1}\n')
    assert summary.warnings == ["metrics.jsonl line 1: not UTF-8; ignored"]


def test_memory_stays_flat_over_a_large_file() -> None:
    class Lines(io.RawIOBase):  # 200,000 lines made as they are read: never held whole
        def __init__(self) -> None:
            self.n = 0
            self.rest = b""

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            while len(self.rest) < len(buffer) and self.n < 200_000:
                self.rest += b'{"name": "loss", "value": %d, "label": {"step": %d}}\n' % (self.n, self.n)
                self.n += 1
            n = min(len(buffer), len(self.rest))
            buffer[:n], self.rest = self.rest[:n], self.rest[n:]
            return n

    written = 0

    def store(line: str) -> None:
        nonlocal written
        written += len(line)

    tracemalloc.start()
    summary = read_tracking(io.BufferedReader(Lines()), "metrics", "m", Limits(lines=10**6), store, Masker([]))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert summary.stats["loss"] == {"last": 199_999, "min": 0, "max": 199_999, "count": 200_000}
    assert written > 10_000_000 and peak < 2_000_000


def test_limits_from_the_environment() -> None:
    assert limits_from_env({}) == Limits()
    env = {"ANNA_RUN_TRACKING_MAX_LINES": "5", "ANNA_RUN_TRACKING_MAX_BYTES": "no", "ANNA_RUN_TRACKING_MAX_NAMES": "0"}
    assert limits_from_env(env) == Limits(lines=5)


def test_hide_secret_names_leaves_other_lines_alone() -> None:
    assert hide_secret_names("not json") == "not json"
    assert hide_secret_names('{"name": "token", "value": "x"}') == '{"name": "token", "value": "***"}'
    assert hide_secret_names('{"name": "tokens_seen", "value": 3}') == '{"name": "tokens_seen", "value": "***"}'
