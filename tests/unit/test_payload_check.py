"""The payload check (SPEC §2): JSON validation in memory and streamed, hashing, and payload variables."""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
import tracemalloc
from pathlib import Path

import anna_run.payload as payload_module
import pytest
from anna_run.errors import ConfigError
from anna_run.payload import PAYLOAD_SCAN_CHARS, read_payload


def _payload(tmp_path: Path, text: str | bytes, name: str = "payload.json") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


# Both validation paths: json in memory (the default) and ijson streaming (max_in_memory=0).
BOTH_PATHS = pytest.mark.parametrize("max_in_memory", [16 * 2**20, 0], ids=["memory", "stream"])


@BOTH_PATHS
def test_payload_values_by_type(tmp_path: Path, max_in_memory: int) -> None:
    text = (
        '{"s": "text with \\"quotes\\" and é", "i": 42, "f": 1.50, "e": 1e5, "neg": -0.0,'
        ' "t": true, "fa": false, "n": null, "o": {"k": [1, 2.50, "é\\n"], "x": {}},'
        ' "a": [true, null, "v"], "big": 123456789012345678901234567890}'
    )
    info = read_payload(_payload(tmp_path, text), max_in_memory=max_in_memory)
    assert info.is_object
    assert info.warnings == ()
    assert info.variables == (
        ("s", 'text with "quotes" and é'),
        ("i", "42"),
        ("f", "1.50"),
        ("e", "1e5"),
        ("neg", "-0.0"),
        ("t", "true"),
        ("fa", "false"),
        ("n", ""),
        ("o", '{"k":[1,2.50,"é\\n"],"x":{}}'),
        ("a", '[true,null,"v"]'),
        ("big", "123456789012345678901234567890"),
    )
    data = text.encode()
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)


def test_payload_duplicate_keys_last_wins(tmp_path: Path) -> None:
    info = read_payload(_payload(tmp_path, '{"a": 1, "b": 2, "a": 3}'))
    assert dict(info.variables) == {"a": "3", "b": "2"}


@BOTH_PATHS
@pytest.mark.parametrize("text", ['[1, 2, {"a": 1}]', '"a string"', "12.5", "null", "true"])
def test_payload_not_an_object_has_no_variables(tmp_path: Path, text: str, max_in_memory: int) -> None:
    info = read_payload(_payload(tmp_path, text), max_in_memory=max_in_memory)
    assert (info.is_object, info.variables, info.warnings) == (False, (), ())


def test_payload_bad_key_names_are_skipped_with_a_warning(tmp_path: Path) -> None:
    long_key = "K" * 129
    text = json.dumps({"": 1, "a=b": 2, "nul\u0000key": 3, long_key: 4, "K" * 128: 5, "ok-key.x": 6})
    info = read_payload(_payload(tmp_path, text))
    assert dict(info.variables) == {"K" * 128: "5", "ok-key.x": "6"}
    assert len(info.warnings) == 4
    joined = "\n".join(info.warnings)
    assert "''" in joined and "a=b" in joined and "nul\\x00key" in joined and "over 128" in joined
    assert long_key not in joined  # a long name is shortened in the message


def test_payload_value_with_nul_is_skipped_with_a_warning(tmp_path: Path) -> None:
    info = read_payload(_payload(tmp_path, '{"bad": "a\\u0000b", "good": "x", "nested": ["\\u0000"]}'))
    assert dict(info.variables) == {"good": "x", "nested": '["\\u0000"]'}  # compact JSON escapes NUL
    assert len(info.warnings) == 1 and "bad" in info.warnings[0] and "NUL" in info.warnings[0]


def _entry_ending_at(last: int, value: str, after: str = ', "after": 1}') -> str:
    """A payload whose entry "k" ends (its last character) at character index ``last``;
    the padding before it is made of multi-byte characters, so bytes and characters differ."""
    start = '{"pad": "'
    entry = '", "k": ' + value
    pad = last + 1 - len(start) - len(entry)
    filler = ("é😀€" * pad)[:pad]
    text = start + filler + entry + after
    assert text.index(entry) + len(entry) - 1 == last
    assert len(text.encode()) > len(text)
    return text


@BOTH_PATHS
@pytest.mark.parametrize("value", ['"end"', "12345", "true", '{"x": [1]}', "null"])
def test_payload_scan_boundary_counts_characters(tmp_path: Path, value: str, max_in_memory: int) -> None:
    inside = read_payload(
        _payload(tmp_path, _entry_ending_at(PAYLOAD_SCAN_CHARS - 1, value)), max_in_memory=max_in_memory
    )
    assert "k" in dict(inside.variables)
    assert "after" not in dict(inside.variables)
    crossing = read_payload(
        _payload(tmp_path, _entry_ending_at(PAYLOAD_SCAN_CHARS, value)), max_in_memory=max_in_memory
    )
    assert "pad" in dict(crossing.variables)
    assert "k" not in dict(crossing.variables)
    assert any("'k'" in w and "10,000" in w for w in crossing.warnings)


