"""Layout rules of the package, checked on the source with ``ast`` (no import, no TensorFlow).

An import cycle is a loop in the graph "module A imports module B", where every import
counts: at module level and inside functions (a function-level import only hides a cycle,
it does not remove it), absolute and relative (resolved against the importing module).
"""
import ast
import pathlib

PACKAGE = "siamese_mask_rcnn"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE

def module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules():
    """``{module name: path}`` of every module of the package."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def resolve(node, importer, is_package):
    """Absolute names a ``from ... import ...`` node can refer to (the module and module.name)."""
    if node.level:
        base = importer.split(".")
        if not is_package:
            base = base[:-1]
        base = base[:len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]


def import_graph(modules):
    """``{module: {imported package modules}}`` over all (also function-level) imports."""
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                candidates = resolve(node, name, path.name == "__init__.py")
            else:
                continue
            for candidate in candidates:
                if candidate in modules and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def find_cycles(graph):
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def describe(graph, component):
    """One loop through ``component`` as ``a -> b -> ... -> a``."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    current = start
    while True:
        nxt = sorted(w for w in graph[current] if w in members)
        back = start in graph[current] and len(path) > 1
        fresh = [w for w in nxt if w not in seen]
        if back or not fresh:
            return " -> ".join(path + [start])
        current = fresh[0]
        seen.add(current)
        path.append(current)


def test_cycle_finder_sees_function_level_and_relative_imports():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert find_cycles(graph) == [["p.a", "p.b", "p.c"]]
    assert describe(graph, ["p.a", "p.b", "p.c"]) == "p.a -> p.b -> p.c -> p.a"
    source = "def f():\n    from .model import MaskRCNN\n"
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom))
    assert resolve(node, "pkg.mrcnn.training", False)[0] == "pkg.mrcnn.model"
    up = ast.parse("from ..mrcnn import utils\n").body[0]
    assert resolve(up, "pkg.datasets", True) == ["pkg.mrcnn", "pkg.mrcnn.utils"]


def test_graph_contains_the_known_imports():
    graph = import_graph(all_modules())
    assert "siamese_mask_rcnn.mrcnn.training" in graph["siamese_mask_rcnn.mrcnn.model"]
    assert "siamese_mask_rcnn.mrcnn.utils" in graph["siamese_mask_rcnn.datasets.base"]


def test_mrcnn_has_no_import_cycle():
    graph = import_graph({k: v for k, v in all_modules().items() if k.startswith(f"{PACKAGE}.mrcnn")})
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in mrcnn:\n" + "\n".join(describe(graph, c) for c in cycles)


def test_package_has_no_import_cycle():
    graph = import_graph(all_modules())
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(describe(graph, c) for c in cycles)


# One home per contract: the functions below are defined (at module level) exactly once, in
# the module named; façades re-export them and methods only delegate.
CONTRACT_HOMES = {
    "compose_image_meta": "siamese_mask_rcnn.mrcnn.image_meta",
    "parse_image_meta": "siamese_mask_rcnn.mrcnn.image_meta",
    "parse_image_meta_graph": "siamese_mask_rcnn.mrcnn.image_meta",
    "generate_anchors": "siamese_mask_rcnn.mrcnn.anchors",
    "generate_pyramid_anchors": "siamese_mask_rcnn.mrcnn.anchors",
    "compute_backbone_shapes": "siamese_mask_rcnn.mrcnn.anchors",
    "mold_image": "siamese_mask_rcnn.mrcnn.molding",
    "unmold_detections": "siamese_mask_rcnn.mrcnn.molding",
    "build_rpn_targets": "siamese_mask_rcnn.mrcnn.targets",
    "load_image_gt": "siamese_mask_rcnn.mrcnn.targets",
    "check_load_report": "siamese_mask_rcnn.mrcnn.weights",
    "require_at_least": "siamese_mask_rcnn.cliargs",
}


def test_each_contract_has_one_home():
    homes = {name: [] for name in CONTRACT_HOMES}
    for module, path in all_modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name in homes:
                homes[node.name].append(module)
    assert homes == {name: [home] for name, home in CONTRACT_HOMES.items()}


def test_config_meta_size_is_the_composed_length():
    import numpy as np

    from siamese_mask_rcnn.mrcnn.config import Config
    from siamese_mask_rcnn.mrcnn.image_meta import compose_image_meta
    for n in (1, 2, 81):
        meta = compose_image_meta(0, (10, 20, 3), (64, 64, 3), (0, 0, 64, 64), 1.0, np.ones(n))
        assert Config(NUM_CLASSES=n).IMAGE_META_SIZE == meta.shape[0]


def test_paper_settings_have_one_home():
    """The paper's §5.1 settings live in ``PaperSettings`` only; the Siamese config and the
    plain COCO Mask R-CNN config inherit them and redefine none of them."""
    from siamese_mask_rcnn.coco_maskrcnn import CocoConfig
    from siamese_mask_rcnn.config import SiameseConfig
    from siamese_mask_rcnn.mrcnn.config import Config
    from siamese_mask_rcnn.paper_settings import PaperSettings
    keys = [k for k in vars(PaperSettings) if k.isupper()]
    assert len(keys) >= 15
    # they change matterport's defaults (else the mixin would be pointless)
    assert any(getattr(Config, k) != getattr(PaperSettings, k) for k in keys)
    for cls in (SiameseConfig, CocoConfig):
        assert [k for k in keys if k in vars(cls)] == [], cls.__name__
        config = cls()
        assert {k: getattr(config, k) for k in keys} == {k: getattr(PaperSettings, k) for k in keys}
