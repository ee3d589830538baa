"""The house's one-way layers, read from the imports of every module: edges (server.py, handlers/)
-> the core (registry/) -> store/ and outbound/; store/ imports neither tornado nor the core, no
layer imports one above it, and no two modules import each other."""

from __future__ import annotations

import ast

from support.processes import ROOT

LAYERS = {"server": 4, "handlers": 3, "registry": 2, "store": 1, "outbound": 1}  # server.py builds the app
FORBIDDEN = {"store": {"tornado", "registry", "handlers", "outbound", "server"},
             "outbound": {"registry", "handlers", "store", "server"},
             "registry": {"handlers", "server", "tornado"},
             "handlers": {"store", "outbound", "server"}}  # handlers reach the store through the core only


def modules() -> dict[str, set[str]]:
    """Each project module (dotted name) and the project modules or packages it imports."""
    found = {}
    files = [ROOT / "server.py"] + [f for package in LAYERS if package != "server"
                                    for f in sorted((ROOT / package).rglob("*.py"))]
    for file in files:
        name = ".".join(file.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        imported = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        found[name] = imported
    return found


def test_no_module_imports_a_layer_above_it_or_one_it_must_not_know():
    for name, imported in modules().items():
        layer = name.split(".")[0]
        for target in imported:
            top = target.split(".")[0]
            assert top not in FORBIDDEN.get(layer, set()), f"{name} imports {target}"
            if top in LAYERS and top != layer:
                assert LAYERS[top] < LAYERS[layer], f"{name} imports {target}: an upward arrow"


def test_no_import_cycles_between_modules():
    graph = modules()
    project = {name: {t for t in imported if t in graph and t != name} for name, imported in graph.items()}

    def visit(name: str, path: list[str]) -> None:
        for target in project[name]:
            assert target not in path, " -> ".join(path + [target])
            visit(target, path + [target])

    for name in project:
        visit(name, [name])
