"""The layout rules, read from the source: imports form no cycle (between modules, or between the subpackages and
top-level modules of `selfcorrect`), no module grows past 400 lines, and generic code never branches on the name of
a task or a backend (that knowledge lives on the task or backend, as a method or a capability flag).

Imports are read with `ast`, so an import inside a function, or under `TYPE_CHECKING`, counts like one at the top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import selfcorrect
from selfcorrect.backends import backend_names
from selfcorrect.tasks import task_names

SRC = Path(selfcorrect.__file__).parent
MAX_LINES = 400
#: Where a task's or a backend's own name may be compared: its own package.
OWN_PACKAGES = ("selfcorrect.tasks", "selfcorrect.backends")


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at `root`."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that module `name` imports anywhere in its body."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x` inside pkg.sub -> pkg.sub.x
                base = ".".join([*package[:len(package) - node.level + 1], base]).strip(".")
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from pkg import function` -> pkg
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def import_graphs(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> imported modules, unit -> imported units), a unit being a subpackage or top-level module."""
    known = modules(root)
    by_module = {name: imported(name, path, known) for name, path in known.items()}
    depth = len(root.name.split(".")) + 1

    def unit(name: str) -> str:
        return ".".join(name.split(".")[:depth])

    by_unit: dict[str, set[str]] = {}
    for name, targets in by_module.items():
        by_unit.setdefault(unit(name), set()).update(unit(t) for t in targets if unit(t) != unit(name))
    return by_module, by_unit


def test_no_import_cycle_between_modules_or_subpackages():
    by_module, by_unit = import_graphs(SRC)
    assert len(by_module) > 50 and "selfcorrect.methods" in by_unit  # the walk saw the real package
    assert cycles(by_module) == []
    assert cycles(by_unit) == []


def test_the_cycle_check_sees_imports_inside_functions(tmp_path):
    """The check itself: a cycle closed by a function-level import, between two subpackages, is found."""
    root = tmp_path / "pkg"
    for folder, text in (("a", "from pkg.b.y import g\n"), ("b", "def g():\n    from pkg.a import x\n")):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
        (root / folder / ("x.py" if folder == "a" else "y.py")).write_text(text)
    (root / "__init__.py").write_text("")
    by_module, by_unit = import_graphs(root)
    assert cycles(by_module) == [["pkg.a.x", "pkg.b.y"]]
    assert cycles(by_unit) == [["pkg.a", "pkg.b"]]


def test_no_module_exceeds_400_lines():
    long = {name: n for name, path in modules(SRC).items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def name_branches(source: str, names: set[str]) -> Iterator[int]:
    """Lines of comparisons (`==`, `!=`, `in`) against one of `names` as a string literal."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        for operand in (node.left, *node.comparators):
            literals = operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand]
            if any(isinstance(x, ast.Constant) and x.value in names for x in literals):
                yield node.lineno
                break


def test_no_branch_on_a_task_or_backend_name_outside_its_own_package():
    names = set(task_names()) | set(backend_names())
    found = [f"{name}:{line}" for name, path in modules(SRC).items() if not name.startswith(OWN_PACKAGES)
             for line in name_branches(path.read_text(), names)]
    assert found == []


@pytest.mark.parametrize(("source", "hit"), [
    ('if task_name == "bbq":\n    pass\n', True),
    ('x = name in ("gsm8k", "nq-open")\n', True),
    ('ok = backend.name != "hf"\n', True),
    ('if method == "cac":\n    pass\n', False),
    ('kinds = {"bbq": 1}\n', False),
])
def test_the_name_branch_check_finds_comparisons_only(source, hit):
    assert bool(list(name_branches(source, {"bbq", "gsm8k", "nq-open", "hf"}))) is hit
