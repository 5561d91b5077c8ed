"""The import graph reads like the design: no cycle, and no module imports from a layer above its own
(imports inside functions count too: a lazy import is still a dependency). The layers, bottom first:

    errors, resource_paths, the package __init__ -> schema -> common -> runs -> segment -> llm -> agents
    -> personas -> briefs, chat -> evaluation -> scale, refresh -> workflows -> server -> cli
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "persona_llm"

LAYERS: list[tuple[str, ...]] = [
    ("persona_llm", "persona_llm.errors", "persona_llm.resource_paths"),
    ("persona_llm.schema",),
    ("persona_llm.common",),
    ("persona_llm.runs",),
    ("persona_llm.segment",),
    ("persona_llm.llm",),
    ("persona_llm.agents",),
    ("persona_llm.personas",),
    ("persona_llm.briefs", "persona_llm.chat"),
    ("persona_llm.evaluation",),
    ("persona_llm.scale", "persona_llm.refresh"),
    ("persona_llm.workflows",),
    ("persona_llm.server",),
    ("persona_llm.cli",),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """persona_llm modules `path` imports anywhere (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("persona_llm")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("persona_llm"):
            # `from persona_llm.llm import embedded` depends on the module persona_llm.llm.embedded; a
            # name defined in the package's __init__ is a dependency on the package itself.
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").is_file()
                found.add(candidate if is_module else node.module)
    return found


@functools.cache
def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    best = -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != "persona_llm" and module.startswith(prefix + ".")):
                best = i
    assert best >= 0, f"{module} is in no layer: add it to LAYERS"
    return best


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_has_a_layer() -> None:
    for module in graph():
        layer_of(module)


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = [
        f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})"
        for src, targets in graph().items()
        for dst in targets
        if dst in graph() and layer_of(dst) > layer_of(src)
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    edges = {src: {d for d in dsts if d != src} for src, dsts in graph().items()}
    # A package __init__ that only names its submodules is not a dependency of them.
    assert find_cycle(edges) is None


def test_the_checks_catch_what_they_guard() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert layer_of("persona_llm.cli.app") > layer_of("persona_llm.workflows") > layer_of("persona_llm.segment.embed")
    assert layer_of("persona_llm.runs.rundir") < layer_of("persona_llm.segment.pipeline")


def test_the_library_does_not_pull_in_the_cli_toolkit() -> None:
    """workflows and everything below run in a server or notebook without typer or rich."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        module = module_name(path)
        if layer_of(module) >= layer_of("persona_llm.cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{module}: {n}" for n in names if n.split(".")[0] in ("typer", "rich")]
    assert offenders == []
