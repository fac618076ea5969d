"""The house keeps its shape: imports flow one way through the layers, and never in a circle.

The package is laid out by side (docs/architecture.md). ``LAYERS`` below is the one
declaration of the layering, lowest first. A module may import

- anything in its own unit (a subpackage such as ``events``, or a top-level module),
- any unit of a lower layer,
- a unit of its own layer only where the layer says ``peers=True`` (the ground's small
  modules and the faces); ``write`` and ``read`` are peers that never import each other.

Every import counts — module level and function level alike — except those under
``if TYPE_CHECKING:``, which never run. Where a lower layer must name a higher type,
it names a ``typing.Protocol`` defined low. On top of the layering no module may take
part in an import circle, even inside one unit.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

PACKAGE = "django_fluvius"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


class Layer(NamedTuple):
    name: str
    units: tuple[str, ...]
    peers: bool = False  # may units of this layer import one another?


LAYERS = (
    Layer("ground", ("conf", "exceptions", "context", "protocols", "lazy", "text", "models", "registry",
                     "migrations"),
          peers=True),
    # Personal data keys and ciphers: below the event store, which seals at its lowest write.
    Layer("privacy", ("privacy",)),
    Layer("events", ("events",)),
    Layer("sides", ("write", "read")),
    Layer("security", ("security",)),
    Layer("domain", ("domain",)),
    Layer("services", ("delivery", "media")),
    Layer("ops", ("ops",)),
    Layer("faces", ("rest", "admin", "management", "testing", "middleware", "tasks", "checks", "apps", "loading",
                    "health", "templatetags", ""), peers=True),
)
RANK = {unit: rank for rank, layer in enumerate(LAYERS) for unit in layer.units}
PEERS = {unit: layer.peers for layer in LAYERS for unit in layer.units}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    """``django_fluvius.events.store`` -> ``events``; the package root -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return skipped


def imports_of(path: Path, modules: set[str], name: str | None = None, *,
               type_checking: bool = False) -> list[tuple[str, int]]:
    """(imported module of the package, line) for every import in the file that runs
    (or, with ``type_checking``, for those under ``if TYPE_CHECKING:`` only)."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = _type_checking_nodes(tree)
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if (id(node) in typing_only) != type_checking:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from pkg import module`` imports the module; ``from module import name`` the module.
            targets = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                while target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                if target != name:
                    found.append((target, node.lineno))
    return found


def import_graph(*, type_checking: bool = False) -> dict[str, list[tuple[str, int]]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    return {name: imports_of(path, modules, type_checking=type_checking) for name, path in files.items()}


def upward_imports(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    problems = []
    for module, imports in sorted(graph.items()):
        unit = unit_of(module)
        for target, line in imports:
            other = unit_of(target)
            if other == unit:
                continue
            if unit not in RANK or other not in RANK:
                problems.append(f"{module} (line {line}) imports {target}: "
                                f"{unit if unit not in RANK else other!r} is in no layer of LAYERS")
            elif RANK[other] > RANK[unit]:
                problems.append(f"{module} (line {line}) imports {target}: "
                                f"{LAYERS[RANK[unit]].name} may not import upward into {LAYERS[RANK[other]].name}")
            elif RANK[other] == RANK[unit] and not PEERS[unit]:
                problems.append(f"{module} (line {line}) imports {target}: {unit} and {other} are peers "
                                f"in the {LAYERS[RANK[unit]].name} layer and never import each other")
    return problems


def circles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _line in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_unit_of_the_package_is_in_a_layer():
    units = {unit_of(module_name(p)) for p in ROOT.rglob("*.py")}
    assert sorted(units - set(RANK)) == []


def test_imports_flow_down_the_layers():
    problems = upward_imports(import_graph())
    assert problems == [], "\n".join(problems)


def test_types_from_higher_layers_are_named_through_protocols():
    # Not even for type checking: a lower layer names an aggregate or a domain through
    # django_fluvius.protocols, so the layering reads the same to a type checker.
    problems = upward_imports(import_graph(type_checking=True))
    assert problems == [], "\n".join(problems)


def test_no_import_circles():
    found = circles(import_graph())
    assert found == [], "\n".join(" <-> ".join(c) for c in found)


def test_the_checker_sees_upward_function_level_imports_and_circles(tmp_path):
    # The checks above would pass vacuously if the graph missed imports: feed them a known bad one.
    graph = {
        "django_fluvius.events.store": [("django_fluvius.write.bus", 3)],       # function-level, upward
        "django_fluvius.write.bus": [("django_fluvius.read.state", 5),          # peer
                                     ("django_fluvius.events.store", 1)],
        "django_fluvius.read.state": [],
    }
    problems = upward_imports(graph)
    assert any("events.store (line 3) imports django_fluvius.write.bus" in p and "upward" in p for p in problems)
    assert any("write and read are peers" in p for p in problems)
    assert circles(graph) == [["django_fluvius.events.store", "django_fluvius.write.bus"]]
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import django_fluvius.domain\n"
                      "def f():\n    from django_fluvius.write import bus\n")
    modules = {"django_fluvius.write.bus", "django_fluvius.domain", "django_fluvius.events.mod"}
    assert imports_of(source, modules, name="django_fluvius.events.mod") == [("django_fluvius.write.bus", 5)]

