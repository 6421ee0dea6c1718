"""Variables of a run (SPEC §2): their sources and precedence, templating, and masking.

The sources are project variables, ``--env-file``, ``--var``/``--secret``, the payload's
top-level keys and the built-ins, lowest precedence first. Templating has two faces:
:func:`render` pastes values into places the shell never sees (output paths, image,
credentials), while :func:`render_command` never pastes a value into shell text — it
rewrites ``{{ NAME }}`` into a quoted parameter expansion, so the shell takes the value
from the environment and a payload such as ``$(rm -rf /)`` stays data. :class:`Masker`
hides secret values in everything anna-run shows or stores, also across the chunk
boundaries of a streamed log.
"""

from __future__ import annotations

import codecs
import contextlib
import difflib
import hashlib
import json
import re
import secrets as _random
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from json.decoder import scanstring
from pathlib import Path
from types import MappingProxyType, ModuleType

from .errors import ConfigError

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
MASK = "***"
PAYLOAD_PATH = "/input/payload.json"
PAYLOAD_SCAN_CHARS = 10_000

_EMPTY: Mapping[str, str] = MappingProxyType({})
_CHUNK = 2**20

# -- ids -----------------------------------------------------------------------------------------

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUUID_SPACE = 62**16


def _format_suuid(number: int) -> str:
    digits = []
    for _ in range(16):
        number, rest = divmod(number, 62)
        digits.append(_BASE62[rest])
    text = "".join(reversed(digits))
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))


def new_suuid() -> str:
    """A fresh random id in AskAnna's short form, e.g. ``k68o-Mi2L-mYte-7E54``."""
    return _format_suuid(_random.randbelow(_SUUID_SPACE))


def suuid_from_digest(digest: bytes | str) -> str:
    """The short id of a sha256 digest: the same content always gets the same id.

    ``digest`` is the raw digest or its hex form (an ``sha256:`` prefix is allowed); the raw
    and the hex form of one digest give the same id. Raises ``ValueError`` on a non-hex string.
    """
    if isinstance(digest, str):
        digest = bytes.fromhex(digest.removeprefix("sha256:"))
    return _format_suuid(int.from_bytes(digest, "big") % _SUUID_SPACE)


# -- names, --var/--secret and --env-file -----------------------------------------------------------


def is_secret_name(name: str) -> bool:
    """Whether the name marks a secret: it contains KEY, TOKEN, SECRET or PASSWORD, in any case."""
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS)


_NAME_HINT = "a name starts with a letter or _ and holds only letters, digits and _"


def parse_assignments(items: Iterable[str], *, option: str) -> dict[str, str]:
    """``["K=V", ...]`` as given with ``--var``/``--secret``; the value may contain ``=``.

    Raises ConfigError naming the option and the item. For a secret option the value is
    never echoed: an item without ``=`` may well be the secret itself.
    """
    secret = "secret" in option.lower()
    values: dict[str, str] = {}
    for number, item in enumerate(items, 1):
        name, sep, value = item.partition("=")
        if not sep:
            shown = f"item {number}" if secret else repr(item)
            raise ConfigError(f"{option} {shown}: expected NAME=VALUE", hint=f"e.g. {option} MODEL=linear")
        shown = repr(f"{name}={MASK}" if secret else item)
        if not NAME_RE.fullmatch(name):
            raise ConfigError(f"{option} {shown}: {name!r} is not a valid variable name", hint=_NAME_HINT)
        if "\0" in value:
            raise ConfigError(f"{option} {shown}: a value cannot contain a NUL character")
        values[name] = value
    return values


