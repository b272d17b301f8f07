"""No import circles between ownmark's modules (issue 15, must hold): the module-level imports of the
package, read from the source, form a graph without cycles. Imports inside functions (the lazy imports
that keep ``ownmark list`` light) and under ``TYPE_CHECKING`` are not edges; neither is the implicit import
of a parent package."""

from __future__ import annotations

import ast
from pathlib import Path

import ownmark

ROOT = Path(ownmark.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    out: set[str] = set()
    base = module if is_package else module.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                target = f"{parent}.{node.module}" if node.module else parent
            else:
                target = node.module or ""
            out.add(target)
            out |= {f"{target}.{a.name}" for a in node.names}  # `from pkg import submodule`
    return {m for m in out if m.startswith("ownmark")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name)):
            return found
    return None


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {
        name: (_top_level_imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py")
               & set(files)) - {name}
        for name, path in files.items()
    }  # fmt: skip


def test_module_level_imports_have_no_cycle() -> None:
    graph = _graph()
    assert len(graph) > 100  # the whole package was read
    assert {"ownmark.families.base", "ownmark.models"} <= graph["ownmark.families.classifier"]
    assert "ownmark.families" not in graph["ownmark.models.store"]  # resolved at use, inside functions
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
