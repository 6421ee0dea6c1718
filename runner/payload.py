"""The payload check (SPEC §2): a payload file is read once, checked to be JSON, hashed, and the
top-level entries of an object near its beginning become variables.

Payloads up to a bound are parsed in memory with :mod:`json`; bigger ones are streamed through
ijson so memory stays small whatever their size. Keys that would make programs in the
container run code of the payload's choosing never become variables.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from json.decoder import scanstring
from pathlib import Path
from types import ModuleType

from .errors import ConfigError
from .variables import shorten

PAYLOAD_SCAN_CHARS = 10_000

_CHUNK = 2**20


@dataclass(frozen=True)
class PayloadInfo:
    """What anna-run knows of a payload file after :func:`read_payload` checked it."""

    sha256: str  # hex
    size: int  # bytes
    variables: tuple[tuple[str, str], ...]  # in document order
    warnings: tuple[str, ...]
    is_object: bool  # the top-level value is a JSON object


class _Number(str):
    """A JSON number kept as written (``1.50`` stays ``1.50``; no float rounding, no digit limit)."""


def _reject_constant(name: str) -> None:
    # Python's json accepts NaN and Infinity; JSON (and every other reader of the payload) does not.
    raise ValueError(f"{name} is not a JSON value")


# Numbers kept as written, also inside objects and arrays, and never converted (a 5,000-digit
# integer is valid JSON but over Python's int-conversion limit).
_DECODER = json.JSONDecoder(parse_float=_Number, parse_int=_Number, parse_constant=_reject_constant)
_WS = re.compile(r"[ \t\n\r]*")
_BOMS = (
    (codecs.BOM_UTF8, "it starts with a UTF-8 byte order mark (BOM); save it as UTF-8 without BOM"),
    (codecs.BOM_UTF16_LE, "it is UTF-16 encoded; a payload must be UTF-8"),
    (codecs.BOM_UTF16_BE, "it is UTF-16 encoded; a payload must be UTF-8"),
)
# Enough bytes for PAYLOAD_SCAN_CHARS + 1 characters of up to 4 bytes each.
_HEAD_BYTES = 4 * (PAYLOAD_SCAN_CHARS + 1)
_FEED_SLICE = 64 * 2**10  # bytes the streaming parser gets at once
_MAX_NUMBER = 64 * 2**10  # characters of a number in a streamed payload


def read_payload(path: Path, *, max_in_memory: int = 16 * 2**20) -> PayloadInfo:
    """Check that ``path`` holds JSON, hash it, and take its variables (SPEC §2).

    Reads the file once, in 1 MiB chunks. Payloads up to ``max_in_memory`` bytes are parsed
    with :mod:`json`; bigger ones are streamed through ijson, so memory stays small whatever
    the size. Raises ConfigError when the file is unreadable, empty, not UTF-8 or not JSON.
    """
    sha256, size, head, data = _read_and_check(path, max_in_memory)
    if data is not None:
        text = _check_in_memory(path, data)[: PAYLOAD_SCAN_CHARS + 1]
    else:
        # Already validated, so only a multi-byte character cut off at the end can be
        # incomplete; the incremental decoder leaves it out.
        text = codecs.getincrementaldecoder("utf-8")("replace").decode(head)[: PAYLOAD_SCAN_CHARS + 1]
    variables, warnings, is_object = _scan_variables(text, PAYLOAD_SCAN_CHARS)
    return PayloadInfo(sha256, size, variables, warnings, is_object)


def _read_and_check(path: Path, max_in_memory: int) -> tuple[str, int, bytes, bytes | None]:
    """One pass over the file: sha256, size, its first bytes, and either its whole content
    (when it fits in ``max_in_memory``) or, for a bigger file, a streamed JSON check."""
    sha256, size, head = hashlib.sha256(), 0, b""
    kept: list[bytes] | None = []
    stream: _StreamCheck | None = None
    try:
        with open(path, "rb") as raw:
            while chunk := raw.read(_CHUNK):
                sha256.update(chunk)
                size += len(chunk)
                head += chunk[: max(0, _HEAD_BYTES - len(head))]
                if kept is not None:
                    kept.append(chunk)
                    if size <= max_in_memory:
                        continue
                    _check_bom(path, head)
                    stream, pending, kept = _StreamCheck(path), kept, None
                    for part in pending:
                        stream.feed(part)
                elif stream is not None:
                    stream.feed(chunk)
    except OSError as exc:
        raise ConfigError(f"payload {path} cannot be read: {exc.strerror or exc}") from None
    if size == 0:
        raise ConfigError(f"payload {path} is empty", hint="a payload is a JSON document, e.g. {}")
    if stream is not None:
        stream.close()
    return sha256.hexdigest(), size, head, b"".join(kept) if kept is not None else None


def _invalid(path: Path, reason: str, line: int | None = None, column: int | None = None) -> ConfigError:
    where = f" (line {line}, column {column})" if line is not None else ""
    return ConfigError(f"payload {path} is not valid JSON: {reason}{where}")


def _check_bom(path: Path, head: bytes) -> None:
    for bom, reason in _BOMS:
        if head.startswith(bom):
            raise _invalid(path, reason)


def _drop(_value: object) -> None:
    return None


# Validation builds nothing it does not need: objects and numbers are dropped as they are parsed.
_VALIDATOR = json.JSONDecoder(
    parse_float=_drop, parse_int=_drop, parse_constant=_reject_constant, object_pairs_hook=_drop
)


def _check_in_memory(path: Path, data: bytes) -> str:
    """Validate a payload held in memory; return its text."""
    _check_bom(path, data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8")) + 1
        raise _invalid(path, f"invalid UTF-8 byte 0x{data[exc.start]:02x}", line, column) from None
    try:
        _VALIDATOR.decode(text)
    except json.JSONDecodeError as exc:
        raise _invalid(path, exc.msg, exc.lineno, exc.colno) from None
    except ValueError as exc:  # NaN or Infinity
        raise _invalid(path, str(exc)) from None
    except RecursionError:
        # Nested deeper than Python's recursive parser goes; yajl has no such limit.
        stream = _StreamCheck(path)
        for start in range(0, len(data), _CHUNK):
            stream.feed(data[start : start + _CHUNK])
        stream.close()
    return text


def _ijson_backend() -> ModuleType:
    # Imported here: only payloads too big to parse in memory need ijson.
    import ijson

    try:
        return ijson.get_backend("yajl2_c")
    except ImportError:  # no compiled backend on this platform: ijson's best available one
        return ijson


class _StreamCheck:
    """Validates JSON fed chunk by chunk; holds the parser's state, never the document.

    yajl copies the buffered part of an unfinished token on every send, so a string that runs
    over many slices (a base64 blob of 200 MB) would cost time quadratic in its length and
    memory the size of it. So a string that does not end in the slice it starts in never
    reaches the parser: :class:`_LongString` checks its body piece by piece, and the parser
    gets ``""`` in its place.
    """

    def __init__(self, path: Path) -> None:
        import ijson

        self._path = path
        self._events = ijson.sendable_list()
        self._parser = _ijson_backend().basic_parse_coro(self._events)
        self._string: _LongString | None = None  # the string the last slice ended in

    def feed(self, chunk: bytes) -> None:
        # Small slices: the events of one slice are all held at once before being dropped.
        for start in range(0, len(chunk), _FEED_SLICE):
            self._feed_slice(chunk[start : start + _FEED_SLICE])

    def _feed_slice(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            if self._string is not None:
                pos, problem = self._string.feed(data, pos)
                if problem:
                    raise _invalid(self._path, problem)
                if pos < 0:  # the string goes on in the next slice
                    return
                self._send(b'""')
                self._string = None
                continue
            start = _open_string_start(data, pos)
            if start == len(data) >= _MAX_NUMBER and not data.translate(None, b"0123456789+-.eE"):
                # A number that fills a whole slice: not worth yajl's quadratic buffering.
                raise _invalid(self._path, f"a number of more than {_MAX_NUMBER:,} characters")
            self._send(data[pos:start])
            if start < len(data):
                self._string, pos = _LongString(), start + 1
            else:
                pos = start

    def _send(self, data: bytes) -> None:
        if not data:
            return  # ijson takes an empty send for the end of the input
        with self._errors():
            self._parser.send(data)
        self._events.clear()

    def close(self) -> None:
        if self._string is not None:
            raise _invalid(self._path, "it ends inside a string")
        with self._errors():
            self._parser.close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        import ijson

        try:
            yield
        except ijson.JSONError as exc:
            raise _invalid(self._path, _parser_reason(exc)) from None
        except UnicodeDecodeError:  # yajl lets some invalid UTF-8 through to ijson's decoding
            raise _invalid(self._path, "invalid UTF-8 inside a string") from None
        except (ValueError, SystemError) as exc:
            # ijson converts numbers to int: one over Python's digit limit (4300) fails, as a
            # ValueError, or a SystemError wrapping it.
            cause = exc.__cause__ or exc.__context__ or exc
            raise _invalid(self._path, f"cannot be checked: {str(cause).split(';')[0]}") from None


_BACKSLASHES_QUOTE = re.compile(rb'\\+"')
_VALID_ESCAPE = re.compile(rb'\\(?:["\\/bfnrt]|u[0-9A-Fa-f]{4})')
_PARTIAL_ESCAPE = re.compile(rb"\\(?:u[0-9A-Fa-f]{0,3})?")
_CONTROL = re.compile(rb"[\x00-\x1f]")
_UNESCAPED_QUOTE = re.compile(rb'(?<!\\)(?:\\\\)*"')


def _escaped(data: bytes, index: int) -> bool:
    """Whether the character at ``index`` follows an odd run of backslashes."""
    run = 0
    while index - run > 0 and data[index - run - 1] == 0x5C:
        run += 1
    return run % 2 == 1


def _open_string_start(data: bytes, pos: int) -> int:
    """Where the string starts (its opening quote) that ``data[pos:]`` ends in, else ``len(data)``.

    ``pos`` is outside any string. Backslashes occur only inside strings, so an odd number of
    unescaped quotes means the last one opens a string that goes on past the end.
    """
    quotes = data.count(b'"', pos)
    if quotes and data.find(b'\\"', pos) >= 0:
        # A run of backslashes plus its quote has an even length when the quote is escaped.
        quotes -= sum(1 for run in _BACKSLASHES_QUOTE.finditer(data, pos) if len(run.group()) % 2 == 0)
    if quotes % 2 == 0:
        return len(data)
    quote = data.rfind(b'"', pos)
    while quote >= 0 and _escaped(data, quote):
        quote = data.rfind(b'"', pos, quote)
    return quote if quote >= 0 else len(data)


def _cut_off_escape(body: bytes) -> int:
    """Where an escape sequence cut off by the end of ``body`` starts, else ``len(body)``."""
    start = body.rfind(b"\\", max(0, len(body) - 5))  # "\\uXXX" is the longest cut-off one
    if start >= 0 and _PARTIAL_ESCAPE.fullmatch(body, start) and not _escaped(body, start):
        return start
    return len(body)


class _LongString:
    """Checks the body of a string piece by piece, as yajl would: no control characters,
    valid escapes, valid UTF-8 — also where an escape or a character is cut by a piece's end."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._escape = b""  # an escape sequence cut off at the end of the last piece

    def feed(self, data: bytes, pos: int) -> tuple[int, str | None]:
        """Check ``data[pos:]`` up to the closing quote. Returns the index after the closing
        quote, or -1 when the string goes on, and what is wrong, or None."""
        carried = len(self._escape)
        text = self._escape + data[pos:]
        end = text.find(b'"')
        if end >= 0 and _escaped(text, end):  # JSON inside a string: many \" to go past, in C
            found = _UNESCAPED_QUOTE.search(text, end)
            end = found.end() - 1 if found else -1
        final = end >= 0
        body = text[:end] if final else text
        if _CONTROL.search(body):
            return -1, "a control character (below U+0020) inside a string"
        try:
            self._utf8.decode(body[carried:], final)
        except UnicodeDecodeError:
            return -1, "invalid UTF-8 inside a string"
        cut = len(body) if final else _cut_off_escape(body)
        self._escape = body[cut:]  # ASCII and decoded already; only its escape is checked again
        if b"\\" in body and b"\\" in _VALID_ESCAPE.sub(b"", body[:cut]):
            return -1, "an invalid escape (backslash) sequence inside a string"
        return (pos + end - carried + 1 if final else -1), None


