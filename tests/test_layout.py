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
