"""No import cycles among the package's modules, function-level imports included.

The graph is read from the source (every ``import`` statement anywhere in a module, also
inside functions), so a cycle hidden behind a deferred import is found too.
"""
import ast
import pathlib

PACKAGE = "siamese_mask_rcnn"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE


def _module_name(path):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph():
    """``{module: set of package modules it imports}`` over every .py file of the package."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rpartition(".")[0]
                base = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def cycles_through(graph, start):
    """Every simple cycle of ``graph`` that passes through ``start`` (as module lists)."""
    found, stack = [], [(start, [start])]
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                found.append(path + [start])
            elif nxt not in path:
                stack.append((nxt, path + [nxt]))
    return found


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    # predict imports the model inside a function only (the CLI stays light)
    assert f"{PACKAGE}.siamese" in graph[f"{PACKAGE}.predict"]
    assert f"{PACKAGE}.datasets.scenes" in graph[f"{PACKAGE}.datasets.omniglot"]


def test_no_cycle_through_the_siamese_model_predict_or_datasets():
    graph = import_graph()
    mine = [m for m in graph if m in (f"{PACKAGE}.siamese", f"{PACKAGE}.predict")
            or m.startswith(f"{PACKAGE}.datasets")]
    assert len(mine) >= 7
    cycles = [c for m in mine for c in cycles_through(graph, m)]
    assert cycles == [], " ; ".join(" -> ".join(c) for c in cycles)