_YAJL_REASON = re.compile(r"(?:parse|lexical) error: ([^\n\\]*)")


def _parser_reason(exc: Exception) -> str:
    # yajl's messages carry a multi-line excerpt with a "(right here) ---^" arrow; keep the words.
    text = str(exc)
    found = _YAJL_REASON.search(text)
    reason = (found.group(1) if found else text.strip().splitlines()[0]).strip().rstrip(".")
    return "it ends before the JSON document is complete" if reason == "premature EOF" else reason


def _scan_variables(text: str, limit: int) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], bool]:
    """The payload variables: the top-level entries of an object that end within ``text[:limit]``.

    ``text`` is the payload's beginning and may hold one character more than ``limit``: it
    tells whether a number ending exactly at ``limit`` goes on.
    """
    idx = _skip_ws(text, 0)
    if not text.startswith("{", idx):
        return (), (), False
    values: dict[str, str] = {}
    warnings: list[str] = []
    idx = _skip_ws(text, idx + 1)
    while not text.startswith("}", idx):
        entry = _read_entry(text, idx, limit)
        if entry is None:
            warnings.append(
                f"payload: only entries within its first {limit:,} characters become variables; "
                f"{_key_at(text, idx)}later keys are not variables"
            )
            break
        key, value, idx = entry
        problem = _key_problem(key) or _value_problem(value)
        if problem:
            warnings.append(f"payload key {shorten(key)!r} is not a variable: {problem}")
        else:
            values[key] = value  # a duplicate key: the last one wins, as in every JSON reader
        idx = _skip_ws(text, idx)
        if text.startswith(",", idx):
            idx = _skip_ws(text, idx + 1)
    return tuple(values.items()), tuple(warnings), True


