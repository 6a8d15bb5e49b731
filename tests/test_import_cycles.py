"""No import loop in any package (lrsl_rt, train, export, benchmarks): the imports of every module,
read from its source, form no cycle, inside a package or across them.

Imports inside functions count too: a command that imports another lazily still ties the two modules
together (``serve.settings`` once imported ``resolve_bundle`` from ``cli`` inside a function while
``cli`` imported ``serve``). An import of a submodule is an edge to that submodule only; its parent
packages, already loaded by then, are left out, as Python's own import order makes them harmless.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("lrsl_rt", "train", "export", "benchmarks")


def module_names(root: Path) -> dict[str, Path]:
    """``{"lrsl_rt.cli": path, "lrsl_rt.serve": path of serve/__init__.py, ...}`` over every package."""
    names = {}
    for path in sorted(p for package in PACKAGES for p in (root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that the module ``name`` (file ``path``) imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from .x import y`: y is a submodule when it names one, else a name in x
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import lrsl_rt.serve.app.x` -> the nearest module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, first = last; None when there is none.

    >>> find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}})
    ['a', 'b', 'c', 'a']
    >>> find_cycle({"a": {"b"}, "b": set()}) is None
    True
    """
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    names = module_names(root)
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def test_no_package_has_an_import_cycle():
    graph = import_graph()
    assert {name.partition(".")[0] for name in graph} == set(PACKAGES)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "lrsl_rt.bundle_dir" in graph["lrsl_rt.serve.settings"]  # `from ..bundle_dir import`
    assert "lrsl_rt.reranker" in graph["lrsl_rt.cli"]  # inside a function
    assert "lrsl_rt.ray.job" in graph["lrsl_rt.cli"]  # `from .ray.job import run_from_args`
    assert "train.exit_training" in graph["train.exits"]  # inside a function, in another package
    assert "lrsl_rt.manifest" in graph["export.bundle"]  # across packages


def test_a_cycle_is_reported(tmp_path):
    pkg = tmp_path / "lrsl_rt"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from ..a import f\n")
    assert find_cycle(import_graph(tmp_path)) == ["lrsl_rt.a", "lrsl_rt.sub.b", "lrsl_rt.a"]


def test_a_cycle_across_packages_is_reported(tmp_path):
    for package in ("train", "export"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "train" / "a.py").write_text("from export.b import f\n")
    (tmp_path / "export" / "b.py").write_text("def f():\n    from train import a\n")
    assert find_cycle(import_graph(tmp_path)) == ["export.b", "train.a", "export.b"]
