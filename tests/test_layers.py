"""The house's floors only look down (docs/design.md): read from the source with ``ast``, the
onnxmod modules' module-level imports form no cycle, and nothing but the command line
(``onnxmod/cli*``) imports the façade ``onnxmod.api`` — at module level or inside a function.

An import is resolved to the onnxmod module it loads: ``from . import x`` and ``from .pkg import x``
name the submodule ``x`` when there is one, else the module (or package ``__init__``) that defines
``x``. Imports under ``if TYPE_CHECKING:`` never run and are left out of the cycle check."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "onnxmod"


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` by dotted name (a package's ``__init__.py`` under the package's name)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(body: list[ast.stmt], module_level: bool):
    """The Import/ImportFrom statements of ``body``: with ``module_level``, those that run when the
    module is imported (in ``if``/``try``/``with`` blocks too, not in functions or classes' methods,
    not under ``if TYPE_CHECKING:``); without, every one anywhere."""
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            yield stmt
        elif module_level:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(stmt, ast.If) and _is_type_checking(stmt.test):
                yield from _import_nodes(stmt.orelse, module_level)
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(stmt, field, None)
                if isinstance(inner, list):
                    yield from _import_nodes([s for s in inner if isinstance(s, ast.AST)], module_level)
        else:
            yield from (n for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom)))


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The onnxmod module that importing dotted ``name`` loads: ``name`` itself, or the longest
    prefix of it that is a module (``onnxmod.x.attr`` -> ``onnxmod.x``); None outside onnxmod."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def imports_of(module: str, modules: dict[str, Path], module_level: bool) -> set[str]:
    """The onnxmod modules that ``module`` imports (see the module docstring for how names resolve)."""
    path = modules[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in _import_nodes(tree.body, module_level):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" for alias in node.names]
        out.update(t for t in (_resolve(t, modules) for t in targets) if t and t != module)
    return out


def import_graph(modules: dict[str, Path], module_level: bool = True) -> dict[str, set[str]]:
    return {m: imports_of(m, modules, module_level) for m in modules}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a path
    ``[a, b, ..., a]``; sorted, so the report is the same on every run."""
    index, low, stack, on_stack, sccs = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(set(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(_cycle_in(graph, scc) for scc in sccs)


def _cycle_in(graph: dict[str, set[str]], scc: set[str]) -> list[str]:
    """A shortest cycle through the first module of ``scc`` (breadth-first, inside the component)."""
    start = min(scc)
    came = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & scc):
                if w == start:
                    path = [v]  # back to the start through the breadth-first tree
                    while came[path[-1]] is not None:
                        path.append(came[path[-1]])
                    return path[::-1] + [start]
                if w not in came:
                    came[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(scc)}")  # pragma: no cover - an SCC has one


def is_command_line(module: str) -> bool:
    """``onnxmod.cli``, ``onnxmod.cli_zoo``, ``onnxmod.cli.<command>``: the only callers of the façade."""
    name = module.split(".")[1] if "." in module else ""
    return name == "cli" or name.startswith("cli_")


def test_the_import_reader_sees_what_python_runs(tmp_path):
    """Mechanics, on a made-up package: relative and absolute imports resolve to modules, function
    and TYPE_CHECKING imports stay out of the module-level graph, and the cycle comes back as a path."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from .sub.c import thing\n\ndef later():\n    from . import d\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import d\n"
                                      "try:\n    from ..a import x\nexcept ImportError:\n    pass\n")
    (pkg / "d.py").write_text("import onnxmod.api\n")
    (pkg / "api.py").write_text("")
    modules = module_files(tmp_path)
    graph = import_graph(modules)
    assert graph["onnxmod.a"] == {"onnxmod.b"}
    assert graph["onnxmod.b"] == {"onnxmod.sub.c"}
    assert graph["onnxmod.sub.c"] == {"onnxmod.a"}
    assert graph["onnxmod.d"] == {"onnxmod.api"}
    assert import_graph(modules, module_level=False)["onnxmod.b"] == {"onnxmod.sub.c", "onnxmod.d"}
    assert find_cycles(graph) == [["onnxmod.a", "onnxmod.b", "onnxmod.sub.c", "onnxmod.a"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph(module_files()))
    assert not cycles, "import cycles among onnxmod modules (module-level imports):\n" + "\n".join(
        "  " + " -> ".join(c) for c in cycles)


def test_only_the_command_line_imports_the_api():
    """``onnxmod.api`` is the top floor: the pipeline's modules never call back up to it, not even
    through an import inside a function."""
    modules = module_files()
    assert f"{PACKAGE}.api" in modules
    callers = sorted(m for m, imported in import_graph(modules, module_level=False).items()
                     if f"{PACKAGE}.api" in imported and not is_command_line(m))
    assert not callers, f"modules that import onnxmod.api (only onnxmod/cli* may): {', '.join(callers)}"