_ENV_ASSIGN = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*=")
_BARE_COMMENT = re.compile(r"\s#")
_DOUBLE_QUOTED = re.compile(r'(?:[^"\\]|\\.)*"', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def parse_env_file(path: Path) -> dict[str, str]:
    """Read a dotenv-style file: ``KEY=VALUE`` per line, ``#`` comments, optional ``export``.

    Values are bare (trailing spaces and a `` #`` comment dropped), ``'literal'`` or
    ``"with \\n, \\" and \\\\ escapes"``; quoted values may span lines. Raises ConfigError
    with the file and line for a bad line, and for a file that cannot be read.
    """
    try:
        # utf-8-sig: editors on Windows like to start files with a BOM.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"env file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"env file {path} cannot be read: {exc}") from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    values: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line, lineno = lines[i], i + 1
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_ASSIGN.match(line)
        if match is None:
            raise ConfigError(
                "expected NAME=VALUE", file=str(path), line=lineno, hint=f"{_NAME_HINT}; # starts a comment"
            )
        rest = line[match.end() :]
        if rest.lstrip()[:1] in ("'", '"'):
            value, i = _quoted_value(lines, i, rest.lstrip(), path, lineno)
        else:
            found = _BARE_COMMENT.search(rest)
            value = (rest[: found.start()] if found else rest).strip()
        if "\0" in value:
            raise ConfigError("a value cannot contain a NUL character", file=str(path), line=lineno)
        values[match.group(1)] = value
    return values


def _quoted_value(lines: list[str], i: int, rest: str, path: Path, lineno: int) -> tuple[str, int]:
    """The value of a quoted assignment that starts on line ``lineno``; may take more lines."""
    quote, body = rest[0], rest[1:]
    while True:
        if quote == "'":
            end = body.find("'")
        else:
            found = _DOUBLE_QUOTED.match(body)
            end = found.end() - 1 if found else -1
        if end >= 0:
            break
        if i >= len(lines):
            raise ConfigError(f"the {quote} quote opened here is never closed", file=str(path), line=lineno)
        body += "\n" + lines[i]
        i += 1
    after = body[end + 1 :].strip()
    if after and not after.startswith("#"):
        raise ConfigError(f"unexpected text after the closing {quote}: {after!r}", file=str(path), line=i)
    raw = body[:end]
    if quote == "'":
        return raw, i
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), raw), i


# -- payload -------------------------------------------------------------------------------------


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
            warnings.append(f"payload key {_shorten(key)!r} is not a variable: {problem}")
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


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _key_at(text: str, idx: int) -> str:
    """The key at ``idx`` for a message, as ``'key' and `` (empty when it is cut off)."""
    try:
        return repr(_shorten(scanstring(text, idx + 1)[0])) + " and " if text.startswith('"', idx) else ""
    except ValueError:
        return ""


# -- built-ins and precedence ----------------------------------------------------------------------


def builtin_variables(
    *,
    token: str,
    run_id: str,
    job: str,
    project_id: str,
    package_id: str,
    payload_id: str | None,
    timezone: str,
) -> dict[str, str]:
    """The built-in variables (SPEC §2), under the seed's names and AskAnna's ``AA_`` names.

    ``payload_id`` is None for a run without payload: its id and path are then empty.
    """
    payload_path = PAYLOAD_PATH if payload_id is not None else ""
    pairs = (
        ("AA_TOKEN", "AA_TOKEN", token),
        ("JOBRUN_SUUID", "AA_RUN_SUUID", run_id),
        ("JOBRUN_JOBNAME", "AA_JOB_NAME", job),
        ("PROJECT_SUUID", "AA_PROJECT_SUUID", project_id),
        ("PACKAGE_SUUID", "AA_PACKAGE_SUUID", package_id),
        ("PAYLOAD_SUUID", "AA_PAYLOAD_SUUID", payload_id or ""),
        ("PAYLOAD_PATH", "AA_PAYLOAD_PATH", payload_path),
    )
    values: dict[str, str] = {}
    for seed_name, askanna_name, value in pairs:
        values[seed_name] = values[askanna_name] = value
    # C.UTF-8: a UTF-8 locale every image has, so Python and friends don't fall back to ASCII.
    values.update(TZ=timezone, LANG="C.UTF-8", LC_ALL="C.UTF-8", PYTHONUNBUFFERED="1")
    return values


@dataclass(frozen=True)
class Variables:
    """The variables of one run, precedence applied; what the container's environment holds."""

    values: tuple[tuple[str, str], ...]  # sorted by name
    secret_names: frozenset[str]

    def as_dict(self) -> dict[str, str]:
        """The real values: for the container only, never for display or the record."""
        return dict(self.values)

    def masked(self) -> dict[str, str]:
        """For the record and display: secret variables show as ``***``, and a secret value
        that turns up inside another variable's value is masked there too."""
        masker = self.masker()
        return {name: MASK if name in self.secret_names else masker.mask(value) for name, value in self.values}

    def secret_values(self) -> tuple[str, ...]:
        """The distinct non-empty values of the secret variables."""
        found = (value for name, value in self.values if name in self.secret_names and value)
        return tuple(dict.fromkeys(found))

    def masker(self) -> Masker:
        """A fresh :class:`Masker` for these secrets (one per stream: it keeps state)."""
        return Masker(self.secret_values())


