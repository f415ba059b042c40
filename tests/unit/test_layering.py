"""One direction of flow: gen's stages import each other without a cycle (lazy imports inside
functions count too: they hide a cycle, they do not remove it)."""

from __future__ import annotations

import ast
import graphlib
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "generator"


def _stage(module: str) -> str:
    """generator.builder.engine -> builder; top-level modules (errors, files) are their own."""
    return module.split(".")[1] if module.count(".") >= 1 else module


def stage_imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        importer = _stage("generator." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("generator."):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("generator.")]
            for name in names:
                if _stage(name) != importer:
                    graph[importer].add(_stage(name))
    return graph


def test_the_stages_import_each_other_without_a_cycle():
    graph = stage_imports()
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle between stages: {' -> '.join(exc.args[1])}") from None
    assert order.index("spec") < order.index("render")
    assert order.index("builder") < order.index("publish") < order.index("rebuild") < order.index("cli")


def test_build_reads_only_the_contract_never_the_stages_that_write_it():
    """The builder knows output/ through generator.contract alone: a build imports no spec,
    model, plan or render code (and so starts without jsonschema or Jinja)."""
    assert not stage_imports()["builder"] & {"spec", "model", "plan", "render"}


def test_nothing_but_the_cli_imports_the_rebuild_stage_and_publish_needs_only_build():
    graph = stage_imports()
    assert sorted(s for s, deps in graph.items() if "rebuild" in deps) == ["cli"]
    assert graph["publish"] <= {"builder", "errors", "contract", "files", "naming", "platforms"}
