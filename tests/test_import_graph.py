"""The pack's packages import one way: no cycle among modules, every pack import at the top.

`python tests/test_import_graph.py [PACKAGE ...]` prints the graph (module -> modules it imports).
"""
from __future__ import annotations

import ast
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Packages whose modules must form a DAG with imports only at module level.
STRICT = ("samplers", "attention_patch", "client", "wan")
# Packages whose cross-package arrows must go down this order (nodes may import all below it).
LAYERS = ("nodes", "samplers", "attention_patch")
# The ComfyUI API client serves the commands and never imports them.
CLIENT, COMMANDS = "client", "cli"
# The Wan room sits beside the SVD rooms: it may use their shared pieces, none of them imports it.
WAN, SVD_ROOMS = "wan", ("samplers", "attention_patch", "conditioning", "weights", "evaluation", "bench")


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _in_pack(name: str) -> str:
    """An absolute import's module within the pack ("" if it is not the pack's): the pack imports itself
    relatively or as svd_inbetween.*; a bare `import nodes` is ComfyUI's nodes.py, not the pack's nodes/."""
    return name[len("svd_inbetween."):] if name.startswith("svd_inbetween.") else ""


def _resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [_in_pack(a.name) for a in node.names]
    if node.level == 0:
        base = _in_pack(node.module or "")
        return [base] + [f"{base}.{a.name}" for a in node.names] if base else []
    parts = module.split(".")
    parts = parts[:len(parts) - node.level + (1 if is_package else 0)]
    base = ".".join(parts + ([node.module] if node.module else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def package_modules(package: str) -> dict[str, str]:
    folder = os.path.join(REPO, package)
    return {_module_name(os.path.join(folder, f)): os.path.join(folder, f)
            for f in sorted(os.listdir(folder)) if f.endswith(".py")}


def imports(package: str) -> dict[str, list[tuple[str, int, bool]]]:
    """module -> [(imported pack module, line, at module level)] for the package's modules."""
    packages = LAYERS + ("conditioning", "weights", COMMANDS, CLIENT, "bench", "evaluation", WAN)
    known = {m for p in packages if os.path.isdir(os.path.join(REPO, p))
             for m in package_modules(p)}
    out = {}
    for module, path in package_modules(package).items():
        tree = ast.parse(open(path, encoding="utf-8").read())
        top = {id(n) for n in tree.body}
        top |= {id(c) for n in tree.body if isinstance(n, ast.If) for c in n.body}  # TYPE_CHECKING blocks
        edges = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(module, node, path.endswith("__init__.py")):
                    if target in known and target != module:
                        edges.append((target, node.lineno, id(node) in top))
        out[module] = sorted(set(edges))
    return out


def package_graph(package: str, found: dict | None = None) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports."""
    found = imports(package) if found is None else found
    return {m: {t for t, _, _ in e if t.startswith(package + ".")} for m, e in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m in graph and not state.get(m):
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if not state.get(n):
            visit(n)
    return found


def test_cycle_finder_sees_a_cycle():
    """The check below can fail: a three-module loop and a self-contained DAG."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_in_strict_packages():
    for package in STRICT:
        graph = package_graph(package)
        assert not cycles(graph), f"{package}/ has import cycles: {cycles(graph)}"


def test_strict_packages_import_at_the_top():
    lazy = [f"{m} imports {t} at line {line} inside a function" for p in STRICT
            for m, edges in imports(p).items() for t, line, top in edges if not top]
    assert not lazy, "\n".join(lazy)


def test_layers_import_downwards():
    up = []
    for i, package in enumerate(LAYERS):
        higher = LAYERS[:i]
        for m, edges in imports(package).items():
            up += [f"{m} -> {t}" for t, _, _ in edges if t.split(".")[0] in higher]
    assert not up, f"imports against the layer order {' -> '.join(LAYERS)}: {up}"



def test_client_never_imports_the_commands():
    up = [f"{m} -> {t} (line {line})" for m, edges in imports(CLIENT).items() for t, line, _ in edges
          if t.split(".")[0] == COMMANDS]
    assert not up, f"{CLIENT}/ imports {COMMANDS}/, which uses it: {up}"


def test_svd_rooms_never_import_the_wan_room():
    up = [f"{m} -> {t} (line {line})" for p in SVD_ROOMS for m, edges in imports(p).items()
          for t, line, _ in edges if t.split(".")[0] == WAN]
    assert not up, f"SVD code imports {WAN}/: {up}"


if __name__ == "__main__":
    for package in sys.argv[1:] or STRICT:
        found = imports(package)
        graph = package_graph(package, found)
        for m, edges in found.items():
            lazy = sorted({t for t, _, top in edges if t in graph[m] and not top})
            print(f"{m} -> {', '.join(sorted(graph[m])) or '-'}"
                  + (f"   (inside functions: {', '.join(lazy)})" if lazy else ""))
        print(f"{package}: {sum(len(v) for v in graph.values())} edges, cycles: {cycles(graph) or 'none'}\n")
