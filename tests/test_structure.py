"""The package's layout: imports run one way, from the top of the house down.

The import graph is read from the source with :mod:`ast` (nothing is imported), counting every
``import``, at module level, inside functions and under ``TYPE_CHECKING`` alike. Each package
or top-level module of ``tpslab`` has a rank (:data:`RANKS`); a module may import its own package
and anything ranked lower, never something ranked higher, and the graph has no cycle.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tpslab"

RANKS = {  # first name under tpslab -> rank; lower ranks never import higher ones
    "": 0,  # tpslab/__init__.py: the version and the lazily imported public names
    "utils": 1,  # the error type, paths, atomic writes, seeding, settings from dicts
    "store": 2,  # the spec-keyed store: folders whose settings say what they hold
    "configs": 2, "dev": 2,
    "data": 3,
    "backbone": 4, "metrics": 4,
    "methods": 5,
    "evaluation": 6,
    "viz": 7,
    "profiles": 8,
    "reports": 9,
    "runs": 10,
    "site": 11, "course": 11,
    "cli": 12, "lab": 12,
    "__main__": 13,
}
LOCAL_IMPORTS_ALLOWED = ("cli", "methods/__init__.py")  # lazy on purpose: a fast --help, a lazy registry
MAX_LOCAL_ELSEWHERE = 5  # each with a comment saying why
MAX_TOP_MODULES = 12
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _target(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The tpslab modules one import statement names."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            pkg = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            pkg = pkg[: len(pkg) - node.level + 1]
            base = ".".join(pkg + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    out = []
    for name in names:
        while name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in MODULES and name != module:
            out.append(name)
    return out


def _imports() -> list[tuple[str, str, bool, int]]:
    """(importer, imported, inside a function, line) for every import of a tpslab module."""
    edges = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        in_function = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                       for sub in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges += [(module, t, id(node) in in_function, node.lineno) for t in _target(module, node)]
    return edges


EDGES = _imports()


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_part_of_the_package_has_a_rank():
    assert {_area(m) for m in MODULES} <= set(RANKS), {_area(m) for m in MODULES} - set(RANKS)


def test_no_import_climbs_to_a_higher_rank():
    upward = [f"{a} -> {b} (line {line})" for a, b, _, line in EDGES
              if _area(a) != _area(b) and RANKS[_area(b)] > RANKS[_area(a)]]
    assert not upward, "imports that climb:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for a, b, _, _ in EDGES:
        graph[a].add(b)
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for module in MODULES:
        if module not in state and (cycle := visit(module, [])):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_function_local_imports_only_where_lazy_on_purpose():
    local = [(a, line) for a, _, inside, line in EDGES if inside]
    elsewhere = [(a, line) for a, line in local
                 if not any(str(MODULES[a].relative_to(PACKAGE)).startswith(p) for p in LOCAL_IMPORTS_ALLOWED)]
    counted = Counter(a for a, _ in elsewhere)
    assert len(elsewhere) <= MAX_LOCAL_ELSEWHERE, f"function-local tpslab imports: {dict(counted)}"
    for module, line in elsewhere:
        source = MODULES[module].read_text().splitlines()
        assert "#" in source[line - 1], f"{module} line {line}: a function-local import needs a comment saying why"


def test_a_small_top_level_and_short_modules():
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_MODULES, sorted(top)
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_checker_sees_a_climbing_import(tmp_path):
    """The graph reader resolves relative and aliased imports (a check that cannot fail is no check)."""
    tree = ast.parse("from ..runs import compare as c\nimport tpslab.lab\nfrom tpslab.methods.tps import model\n")
    got = [t for node in tree.body for t in _target("tpslab.metrics.bootstrap", node)]
    assert got == ["tpslab.runs.compare", "tpslab.lab", "tpslab.methods.tps.model"]
    assert RANKS[_area(got[0])] > RANKS[_area("tpslab.metrics.bootstrap")]


def test_the_public_api_stays_where_users_find_it():
    import tpslab
    import tpslab.methods

    for name in ("build_model", "build_method", "load_checkpoint", "load_authors_checkpoint",
                 "load_anomalyclip_checkpoint", "TPS", "TPSConfig", "TrainConfig", "train", "TPSLabError"):
        assert callable(getattr(tpslab, name)), name
    assert tpslab.build_method is tpslab.methods.build_method
