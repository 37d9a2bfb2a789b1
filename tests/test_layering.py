"""Dependencies run one way: every import in the package, at module level, inside functions
and under TYPE_CHECKING alike, goes to the same layer or a lower one, and none closes a
cycle. Read with ast, so an import hidden in a function cannot slip past."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "flatstate"

# Lowest first. A module may import from its own layer and the layers before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "values",
        ("errors", "frozen", "keys", "model", "files", "locks", "_signal", "_schema", "_fork"),
    ),
    # writer: the group-commit queue (it needs only errors); transcripts' sync group uses it.
    ("storage", ("writer", "_sqlite", "backends", "transcripts", "maintenance", "openclaw")),
    (
        "store",
        ("_cache", "snapshot", "pipeline", "store", "_open", "aio", ""),
    ),  # "" is the package itself (flatstate/__init__.py)
    ("features", ("compaction", "places", "doctor", "transfer", "copying", "facts", "auth")),
    ("integrations", ("integrations",)),
    ("apps", ("cli", "bench", "__main__")),
]


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(("flatstate", *parts))] = path
    return names


MODULES = module_names()


def imports_of(name: str, path: Path) -> set[str]:
    """The flatstate modules ``name`` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {target for target in found if target in MODULES and target != name}


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def layer_of(name: str) -> int:
    top = name.split(".")[1] if "." in name else ""
    for rank, (_, tops) in enumerate(LAYERS):
        if top in tops:
            return rank
    raise AssertionError(f"{name} belongs to no layer: add it to LAYERS")


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        layer_of(name)


def test_imports_go_to_the_same_layer_or_a_lower_one() -> None:
    upward = [
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for name, targets in GRAPH.items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert upward == []


def test_no_import_closes_a_cycle() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
    assert cycles == []


def test_the_walk_sees_imports_inside_functions() -> None:
    """The graph includes function-level imports: _open imports the PostgreSQL backend so."""
    assert "flatstate.backends.postgres" in GRAPH["flatstate._open"]
