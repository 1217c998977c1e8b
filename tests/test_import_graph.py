"""The package's import graph, read from the source: no circle at run time (imports inside
functions count; imports under ``if TYPE_CHECKING:`` do not), and pytest only in the plugin
layer (nothing below it receives ``pytest.Config``)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_tfserving"
# The modules that talk to pytest: hooks, the gate-suite module, the gate runner, the session's
# stash key, option registration/resolution, and terminal progress.
PLUGIN_LAYER = {"pytest_tfserving.plugin", "pytest_tfserving.gate_suite",
                "pytest_tfserving.gates.runner", "pytest_tfserving.session",
                "pytest_tfserving.options", "pytest_tfserving.settings",
                "pytest_tfserving.terminal"}


def module_names() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(path: Path) -> set[str]:
    """Every module name imported at run time (absolute, as written or resolved)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def graph() -> dict[str, set[str]]:
    modules = module_names()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {t for t in runtime_imports(path) if t in modules and t != name}
        # importing a package runs its __init__, not its submodules: keep edges as written
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def test_the_graph_is_read_from_the_package() -> None:
    edges = graph()
    assert len(edges) > 80
    assert "pytest_tfserving.options" in edges["pytest_tfserving.plugin"]
    # a function-level import counts: the gate registry's parser reads the registry lazily
    assert "pytest_tfserving.gates.registry" in edges["pytest_tfserving.core_options"]


def test_no_import_circle_at_run_time() -> None:
    circles = cycles(graph())
    assert circles == [], "\n".join(" <-> ".join(c) for c in circles)


def test_cycle_finder_finds_a_planted_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_plugin_layer_imports_pytest() -> None:
    modules = module_names()
    offenders = sorted(name for name, path in modules.items()
                       if name not in PLUGIN_LAYER
                       and {"pytest", "_pytest"} & {t.split(".")[0]
                                                    for t in runtime_imports(path)})
    assert offenders == []


def test_options_imports_no_gate_and_no_backend() -> None:
    imported = runtime_imports(module_names()["pytest_tfserving.options"])
    assert not [t for t in imported if t.startswith(("pytest_tfserving.gates",
                                                     "pytest_tfserving.launchers",
                                                     "pytest_tfserving.bundled_server"))]


def test_every_import_of_a_package_module_names_one_that_exists() -> None:
    """Type-only imports included: mypy runs with ignore_missing_imports (for TF's stubs), so
    a renamed module would otherwise go unnoticed where only annotations use it."""
    known = set(module_names())
    dangling = []
    for name, path in module_names().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.startswith("pytest_tfserving") and node.module not in known:
                dangling.append(f"{name}: from {node.module} import ...")
    assert not dangling
