"""The layering the model-family interface relies on: nothing below `foundry.pipeline`
imports it back, and it is in no import cycle (it was in one of 22 modules)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def import_graph() -> dict[str, set[str]]:
    """module → the foundry modules it imports (function-level imports included)."""
    modules = {}
    for path in (SRC / "foundry").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for target in targets:
                found = resolve(target) if target.startswith("foundry") else None
                if found and found != name:
                    graph[name].add(found)
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_pipeline_is_in_no_import_cycle():
    graph = import_graph()
    below = reachable(graph, "foundry.pipeline")
    back = sorted(m for m in below if "foundry.pipeline" in reachable(graph, m) | graph[m])
    assert "foundry.pipeline" not in below, f"these modules import the pipeline back: {back}"


def test_only_the_entry_points_import_the_pipeline():
    importers = {m for m, deps in import_graph().items() if "foundry.pipeline" in deps}
    assert importers <= {"foundry", "foundry.cli", "foundry.tuning.study", "foundry.tuning.trial"}


def test_no_family_imports_another_family_or_the_pipeline():
    graph = import_graph()
    for module, deps in graph.items():
        if not module.startswith("foundry.families."):
            continue
        family = module.split(".")[2]
        others = {
            d
            for d in deps
            if d.startswith("foundry.families.")
            and d.split(".")[2] not in (family, "interface", "registry", "manifest", "table")
        }
        assert not others, f"{module} imports another family: {sorted(others)}"
