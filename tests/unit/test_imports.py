"""The house's rules, read from the source: no import circle in runner/ (function-level imports
included), no module imports another's _private name, printing and logging only in the CLI, the
Reporter's faces and the runner hosts, one builder of a prepared run, and masking only at the
edges where text leaves a run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[2] / "runner"
MODULES = {
    ".".join(("anna_run", *path.relative_to(RUNNER).with_suffix("").parts)).removesuffix(".__init__"): path
    for path in sorted(RUNNER.rglob("*.py"))
}


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:` (not imported when the code runs)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def _imports(name: str) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every runtime import in module ``name``."""
    tree = _tree(name)
    skipped = _type_checking_nodes(tree)
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [alias.name for alias in node.names]
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            found.append((base, [n for n in names if f"{base}.{n}" not in MODULES]))
            found += [(sub, []) for sub in submodules]
    return found


def _graph() -> dict[str, set[str]]:
    return {name: {target for target, _ in _imports(name) if target in MODULES and target != name} for name in MODULES}


def test_no_import_circle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_no_module_imports_a_private_name_of_another() -> None:
    offences = [
        f"{name} imports {target}.{taken}"
        for name in MODULES
        for target, names in _imports(name)
        if target in MODULES and target != name
        for taken in names
        if taken.startswith("_") and not taken.startswith("__")
    ]
    assert offences == []


ALLOWED_TO_PRINT = ("anna_run.cli", "anna_run.progress", "anna_run.hosts")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_printing_and_logging_only_in_the_cli_the_faces_and_the_hosts(name: str) -> None:
    if name.startswith(ALLOWED_TO_PRINT):
        return
    tree = _tree(name)
    calls = [
        ast.unparse(node.func)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("print", "logging.getLogger", "logging.warning")
    ]
    imports = [target for target, _ in _imports(name) if target == "logging"]
    assert calls == [] and imports == []


def _calls(name: str, callee: str) -> int:
    return sum(
        1
        for node in ast.walk(_tree(name))
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] == callee
    )


def test_one_module_builds_the_prepared_run() -> None:
    builders = [name for name in MODULES if _calls(name, "PreparedRun")]
    assert builders == ["anna_run.request"]


# Where a run's text leaves it: the reporter wrapper, the stored log, the record, the errors
# (masked_errors in request.py), the notification mail, the stored tracking lines and the masker
# itself. Steps never mask by hand.
MASKING_EDGES = {
    "anna_run.report",
    "anna_run.logsink",
    "anna_run.request",
    "anna_run.record",
    "anna_run.variables",
    "anna_run.notify",
    "anna_run.tracking",
}


def test_masking_happens_only_at_the_edges() -> None:
    masking = {name for name in MODULES if _calls(name, "mask") or _calls(name, "Masker")}
    assert masking <= MASKING_EDGES, masking - MASKING_EDGES


def test_unique_test_basenames() -> None:
    tests = Path(__file__).resolve().parents[1]
    names = [path.name for path in tests.rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


STORE_FOLDERS = ("run_dir", "packages_dir", "cache_dir", "local_root")


def test_steps_reach_the_store_through_its_interface_not_its_folders() -> None:
    """Outside store/, a run's files are written through RunFiles and packages made by
    Store.pack: nobody builds a path into the store's folders."""
    offences = [
        f"{name}: .{node.attr}"
        for name in MODULES
        if not name.startswith("anna_run.store")
        for node in ast.walk(_tree(name))
        if isinstance(node, ast.Attribute) and node.attr in STORE_FOLDERS
    ]
    assert offences == []
