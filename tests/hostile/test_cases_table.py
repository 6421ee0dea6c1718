"""docs/hostile-inputs.md and the hostile tests name the same cases, with the same exit codes."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent.parent / "docs" / "hostile-inputs.md"
ROW = re.compile(r"^\|\s*([A-Z]{2}-\d{2})\s*\|.*\|\s*([^|]+?)\s*\|\s*$")
MIN_CASES = 45


def _table() -> list[tuple[str, str]]:
    return [(m[1], m[2]) for line in DOC.read_text().splitlines() if (m := ROW.match(line))]


def _marker(decorator: ast.expr) -> tuple[str, str] | None:
    """("PF-01", "2") for ``@pytest.mark.case("PF-01", exit=2)``."""
    if not (isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "pytest.mark.case"):
        return None
    [case_id] = [ast.literal_eval(arg) for arg in decorator.args]
    [code] = [ast.literal_eval(k.value) for k in decorator.keywords if k.arg == "exit"]
    return case_id, str(code)


def _tests() -> dict[str, list[tuple[str, str]]]:
    """Each test function of the hostile modules and the case markers on it."""
    found: dict[str, list[tuple[str, str]]] = {}
    for module in sorted(HERE.glob("test_*.py")):
        if module.name == Path(__file__).name:
            continue
        for node in ast.parse(module.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                marks = [m for d in node.decorator_list if (m := _marker(d))]
                found[f"{module.name}::{node.name}"] = marks
    return found


def test_every_hostile_test_is_exactly_one_case():
    unmarked = [name for name, marks in _tests().items() if len(marks) != 1]
    assert unmarked == [], "each test needs exactly one @pytest.mark.case(ID, exit=CODE)"


def test_the_docs_table_matches_the_tests():
    table = _table()
    tests = [mark for marks in _tests().values() for mark in marks]
    assert [i for i, n in Counter(i for i, _ in table).items() if n > 1] == []
    assert [i for i, n in Counter(i for i, _ in tests).items() if n > 1] == []
    documented, tested = dict(table), dict(tests)
    assert sorted(set(documented) - set(tested)) == [], "rows without a test"
    assert sorted(set(tested) - set(documented)) == [], "tests without a row"
    assert {i: documented[i] for i in documented if documented[i] != tested[i]} == {}, "exit codes differ"
    assert len(tested) >= MIN_CASES
