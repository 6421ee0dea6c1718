"""Variables of a run (SPEC §2): their sources and precedence, templating, and masking.

The sources are project variables, ``--env-file``, ``--var``/``--secret``, the payload's
top-level keys and the built-ins, lowest precedence first. Templating has two faces:
:func:`render` pastes values into places the shell never sees (output paths, image,
credentials), while :func:`render_command` never pastes a value into shell text — it
rewrites ``{{ NAME }}`` into a quoted parameter expansion, so the shell takes the value
from the environment and a payload such as ``$(rm -rf /)`` stays data. :class:`Masker`
hides secret values in everything anna-run shows or stores, also across the chunk
boundaries of a streamed log.

The payload file itself is checked, and its variables taken, in :mod:`.payload`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .errors import ConfigError

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
MASK = "***"
PAYLOAD_PATH = "/input/payload.json"

_EMPTY: Mapping[str, str] = MappingProxyType({})

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


def shorten(text: str, width: int = 40) -> str:
    """``text`` cut to ``width`` characters with an ellipsis, for messages."""
    return text if len(text) <= width else text[: width - 1] + "…"


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
            shown = MASK if name in variables.secret_names else repr(shorten(value))
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
    shown = command[i : close + 2] if close >= 0 else shorten(command[i:], 20)
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
