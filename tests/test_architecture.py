"""The layering rules of docs/architecture.md, checked on the source itself: imports point
downward, tasks never import each other, an optimizer setting's name is tested only in
``optim/``, no import cycle, and no module grows past 400 lines without saying why."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from dualoptim.optim.settings import SETTINGS

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dualoptim"
MAX_LINES = 400


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def module_name(relative: str) -> str:
    parts = ["dualoptim", *relative.removesuffix(".py").split("/")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.Module, top_level_only: bool = False) -> set[str]:
    """The dualoptim modules ``tree`` imports (anywhere, or only at module level outside
    ``if TYPE_CHECKING:``, which is what makes an import cycle at import time)."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("dualoptim")}


def task_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "tasks" else None


def test_tasks_import_neither_bench_nor_cli() -> None:
    offenders = {
        relative
        for relative, tree in modules()
        if relative.startswith("tasks/")
        and any(n.startswith(("dualoptim.bench", "dualoptim.cli")) for n in imported(tree))
    }
    assert offenders == set()


def test_no_task_imports_a_sibling_task() -> None:
    shared = {"images", "registry"}  # the layer below the image tasks; the task table
    offenders = []
    for relative, tree in modules():
        own = task_of(module_name(relative))
        if own is None:
            continue
        for name in imported(tree):
            other = task_of(name)
            if other is not None and other not in (own, *shared):
                offenders.append(f"{relative} imports {name}")
    assert offenders == []


def test_cli_and_bench_know_tasks_only_through_the_registry() -> None:
    """The CLI and bench hold no per-task branch: a task reaches them through
    ``tasks/registry.py`` and the Task protocol, so a new task edits neither."""
    offenders = [
        f"{relative} imports {name}"
        for relative, tree in modules()
        if relative == "cli.py" or relative.startswith("bench/")
        for name in imported(tree)
        if task_of(name) not in (None, "registry")
    ]
    assert offenders == []


def _setting_tests(tree: ast.Module) -> Iterator[int]:
    """Lines that compare with a setting's name or test its spelling."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            constants = [
                c.value
                for c in ast.walk(node)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            ]
            if any(c in SETTINGS for c in constants):
                yield node.lineno
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "endswith", "removesuffix")
            and any(
                isinstance(a, ast.Constant) and a.value in ("dual", "dual_plus", "_8bit")
                for a in node.args
            )
        ):
            yield node.lineno


def test_no_setting_name_is_tested_outside_optim() -> None:
    offenders = [
        f"{relative}:{line}"
        for relative, tree in modules()
        if not relative.startswith("optim/")
        for line in _setting_tests(tree)
    ]
    assert offenders == [], "ask dualoptim.optim.settings.Setting instead"


def test_the_setting_rule_catches_a_string_test() -> None:
    """The check above can fail: it finds each way a setting's name was tested before."""
    source = (
        'a = s == "joint"\nb = s.startswith("dual_plus")\nc = s in ("joint", "alternate")\n'
        'd = s.removesuffix("_8bit")\ne = s == "adamw"\n'
    )
    assert list(_setting_tests(ast.parse(source))) == [1, 2, 3, 4]


def test_no_import_cycle() -> None:
    graph = {module_name(r): imported(t, top_level_only=True) for r, t in modules()}
    names = set(graph)
    # "from dualoptim.x import y" names both x and x.y: keep the ones that are modules
    graph = {m: {n for n in deps if n in names and n != m} for m, deps in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep] if dep in path else [module, dep]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_long_modules_say_why() -> None:
    """A module over MAX_LINES states its reason in its docstring ("Over 400 lines: ...")."""
    unexplained = []
    for relative, tree in modules():
        lines = (PACKAGE / relative).read_text(encoding="utf-8").count("\n")
        doc = ast.get_docstring(tree) or ""
        if lines > MAX_LINES and f"Over {MAX_LINES} lines:" not in doc:
            unexplained.append(f"{relative} ({lines} lines)")
    assert unexplained == []