def resolve(
    *,
    project: Mapping[str, str] = _EMPTY,
    env_file: Mapping[str, str] = _EMPTY,
    cli: Mapping[str, str] = _EMPTY,
    secrets: Mapping[str, str] = _EMPTY,
    payload: Mapping[str, str] = _EMPTY,
    builtins: Mapping[str, str] = _EMPTY,
) -> Variables:
    """Merge the sources, lowest precedence first: project < env file < ``--var`` and
    ``--secret`` < payload < built-ins.

    Secrets are the names given with ``--secret`` and every name :func:`is_secret_name` marks.
    It is the name that is secret: a payload value for a ``--secret`` name is masked too.
    """
    merged: dict[str, str] = {}
    for layer in (project, env_file, cli, secrets, payload, builtins):
        merged.update(layer)
    secret_names = frozenset(secrets) | {name for name in merged if is_secret_name(name)}
    return Variables(tuple(sorted(merged.items())), secret_names)


# -- templating ----------------------------------------------------------------------------------

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_CURLY = re.compile(r"\{\{\s*(" + _NAME + r")\s*\}\}")
_REFERENCE = re.compile(r"\{\{\s*(?P<curly>" + _NAME + r")\s*\}\}|\$\{(?P<dollar>" + _NAME + r")\}")


def template_names(text: str) -> set[str]:
    """The names ``text`` refers to with ``{{ NAME }}`` or ``${NAME}``."""
    return {found["curly"] or found["dollar"] for found in _REFERENCE.finditer(text)}