def _skip_ws(text: str, idx: int) -> int:
    found = _WS.match(text, idx)
    return found.end() if found else idx


def _read_entry(text: str, idx: int, limit: int) -> tuple[str, str, int] | None:
    """The ``"key": value`` at ``idx`` as (key, variable value, end), or None when it does not
    end within ``text[:limit]``."""
    if not text.startswith('"', idx):
        return None
    try:
        key, idx = scanstring(text, idx + 1)
        idx = _skip_ws(text, idx)
        if not text.startswith(":", idx):
            return None
        start = _skip_ws(text, idx + 1)
        value, end = _DECODER.raw_decode(text, start)
        if end > limit:
            return None
        return key, _variable_value(value, text[start:end]), end
    except (ValueError, RecursionError):  # cut off by the end of the text, or nested too deep
        return None


def _variable_value(value: object, source: str) -> str:
    if isinstance(value, (_Number, bool)):
        return source  # as written: 1.50 stays 1.50, 1e5 stays 1e5
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return _compact(value)


def _compact(value: object) -> str:
    """Compact JSON like ``json.dumps(v, separators=(",", ":"), ensure_ascii=False)``, with
    numbers kept as written."""
    if isinstance(value, dict):
        items = (json.dumps(k, ensure_ascii=False) + ":" + _compact(v) for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    if isinstance(value, _Number):
        return str.__str__(value)
    return json.dumps(value, ensure_ascii=False)


# Variables that make a shell, the dynamic loader, an interpreter or a package manager run code,
# load libraries or fetch packages of the variable's choosing. A payload is data: as one of
# these it would be code (PYTHONWARNINGS + BROWSER, BASH_ENV=/input/payload.json and
# PIP_INDEX_URL each run what the payload says). The project may still set them (variables:,
# --var, --env-file). Case matters, as in the environment: a payload key "path" is not PATH.
_STARTUP_PREFIXES = ("LD_", "DYLD_", "BASH_", "PYTHON", "PERL5", "GIT_CONFIG", "PIP_", "UV_")
_STARTUP_PREFIXES += ("NPM_CONFIG_", "npm_config_")
_STARTUP_NAMES = frozenset(
    {"PATH", "IFS", "ENV", "PS4", "SHELLOPTS", "BASHOPTS", "CDPATH", "GLIBC_TUNABLES", "GCONV_PATH", "PERLLIB"}
    | {"BROWSER", "EDITOR", "VISUAL", "PAGER", "LESSOPEN", "LESSCLOSE", "NODE_OPTIONS", "NODE_PATH", "RUBYOPT"}
    | {"RUBYLIB", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH", "GIT_SSH", "GIT_DIR"}
    | {"GIT_SSH_COMMAND", "GIT_ASKPASS", "GIT_EXEC_PATH", "GIT_EDITOR", "GIT_PAGER", "GIT_EXTERNAL_DIFF"}
    | {"GIT_PROXY_COMMAND", "GIT_TEMPLATE_DIR", "SSH_ASKPASS"}
    | {f"{name}_PROXY" for name in ("HTTP", "HTTPS", "ALL", "FTP")}
    | {f"{name}_proxy" for name in ("http", "https", "all", "ftp")}
)


def _key_problem(key: str) -> str | None:
    if not key:
        return "an empty name cannot be an environment variable"
    if key in _STARTUP_NAMES or key.startswith(_STARTUP_PREFIXES):
        return "it would change which code programs in the container run; set it with --var or in askanna.yml"
    if "=" in key:
        return 'a name with "=" cannot be an environment variable'
    if "\0" in key:
        return "a name with a NUL character cannot be an environment variable"
    if len(key) > 128:
        return f"the name is {len(key)} characters long, over 128"
    if not _is_utf8(key):
        return "the name holds an unpaired surrogate (\\ud800-\\udfff), not valid Unicode"
    return None


def _value_problem(value: str) -> str | None:
    if "\0" in value:
        return "an environment variable cannot hold a NUL character"
    if not _is_utf8(value):
        return "the value holds an unpaired surrogate (\\ud800-\\udfff), not valid Unicode"
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _key_at(text: str, idx: int) -> str:
    """The key at ``idx`` for a message, as ``'key' and `` (empty when it is cut off)."""
    try:
        return repr(shorten(scanstring(text, idx + 1)[0])) + " and " if text.startswith('"', idx) else ""
    except ValueError:
        return ""
