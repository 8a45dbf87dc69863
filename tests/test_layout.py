"""The house: one room per job. Imports are read from the source (every `import` and `from ... import`, also
inside functions), so a lazy import cannot hide a circle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "scaledown"
# The original ScaleDown code's import paths: thin re-exports that nothing inside the project may import.
LEAVES = {"scaledown.data.retrieval", "scaledown.data.teacher", "scaledown.data.reranker",
          "scaledown.data.prepare_dataset", "scaledown.training"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (a package import counts as its __init__)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from scaledown.build import corpus` imports the module scaledown.build.corpus
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def test_the_import_graph_has_no_circle():
    graph = imports()
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.endswith("__main__"):
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])


def test_training_data_imports_neither_the_build_nor_the_evaluation():
    for name, targets in imports().items():
        if name.startswith("scaledown.data") and name not in LEAVES:
            wrong = sorted(t for t in targets if t.startswith(("scaledown.build", "scaledown.eval", "scaledown.train",
                                                               "scaledown.compat")))
            if name == "scaledown.data":  # its one lazy hook: `from scaledown.data import ScaleDownDataset`
                wrong.remove("scaledown.compat")
            assert not wrong, f"{name} imports {wrong}"


def test_nothing_in_the_project_imports_the_original_import_paths():
    for name, targets in imports().items():
        assert not (targets & LEAVES), f"{name} imports {sorted(targets & LEAVES)}: import the module behind it"


def test_the_leaves_still_answer_to_the_original_import_paths():
    from scaledown.data import ScaleDownDataset  # noqa: F401
    from scaledown.data.reranker import add_reranking_scores  # noqa: F401
    from scaledown.data.retrieval import SPLADERetriever  # noqa: F401
    from scaledown.data.teacher import generate_teacher_answers  # noqa: F401
    from scaledown.training import ScaleDownTrainer  # noqa: F401


def test_a_compressor_kind_is_named_in_its_registry_and_the_config_table_only():
    """Adding a compressor kind touches 2 files (scaledown/models/compressor.py: the class and COMPRESSORS;
    scaledown/config.py: COMPRESSOR_KINDS). Elsewhere no code asks which kind it holds: no comparison with a
    kind's name, no isinstance on a compressor class. The original code's translation layer (compat.py, flags.py)
    speaks its own vocabulary (`--compressor_type n_layers|modernbert`) and is left out."""
    from scaledown.config import COMPRESSOR_KINDS
    from scaledown.models.compressor import COMPRESSORS

    assert set(COMPRESSORS) == set(COMPRESSOR_KINDS)
    classes = {cls.__name__ for cls in COMPRESSORS.values()}
    allowed = {"scaledown/models/compressor.py", "scaledown/config.py", "scaledown/compat.py", "scaledown/flags.py"}
    asked = []
    for path in PACKAGE.rglob("*.py"):
        where = str(path.relative_to(ROOT))
        if where in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                names = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                names += [e.value for c in node.comparators if isinstance(c, (ast.Tuple, ast.List, ast.Set))
                          for e in c.elts if isinstance(e, ast.Constant)]
                asked += [f"{where}:{node.lineno} compares with {n!r}" for n in names if n in COMPRESSOR_KINDS]
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                asked += [f"{where}:{node.lineno} isinstance {n.id}" for n in ast.walk(node)
                          if isinstance(n, ast.Name) and n.id in classes]
    assert not asked, asked
