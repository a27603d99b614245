"""kdagent's modules import one another without a circle: every import counts, at the top of a module or
inside a function (a lazy import still ties the two modules together)."""

import ast

from conftest import REPO

PACKAGE = REPO / "kdagent"


def import_graph() -> dict[str, set[str]]:
    """Module name -> the kdagent modules it imports (a name imported from a package resolves to its submodule
    when there is one, else to the package)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {resolve(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets |= {
                    resolve(f"{base}.{alias.name}") if f"{base}.{alias.name}" in modules else resolve(base)
                    for alias in node.names
                }
        graph[name] = {t for t in targets if t and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_kdagent_has_no_import_circle():
    graph = import_graph()
    assert (
        "kdagent.update.updater" in graph["kdagent.recipe_io"]
    )  # imported inside check_names: the walk sees lazy imports too
    assert (
        graph["kdagent.recipe"] == set()
    )  # the recipe models import no other kdagent module; reading a recipe is recipe_io
    assert circles(graph) == []


# The floors, lowest first: a module imports its own floor or lower ones, never one above. The rooms (what a
# stage does) sit under the loop (which sequences them), and the loop under the two front doors.
FLOORS = [
    {"loop"},
    {"api", "cli"},
]


def floor(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else ""
    return next((i + 1 for i, names in enumerate(FLOORS) if top in names), 0)  # 0: the core and the rooms


def test_no_import_runs_back_up_a_floor():
    graph = import_graph()
    assert floor("kdagent.loop.round") == 1 and floor("kdagent.cli") == 2 and floor("kdagent.update.sft") == 0
    upward = sorted((a, b) for a, targets in graph.items() for b in targets if floor(b) > floor(a))
    assert upward == []