def test_payload_number_cut_by_the_boundary_is_not_truncated(tmp_path: Path) -> None:
    # The first 10,000 characters end inside 123456: "1234" must not become the value.
    text = _entry_ending_at(PAYLOAD_SCAN_CHARS + 1, "123456")
    assert "k" not in dict(read_payload(_payload(tmp_path, text)).variables)


def test_payload_with_100000_keys_scans_only_the_beginning(tmp_path: Path) -> None:
    text = json.dumps({f"key{i}": i for i in range(100_000)})
    start = time.perf_counter()
    info = read_payload(_payload(tmp_path, text))
    elapsed = time.perf_counter() - start
    keys = [k for k, _ in info.variables]
    assert keys[:2] == ["key0", "key1"]
    last = keys[-1]
    # The last variable's entry ends within the limit; the next one's does not.
    end_of_last = text.index(f'"{last}": ') + len(f'"{last}": {dict(info.variables)[last]}')
    nxt = f'"key{int(last[3:]) + 1}": {int(last[3:]) + 1}'
    assert end_of_last <= PAYLOAD_SCAN_CHARS < text.index(nxt) + len(nxt)
    assert elapsed < 2.0


@BOTH_PATHS
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"a": 1', None),
        ('{"a": 1,}', None),
        ("{'a': 1}", None),
        ('{"a": NaN}', None),
        ('{"a": 1} trailing', None),
        ("   \n  ", None),
    ],
)
def test_payload_invalid_json(tmp_path: Path, text: str, reason: str | None, max_in_memory: int) -> None:
    path = _payload(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        read_payload(path, max_in_memory=max_in_memory)
    assert str(caught.value).startswith(f"payload {path} is not valid JSON: ")


def test_payload_invalid_json_message_has_line_and_column(tmp_path: Path) -> None:
    path = _payload(tmp_path, '{\n  "a": 1\n  "b": 2\n}')
    with pytest.raises(ConfigError, match=r"is not valid JSON: Expecting ',' delimiter \(line 3, column 3\)"):
        read_payload(path)


@BOTH_PATHS
def test_payload_invalid_utf8_and_bom(tmp_path: Path, max_in_memory: int) -> None:
    path = _payload(tmp_path, b'{"a": "ok",\n "b": "\xff"}')
    with pytest.raises(ConfigError, match=r"not valid JSON: .*UTF"):
        read_payload(path, max_in_memory=max_in_memory)
    path = _payload(tmp_path, b'\xef\xbb\xbf{"a": 1}')
    with pytest.raises(ConfigError, match="byte order mark"):
        read_payload(path, max_in_memory=max_in_memory)


def test_payload_invalid_utf8_position(tmp_path: Path) -> None:
    path = _payload(tmp_path, b'{"a": "\xc3\xa9",\n "b": "x\xff"}')
    with pytest.raises(ConfigError, match=r"invalid UTF-8 byte 0xff \(line 2, column 9\)"):
        read_payload(path)


def test_payload_empty_and_missing(tmp_path: Path) -> None:
    path = _payload(tmp_path, b"")
    with pytest.raises(ConfigError, match=f"payload {re.escape(str(path))} is empty"):
        read_payload(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        read_payload(tmp_path / "missing.json")


def test_payload_nested_deeper_than_python_recursion_is_valid(tmp_path: Path) -> None:
    info = read_payload(_payload(tmp_path, "[" * 100_000 + "]" * 100_000))
    assert not info.is_object


def test_big_payload_is_validated_streaming_with_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    item = json.dumps("x" * 1000)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for part in ('{"name": "big", "n": 7, "data": [', ",".join([item] * 1000)):
            digest.update(part.encode())
            f.write(part.encode())
        block = ("," + ",".join([item] * 1000)).encode()
        for _ in range(50):
            digest.update(block)
            f.write(block)
        digest.update(b"]}")
        f.write(b"]}")
    size = path.stat().st_size
    assert size > 50_000_000
    tracemalloc.start()
    try:
        info = read_payload(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 30 * 2**20
    assert (info.size, info.sha256) == (size, digest.hexdigest())
    assert dict(info.variables) == {"name": "big", "n": "7"}
    with open(path, "r+b") as f:  # one broken byte at the very end is found
        f.seek(size - 2)
        f.write(b"?")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_payload(path)


# -- the streaming check: strings cut by slice ends -----------------------------------------------


@pytest.fixture(params=[1, 2, 3, 5, 8, 13])
def tiny_slices(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Stream payloads in slices of a few bytes: every string, escape and character gets cut."""
    monkeypatch.setattr(payload_module, "_FEED_SLICE", request.param)
    return request.param


GOOD_STRINGS = [
    r'{"k\u00e9y \"q\"": "v\\al\/ue \n\t\b\f\r \u00e9\uD83D\uDE00 é😀", "n": [1, -2.5e3, true, null]}',
    r'"a top-level string with \\\\ and \\\" and \u0041"',
    r'["\\", "\\\\", "\"", "", "😀😀", "\u12aB", {"": {"a\\": "\\u"}}]',
]


@pytest.mark.parametrize("text", GOOD_STRINGS)
def test_stream_accepts_strings_cut_anywhere(tmp_path: Path, tiny_slices: int, text: str) -> None:
    path = _payload(tmp_path, text)
    assert read_payload(path, max_in_memory=0) == read_payload(path)


BAD_STRINGS = [
    b'["abc\x01def"]',
    b'["abc\\xdef"]',
    b'["abc\\u12G4"]',
    b'["abc\\u12"]',
    b'["abc\\"]',
    b'["abc\xffdef"]',
    b'["abc\xc3"]',
    b'["abc\xed\xa0\x80"]',
    b'{"abc": "unterminated',
    b'{"abc\\": 1}',
]


@pytest.mark.parametrize("data", BAD_STRINGS)
def test_stream_rejects_bad_strings_cut_anywhere(tmp_path: Path, tiny_slices: int, data: bytes) -> None:
    path = _payload(tmp_path, data)
    with pytest.raises(ConfigError, match="is not valid JSON"):
        read_payload(path)  # the reference: json in memory
    with pytest.raises(ConfigError, match="is not valid JSON"):
        read_payload(path, max_in_memory=0)


def _random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.random()
    if depth > 3 or kind < 0.3:
        return "".join(rng.choice('ab "\\/\n\t\x00é€😀u0') for _ in range(rng.randint(0, 12)))
    if kind < 0.45:
        return rng.choice([0, -1, 1.5, 1e20, True, False, None, 12345678901234567890])
    if kind < 0.7:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {str(_random_json(rng, 4)): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _accepts(path: Path, data: bytes, max_in_memory: int) -> bool:
    path.write_bytes(data)
    try:
        read_payload(path, max_in_memory=max_in_memory)
    except ConfigError:
        return False
    return True


def test_stream_check_agrees_with_json_on_random_documents(tmp_path: Path, tiny_slices: int) -> None:
    rng = random.Random(tiny_slices)
    path = tmp_path / "p.json"
    for _ in range(300):
        data = json.dumps(_random_json(rng), ensure_ascii=rng.random() < 0.5).encode()
        assert _accepts(path, data, 0), data
        broken = bytearray(data)
        for _ in range(rng.randint(1, 2)):
            if not broken:
                break
            at = rng.randint(0, len(broken) - 1)
            if rng.random() < 0.5:
                del broken[at]
            else:
                broken[at:at] = rng.choice([b'"', b"\\", b"{", b"]", b",", b"u", b"\x01", b"\xff", b"\xc3"])
        if broken and _accepts(path, bytes(broken), 0):
            # Never more lenient than json (yajl is stricter on lone surrogates: \ud800 alone).
            assert _accepts(path, bytes(broken), 2**20), bytes(broken)


def test_big_single_string_payload_streams_in_linear_time_and_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "blob.json"
    with open(path, "wb") as f:
        f.write(b'{"name": "blob", "data": "')
        for _ in range(50):
            f.write((b"QUJD" * 16 + b"\\/") * 15_000 + b"\\u00e9")  # ~1 MB of JSON-escaped base64
        f.write(b'"}')
    tracemalloc.start()
    start = time.perf_counter()
    try:
        info = read_payload(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 10
    assert peak < 30 * 2**20
    assert dict(info.variables)["name"] == "blob"
    with open(path, "r+b") as f:  # an invalid escape deep inside the string is found
        f.seek(30_000_000)
        f.write(b"\\q")
    with pytest.raises(ConfigError, match="invalid escape"):
        read_payload(path)


def test_stream_rejects_a_number_filling_a_slice(tmp_path: Path) -> None:
    path = _payload(tmp_path, "[" + "9" * 200_000 + "]")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        read_payload(path, max_in_memory=0)


# -- hostile keys (docs/hostile-inputs.md: PL-11) -------------------------------------------------


STARTUP_KEYS = ["PATH", "LD_PRELOAD", "BASH_ENV", "BASH_FUNC_ls%%", "PYTHONWARNINGS", "PERL5OPT", "NODE_OPTIONS"]
STARTUP_KEYS += ["PIP_INDEX_URL", "GIT_SSH_COMMAND", "GIT_CONFIG_COUNT", "http_proxy", "npm_config_registry", "IFS"]


@pytest.mark.parametrize("key", STARTUP_KEYS)
def test_payload_keys_that_make_programs_run_code_are_skipped(tmp_path: Path, key: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({key: "x", "path": "data.csv", "NODE_ID": "7"}))
    info = read_payload(path)
    assert dict(info.variables) == {"path": "data.csv", "NODE_ID": "7"}  # case matters; NODE_ID is no option
    assert any(key in warning and "which code programs" in warning for warning in info.warnings)