def _unknown(name: str, written: str, known: Collection[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(known), n=3)
    if close:
        hint = "did you mean " + " or ".join(close) + "?"
    else:
        hint = "define it under variables: in askanna.yml, with --var NAME=VALUE or in an --env-file"
    return ConfigError(f"{where}: unknown variable {written}", hint=hint)


def render(text: str, variables: Mapping[str, str], *, where: str) -> str:
    """Paste values into ``text`` for places the shell never sees (output paths, image,
    credentials): ``{{ NAME }}`` and ``${NAME}`` alike, in one pass, so a value holding
    ``${B}`` stays as it is. ``where`` names the place in errors.

    Raises ConfigError for a name that is not a variable.
    """

    def value(found: re.Match[str]) -> str:
        name = found["curly"] or found["dollar"]
        if name not in variables:
            written = f"{{{{ {name} }}}}" if found["curly"] else f"${{{name}}}"
            raise _unknown(name, written, variables, where)
        return variables[name]

    return _REFERENCE.sub(value, text)


# How "{{ NAME }}" becomes one shell word holding exactly the value, by quoting context.
# Inside single quotes: close them, expand inside double quotes, reopen.
# In arithmetic ($(( ))) quotes are an error and words are not split: no quotes.
_EXPANSION = {"'": "'\"${%s}\"'", '"': "${%s}", "$((": "${%s}", "((": "${%s}"}
_ARITHMETIC = frozenset(("$((", "(("))
_UNQUOTED_EXPANSION = '"${%s}"'
_WORD_START = frozenset(" \t\n;&|()<>")


def render_command(
    command: str, known: Collection[str], *, where: str, arithmetic: set[str] | None = None
) -> tuple[str, tuple[str, ...]]:
    """Rewrite the ``{{ NAME }}`` in a shell command into parameter expansions of NAME.

    The value is never pasted into the shell text: the shell expands it from the
    environment at run time, always as one word with the exact value, whatever the quoting
    around it. ``${NAME}`` is shell syntax already and stays as written (the commands may set
    that variable themselves). Returns the command and warnings, one for each ``{{`` that is
    no ``{{ NAME }}`` (such as ``{{.Id}}``), which is left as written.

    ``arithmetic``, when given, receives the names of the ``{{ NAME }}`` inside ``$(( ))``
    (at any depth): there the shell evaluates the value as an expression, and bash (/bin/sh
    in many images) runs the ``$( )`` in a value such as ``a[$(id)]``; see
    :func:`check_arithmetic`.

    Raises ConfigError for a ``{{ NAME }}`` whose NAME is not in ``known``.
    """
    out: list[str] = []
    warnings: list[str] = []
    stack = [""]  # quoting contexts: "" top level, "'", '"', "`", "$(" command substitution
    i = 0
    while i < len(command):
        if command.startswith("{{", i):
            found = _CURLY.match(command, i)
            if arithmetic is not None and found and any(context in _ARITHMETIC for context in stack):
                arithmetic.add(found.group(1))
            text, warning, i = _template(command, i, stack[-1], known, where)
            out.append(text)
            warnings += [warning] if warning else []
            continue
        size = _lex(command, i, stack)
        out.append(command[i : i + size])
        i += size
    if stack[-1] in ("'", '"'):
        warnings.append(f"{where}: the {stack[-1]} quote is never closed")
    return "".join(out), tuple(warnings)


_WHOLE_NUMBER = re.compile(r"\s*(?:[+-]?(?:0[xX][0-9a-fA-F]+|[0-9]+))?\s*")


def check_arithmetic(names: Collection[str], variables: Variables, *, where: str) -> None:
    """Raise ConfigError when a variable used in ``$(( ))`` (see :func:`render_command`) holds
    anything but a whole number: as an arithmetic expression, a value is code in bash."""
    values = variables.as_dict()
    for name in sorted(names):
        value = values.get(name, "")
        if not _WHOLE_NUMBER.fullmatch(value):
            shown = MASK if name in variables.secret_names else repr(_shorten(value))
            raise ConfigError(
                f"{where}: {{{{ {name} }}}} stands in $(( )) arithmetic, but its value {shown} is not a whole number",
                hint="a shell evaluates it as an expression there (bash runs the $( ) of a value such as a[$(id)])",
            )


def _template(command: str, i: int, context: str, known: Collection[str], where: str) -> tuple[str, str | None, int]:
    """The ``{{`` at ``i``: its rewrite (or itself), a warning or None, and the next index."""
    found = _CURLY.match(command, i)
    if found:
        name = found.group(1)
        if name not in known:
            raise _unknown(name, f"{{{{ {name} }}}}", known, where)
        return _EXPANSION.get(context, _UNQUOTED_EXPANSION) % name, None, found.end()
    if command.startswith("{{{", i):  # "{{{ X }}}": the reference may start at the next brace
        return "{", None, i + 1
    close = command.find("}}", i, i + 60)
    shown = command[i : close + 2] if close >= 0 else _shorten(command[i:], 20)
    return "{{", f"{where}: {shown!r} is not a {{{{ NAME }}}} reference; it is left as written", i + 2


def _lex(command: str, i: int, stack: list[str]) -> int:
    """Follow the quoting at ``command[i]``, updating ``stack``; return how many characters
    belong together (copied as they are)."""
    context, char = stack[-1], command[i]
    if context == "'":
        if char == "'":
            stack.pop()
        return 1  # no escapes inside single quotes
    if char == "\\":
        return 2
    for opener in ("$((", "$("):
        if command.startswith(opener, i):
            stack.append(opener)
            return len(opener)
    if char == "`":
        if context == "`":
            stack.pop()
        else:
            stack.append("`")
        return 1
    if context == '"':
        if char == '"':
            stack.pop()
        return 1
    if context in _ARITHMETIC:
        return _lex_arithmetic(command, i, stack)
    return _lex_unquoted(command, i, stack)


def _lex_arithmetic(command: str, i: int, stack: list[str]) -> int:
    """Inside ``$(( ))``: only parentheses matter; ``))`` ends it."""
    if command[i] == "(":
        stack.append("((")
    elif command[i] == ")" and stack[-1] == "((":
        stack.pop()
    elif command.startswith("))", i):
        stack.pop()
        return 2
    return 1


def _lex_unquoted(command: str, i: int, stack: list[str]) -> int:
    """The top level, or inside ``$( )`` or backquotes."""
    context, char = stack[-1], command[i]
    if char in ("'", '"'):
        stack.append(char)
    elif char == "(" and context == "$(":
        stack.append("$(")  # a nested ( ): its ) must not end the substitution
    elif char == ")" and context == "$(":
        stack.pop()
    elif char == "#" and (i == 0 or command[i - 1] in _WORD_START):
        end = command.find("\n", i)  # a comment: its quotes and braces mean nothing
        return (end if end >= 0 else len(command)) - i
    return 1


# -- masking -------------------------------------------------------------------------------------

MIN_SECRET_CHARS = 4  # a shorter secret would mask ordinary text ("on", "1234" in a port number)


class Masker:
    """Replaces every secret value with ``***`` in text, also across chunk boundaries of a stream.

    Secrets shorter than 4 characters are not masked (they would mask ordinary text); they are
    in ``too_short`` so the caller can warn. A multi-line secret is masked whole and also line
    by line, for programs that print it a line at a time. Where secrets overlap in the text,
    the union of their characters is masked, so no part of either shows.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        wanted: set[str] = set()
        too_short: list[str] = []
        for secret in secrets:
            if 0 < len(secret) < MIN_SECRET_CHARS:
                too_short.append(secret)
            elif secret:
                wanted.add(secret)
            wanted.update(line for line in secret.splitlines() if len(line) >= MIN_SECRET_CHARS)
        self.too_short = tuple(dict.fromkeys(too_short))
        # Longest first: where several secrets start at one place, the regex takes the longest.
        ordered = sorted(wanted, key=lambda s: (-len(s), s))
        self._longest = len(ordered[0]) if ordered else 0
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._by_first: dict[str, list[str]] = {}
        for secret in ordered:
            self._by_first.setdefault(secret[0], []).append(secret)
        self._first = re.compile("|".join(map(re.escape, self._by_first)) or "(?!)")
        self._held = ""  # text not emitted yet: it could be the start of a secret
        self._covered = 0  # how much of _held a mask already emitted stands for

    def mask(self, text: str) -> str:
        """``text`` with every secret masked (one-shot; independent of the stream state)."""
        if self._pattern is None:
            return text
        spans = self._spans(text, 0)
        return self._emit(text, spans, len(text))[0]

    def feed(self, chunk: str) -> str:
        """Masked text that is safe to emit now. Holds back at most (longest secret - 1)
        characters, and only those that could be the beginning of a secret."""
        if self._pattern is None:
            return chunk
        text = self._held + chunk
        cut = self._tail_start(text)
        emitted, end = self._emit(text, self._spans(text, self._covered), cut)
        self._held, self._covered = text[cut:], max(0, end - cut)
        return emitted

    def flush(self) -> str:
        """The held-back rest, masked; the stream starts afresh after it."""
        if self._pattern is None:
            return ""
        text, covered = self._held, self._covered
        self._held, self._covered = "", 0
        return self._emit(text, self._spans(text, covered), len(text))[0]

    def _emit(self, text: str, spans: list[tuple[int, int]], cut: int) -> tuple[str, int]:
        """``text[:cut]`` masked by ``spans``, and where the last mask emitted ends (may pass ``cut``)."""
        parts, pos = [], 0
        for start, end in spans:
            if start >= cut:
                break
            if start >= 0:  # start -1: the mask was emitted with an earlier chunk
                parts += (text[pos:start], MASK)
            pos = end
        if pos < cut:
            parts.append(text[pos:cut])
        return "".join(parts), pos

    def _spans(self, text: str, covered: int) -> list[tuple[int, int]]:
        """The masked stretches of ``text`` as (start, end), in order, overlapping ones merged.
        The first ``covered`` characters continue a mask already emitted: start -1."""
        assert self._pattern is not None
        spans, pos = [], 0
        if covered:
            pos = self._extend(text, 0, covered)
            spans.append((-1, pos))
        while (found := self._pattern.search(text, pos)) is not None:
            pos = self._extend(text, found.start() + 1, found.end())
            spans.append((found.start(), pos))
        return spans

    def _extend(self, text: str, first: int, end: int) -> int:
        """Grow a mask ending at ``end`` over every secret that starts at ``first`` or after,
        before ``end``, and runs past it (secrets that overlap in the text)."""
        assert self._pattern is not None
        pos = first
        while pos < end:
            # The window is as long as any secret starting before ``end`` can reach.
            found = self._pattern.search(text, pos, end + self._longest - 1)
            if found is None or found.start() >= end:
                break
            end, pos = max(end, found.end()), found.start() + 1
        return end

    def _tail_start(self, text: str) -> int:
        """Where the part of ``text`` starts that could be the beginning of a secret (the
        earliest such place within the last (longest - 1) characters), else ``len(text)``."""
        n = len(text)
        for found in self._first.finditer(text, max(0, n - self._longest + 1)):
            tail = text[found.start() :]
            if any(len(s) > len(tail) and s.startswith(tail) for s in self._by_first[found.group()]):
                return found.start()
        return n
