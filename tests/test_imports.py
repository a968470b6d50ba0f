"""The package's modules import one another without a cycle, imports inside functions included
(imports under `if TYPE_CHECKING:` never run, so they do not count)."""
import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "pipeline"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_names(tree: ast.AST) -> list[str]:
    """Every module named by an import statement that can run."""
    names, pending = [], [tree]
    while pending:
        node = pending.pop()
        if is_type_checking_block(node):
            pending += node.orelse
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        pending += list(ast.iter_child_nodes(node))
    return names


def project_imports(name: str) -> set[str]:
    """The package's modules that importing `name` runs: each one named, and the packages above it
    (pipeline.data.split also runs pipeline.data), except the packages `name` itself sits in,
    which are always imported before it."""
    found = set()
    for imported in imported_names(ast.parse(MODULES[name].read_text())):
        parts = imported.split(".")
        found |= {".".join(parts[:depth]) for depth in range(2, len(parts) + 1)} & set(MODULES)
    own_packages = {name.rsplit(".", depth)[0] for depth in range(1, name.count(".") + 1)}
    return found - own_packages - {name}


GRAPH = {name: project_imports(name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting, done = [], set()

    def visit(node):
        if node in visiting:
            return visiting[visiting.index(node):] + [node]
        if node in done:
            return None
        visiting.append(node)
        for neighbour in sorted(graph[node]):
            cycle = visit(neighbour)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def test_the_walk_sees_imports_inside_functions_and_skips_type_checking():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pipeline.train\n"
                     "def f():\n    from pipeline import evaluate\n")
    names = imported_names(tree)
    assert "pipeline.evaluate" in names and "pipeline.train" not in names
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_in_the_package():
    assert len(GRAPH) > 20 and GRAPH["pipeline.train"]  # the walk found the package and its imports
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_registry_imports_nothing_of_the_project_but_its_errors():
    assert GRAPH["pipeline.registry"] == {"pipeline.errors"}


def test_tasks_are_defined_once():
    defined = [name for name, path in MODULES.items()
               if any(isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TASKS" for t in node.targets)
                      for node in ast.walk(ast.parse(path.read_text())))]
    assert defined == ["pipeline.registry"]
