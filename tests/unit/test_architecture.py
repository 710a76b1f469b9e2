"""The shape of the code, checked: which package may import which, no import cycle, the private
Faust members fenced in one module, and the worker's wiring small (DESIGN.md)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.support.shared import REPO

STREAMS = REPO / "streams"


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> Iterator[str]:
    """Every streams module ``path`` imports, at any depth of the file (a function-level import
    is an import too: it only hides a cycle)."""
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("streams"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("streams"):
                named = [f"{target}.{alias.name}" for alias in node.names]
                submodules = [m for m in named if m in modules]  # ``from . import codec`` names a module
                yield from submodules or [target]


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in STREAMS.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, set(modules)) if m in modules and m != name}
    return graph


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.endswith("__init__") or _inside(node, nxt):
                continue  # a package's own __init__ is loaded with it, not a cycle
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_packages_import_only_what_they_may() -> None:
    """The core is pure and imports nothing of duewatch but itself and the topic names; the
    contracts build on the core only; the runtime never imports the developer tooling."""
    graph = _graph()
    allowed = {
        "streams.core": ("streams.core", "streams.contracts.topics"),
        "streams.contracts": ("streams.contracts", "streams.core"),
        "streams.worker": (
            "streams.worker",
            "streams.core",
            "streams.contracts",
            "streams.settings",
            "streams.logs",
            "streams.policy_loader",
        ),  # fmt: skip
        "streams.replay": ("streams.core", "streams.contracts"),
    }
    problems = []
    for module, imported in graph.items():
        for package, may in allowed.items():
            if _inside(module, package):
                problems += [
                    f"{module} imports {m}" for m in imported if not any(_inside(m, ok) for ok in may)
                ]
    assert not problems, "\n".join(sorted(problems))
    assert not _graph()["streams.contracts.topics"], "the topic names import nothing"


def test_private_faust_and_aiokafka_members_are_used_in_one_module_only() -> None:
    """Ruff's SLF rule flags them everywhere else; this says the rule is on and where it is off."""
    config = (REPO / "pyproject.toml").read_text()
    assert '"SLF"' in config and '"streams/worker/faust_internals.py" = ["SLF001"]' in config
    assert "C901" in config and "max-complexity = 15" in config


def test_the_worker_wiring_stays_small() -> None:
    lines = (STREAMS / "worker" / "app.py").read_text().splitlines()
    assert len(lines) <= 200, f"streams/worker/app.py has {len(lines)} lines: wiring only"


def test_no_test_file_imports_another() -> None:
    """Shared helpers live in tests/support (or a harness), never in a test module."""
    problems = []
    for path in (REPO / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tests."):
                if node.module.rpartition(".")[2].startswith("test_"):
                    problems.append(f"{path.relative_to(REPO)} imports {node.module}")
    assert not problems, "\n".join(problems)
