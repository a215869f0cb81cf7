"""The package's layering, read from its own imports (every import statement, also
those under ``TYPE_CHECKING`` and inside functions): adapters -> engine -> rules ->
analysis, no import circle, and no rule family reaching into another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sessionlint"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                # ``from pkg import submodule`` needs the submodule, not what else the
                # package's ``__init__`` imports.
                subs = [f"{base}.{alias.name}" for alias in node.names]
                targets = [s for s in subs if s in modules] or [base]
            for target in targets:
                if target in modules and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


GRAPH = _graph()


def _cycle_from(start: str) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in GRAPH[node]:
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_graph_is_read() -> None:
    assert "sessionlint.analysis.scope" in GRAPH["sessionlint.analysis.sessions"]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_circle(module: str) -> None:
    assert _cycle_from(module) is None, " -> ".join(_cycle_from(module) or [])


def _family(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] == "rules" and parts[2] != "base":
        return parts[2]
    return None


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("sessionlint.analysis")))
def test_analysis_imports_no_rule(module: str) -> None:
    assert not {t for t in GRAPH[module] if t.startswith(("sessionlint.rules", "sessionlint.engine", "sessionlint.cli"))}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _family(m)))
def test_a_family_imports_no_other_family(module: str) -> None:
    others = {t for t in GRAPH[module] if _family(t) not in (None, _family(module))}
    assert not others, f"{module} imports {sorted(others)}"


def test_guard_core_needs_no_pytest_or_libcst() -> None:
    for path in (PACKAGE / "runtime_guard").glob("*.py"):
        if path.name == "pytest_plugin.py":
            continue
        imported = {
            (alias.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
        assert not imported & {"pytest", "_pytest", "libcst"}, path.name
