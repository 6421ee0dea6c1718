"""A hardened YAML reader for askanna.yml: the file is only *composed* into a node tree (nothing
is constructed from tags), by a loader that refuses alias bombs, deep nesting, duplicate keys and
files over 10 MB. Every problem is a ConfigError naming the file, line and column.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from .errors import ConfigError

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000  # nodes that aliases may add beyond what the file spells out

_MERGE_TAG = "tag:yaml.org,2002:merge"


def compose_file(file: Path) -> Node | None:
    """The node tree of ``file``, or None for a file without a document (empty, only comments).

    Raises ConfigError, with file:line:col where there is one, when the file cannot be read,
    is too big, is not UTF-8 or not YAML, or when its aliases, nesting or keys are refused.
    """
    text = _read_text(file)
    _refuse_deep_flow(text, str(file))
    return _compose(text, str(file))


# More flow openers in a row than the nesting allows: PyYAML's scanner would read all of them
# (a possible simple key each) before the composer could count a single level, which costs
# about a second for 100,000 brackets. Only a file with such a run is scanned by the regexes
# below; any other file goes to the loader untouched.
_OPENERS_RUN = re.compile(r"(?:[\[{][ \t\r\n]*){" + str(MAX_DEPTH + 1) + "}")
_FLOW_TOKEN = re.compile(r"""[\[\]{}]|"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|(?:^|(?<=[ \t]))#[^\n]*""", re.MULTILINE)


def _refuse_deep_flow(text: str, file: str) -> None:
    """Refuse flow collections ([ ], { }) nested deeper than MAX_DEPTH, counted outside quoted
    strings and comments, without running the YAML scanner over them."""
    if not _OPENERS_RUN.search(text):
        return
    depth = 0
    for found in _FLOW_TOKEN.finditer(text):
        token = found.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                pos = found.start()
                line, column = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
                raise ConfigError(f"nesting is deeper than {MAX_DEPTH} levels", file=file, line=line, column=column)
        elif token in ("]", "}"):
            depth = max(0, depth - 1)


class _Loader(yaml.SafeLoader):
    """Composes a node tree while refusing what could exhaust memory or hide a mistake."""

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self.file = file
        self._depth = 0
        self._composed = 0
        self._weights: dict[int, int] = {}  # id(collection node) -> node count with aliases expanded

    def _error(self, message: str, mark: yaml.Mark, hint: str | None = None) -> ConfigError:
        return ConfigError(message, file=self.file, line=mark.line + 1, column=mark.column + 1, hint=hint)

    def compose_node(self, parent: Node | None, index: object) -> Node:
        if self.check_event(yaml.AliasEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise self._error(f"nesting is deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_scalar_node(self, anchor: str | None) -> Node:
        self._composed += 1
        return super().compose_scalar_node(anchor)

    def compose_sequence_node(self, anchor: str | None) -> Node:
        self._composed += 1
        node = super().compose_sequence_node(anchor)
        self._weigh(node, node.value)
        return node

    def compose_mapping_node(self, anchor: str | None) -> Node:
        self._composed += 1
        node = super().compose_mapping_node(anchor)
        self._refuse_duplicates(node)
        self._weigh(node, [child for pair in node.value for child in pair])
        return node

    def _weigh(self, node: Node, children: list[Node]) -> None:
        # Aliases share nodes, so composing stays small; what explodes is every later walk
        # over the tree. The expanded size minus the nodes actually read is what aliases
        # add: stop as soon as that passes the bound ("billion laughs").
        weight = 1 + sum(self._weights.get(id(child), 1) for child in children)
        self._weights[id(node)] = weight
        if weight - self._composed > MAX_ALIAS_NODES:
            raise self._error(
                f"aliases expand to more than {MAX_ALIAS_NODES:,} values; refusing the file",
                node.start_mark,
                hint="an anchor (&name) reused through many aliases (*name) multiplies its size",
            )

    def _refuse_duplicates(self, node: MappingNode) -> None:
        seen: dict[tuple[str, str], Node] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
                continue
            first = seen.setdefault((key.tag, key.value), key)
            if first is not key:
                line, first_line = key.start_mark.line + 1, first.start_mark.line + 1
                raise self._error(f"duplicate key {key.value!r} on lines {first_line} and {line}", key.start_mark)


def _read_text(file: Path) -> str:
    name = str(file)
    too_big = "{} is {:.1f} MB; the limit is 10 MB"
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:  # refuse before reading a byte
            raise ConfigError(too_big.format(file.name, size / 2**20), file=name)
        with file.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)  # the file may grow after stat()
    except FileNotFoundError:
        raise ConfigError("no such file", file=name, hint="create askanna.yml or pass --project DIR") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", file=name) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(too_big.format(file.name, len(data) / 2**20), file=name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", "replace")) + 1
        raise ConfigError(
            f"the file is not valid UTF-8 (byte 0x{data[exc.start]:02x})",
            file=name,
            line=data.count(b"\n", 0, exc.start) + 1,
            column=column,
            hint="save the file as UTF-8",
        ) from None


def _compose(text: str, file: str) -> Node | None:
    try:
        loader = _Loader(text, file)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        message = f"character {exc.character!r} is not allowed in YAML"
        raise ConfigError(message, file=file, line=line, column=column) from None
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        if exc.context:
            context, at = exc.context, exc.context_mark
            context += f" at line {at.line + 1}, column {at.column + 1}" if at else ""
            # PyYAML phrases some problems as the second half of a sentence ("but found ...")
            problem = f"{context}, {problem}" if problem.startswith("but ") else f"{problem} ({context})"
        lines = text.splitlines()
        on_line = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
        hint = "indent with spaces; YAML does not allow tabs" if "\t" in on_line else None
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise ConfigError(f"invalid YAML: {problem}", file=file, line=line, column=column, hint=hint) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=file) from None
    finally:
        loader.dispose()
