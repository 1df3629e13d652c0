"""The package's imports go one way: no module imports, even lazily inside a function, a module of a higher layer,
and no two modules import each other through any chain (docs/ARCHITECTURE.md)."""

import ast
from pathlib import Path

import xkd

SRC = Path(xkd.__file__).parent

# Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS = (
    ("base", ("xkd.version", "xkd.config_io", "xkd.config", "xkd.host_memory", "xkd.cli_help")),
    ("data", ("xkd.data",)),
    ("datasets", ("xkd.datasets",)),
    ("losses", ("xkd.losses",)),
    ("models", ("xkd.models",)),
    ("engine", ("xkd.engine",)),
    ("weights readers", ("xkd.official_format", "xkd.official", "xkd.api")),
    ("eval", ("xkd.eval",)),
    ("ccl", ("xkd.ccl",)),
    ("workflows", ("xkd.demo", "xkd.ablations")),
    ("command line", ("xkd.errors", "xkd.cli", "xkd.__main__", "xkd")),
)


def module_name(path: Path) -> str:
    parts = ("xkd", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports anywhere in its body."""
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                candidates = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for target in candidates:
                while target and target not in files:  # xkd.engine.checkpoint.save_weights -> its module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or (p != "xkd" and module.startswith(p + ".")) for p in prefixes):
            return index
    raise AssertionError(f"{module} belongs to no layer of tests/test_imports.py: add it to one")


def test_every_import_goes_to_the_same_or_a_lower_layer():
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
              for a, targets in import_graph().items() for b in sorted(targets) if layer_of(b) > layer_of(a)]
    assert not upward, "imports that go up a layer:\n" + "\n".join(sorted(upward))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first = last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_see_cycles_lazy_imports_and_layers():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "xkd.ccl.packaged" in graph["xkd.ccl.teacher_kinds"]  # a module-level import
    assert "xkd.official" in graph["xkd.api"]  # imported inside a function
    assert "xkd.models.ema" in graph["xkd.models.xkd"]
    assert layer_of("xkd.models.xkd") < layer_of("xkd.engine.pretrain") < layer_of("xkd.cli") == layer_of("xkd")
