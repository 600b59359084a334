"""The house plan, checked from the source with `ast` (no imports, so it is fast and sees lazy imports too).

- no import cycles between edgeprune's modules (function-level imports count; `if TYPE_CHECKING:` blocks do not);
- no underscore name imported from another package;
- layers: targets / measurement / backends never import optimizer, cli or report; nothing but cli imports cli;
  report and deploy never import optimizer; transforms never import optimizer, report, deploy or cli;
- no function in edgeprune/ over 60 lines, no module over 400 (the standalone runner excepted);
- runtime names appear as string literals only in backends/ (and the profile YAML).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = "edgeprune.deploy.runner.edgeprune_run"  # copied to devices that have no edgeprune: standalone, exempt
MAX_FUNCTION, MAX_MODULE = 60, 400
# Issue #21 is not finished: these still break a rule. Each list may only shrink: a new file or function that
# breaks the rule fails the test, and one that no longer does must be removed from its list (it fails too).
PENDING_LONG: list[str] = []
PENDING_LITERALS: list[str] = []
RUNTIME_WORDS = re.compile(r"\b(onnxruntime|openvino|tensorrt)\b")
TRANSFORMS = ("pruning", "sparsity", "attention", "quantize", "recover", "data", "metrics")
FORBIDDEN = {  # importer package -> packages it must never import
    **{p: ("optimizer", "cli", "report") for p in ("targets", "measurement", "backends")},
    "report": ("optimizer", "cli"),
    "deploy": ("optimizer", "cli", "report"),
    **{p: ("optimizer", "cli", "report", "deploy") for p in TRANSFORMS},
}


def _module_files() -> dict[str, Path]:
    out = {}
    for base, prefix in (("edgeprune", "edgeprune"), ("backends", "edgeprune.backends")):
        for path in sorted((ROOT / base).rglob("*.py")):
            parts = path.relative_to(ROOT / base).with_suffix("").parts
            name = ".".join((prefix, *parts))
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _module_files()


def _tree(path: Path) -> ast.Module:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):  # imports only for type annotations are not dependencies
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    return tree


def _package(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every edgeprune import in `module`."""
    out = []
    for node in ast.walk(_tree(MODULES[module])):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.startswith("edgeprune")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(_package(module).split(".")[: len(_package(module).split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            if base.startswith("edgeprune"):
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    out.append((sub, "", node.lineno) if sub in MODULES else (base, a.name, node.lineno))
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def test_the_scan_sees_the_tree():
    # guards the checks below against scanning nothing: the packages and some edges must be there
    for pkg in ("edgeprune.targets", "edgeprune.measurement", "edgeprune.backends", "edgeprune.optimizer",
                "edgeprune.report", "edgeprune.deploy", "edgeprune.cli"):
        assert pkg in MODULES, pkg
    assert sum(len(v) for v in GRAPH.values()) > 200


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(root):
        work = [(root, iter(sorted({d for d, _, _ in GRAPH[root] if d in MODULES})))]
        index[root] = low[root] = counter[0]; counter[0] += 1; stack.append(root); on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop(); on.discard(w); comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
            elif child not in index:
                index[child] = low[child] = counter[0]; counter[0] += 1; stack.append(child); on.add(child)
                work.append((child, iter(sorted({d for d, _, _ in GRAPH[child] if d in MODULES}))))
            elif child in on:
                low[node] = min(low[node], index[child])

    for m in MODULES:
        if m not in index:
            visit(m)
    return out


def test_no_import_cycles():
    assert _cycles() == []


def test_the_cycle_finder_finds_a_cycle():
    GRAPH["edgeprune.errors"].append(("edgeprune.cli.main", "", 0))  # errors -> cli -> ... -> errors
    try:
        assert any("edgeprune.errors" in c for c in _cycles())
    finally:
        GRAPH["edgeprune.errors"].pop()


def test_no_private_names_across_packages():
    bad = [f"{m}:{line} imports {dst}.{name}" for m, edges in GRAPH.items() for dst, name, line in edges
           if name.startswith("_") and dst in MODULES and _package(dst) != _package(m)]
    assert bad == []


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("area", sorted(FORBIDDEN))
def test_layers(area):
    bad = [f"{m}:{line} imports {dst}" for m, edges in GRAPH.items() if _area(m) == area
           for dst, _, line in edges if _area(dst) in FORBIDDEN[area]]
    assert bad == []


def test_nothing_outside_cli_imports_cli():
    bad = [f"{m}:{line}" for m, edges in GRAPH.items() if _area(m) not in ("cli", "__main__")
           for dst, _, line in edges if _area(dst) == "cli"]
    assert bad == []


def test_function_and_module_sizes():
    long = []
    for m, path in MODULES.items():
        if m == RUNNER:
            continue
        src = path.read_text()
        if src.count("\n") > MAX_MODULE:
            long.append(f"{path.relative_to(ROOT)}: {src.count(chr(10))} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert _pending_keys(long) == PENDING_LONG


def _pending_keys(entries: list[str]) -> list[str]:
    """'path:LINE name: N lines' -> 'path:name'; 'path: N lines' -> 'path'."""
    out = []
    for e in entries:
        where = e.split(": ")[0]
        if " " in where:  # a function: path:line name
            path_line, name = where.split(" ", 1)
            out.append(f"{path_line.rsplit(':', 1)[0]}:{name}")
        else:
            out.append(where)
    return sorted(out)


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def runtime_literals(path: Path) -> list[str]:
    """String constants (docstrings aside) that name a runtime in lower case: a name used as data."""
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    return [f"{path.relative_to(ROOT)}:{n.lineno} {n.value[:50]!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
            and RUNTIME_WORDS.search(n.value)]


def test_runtime_names_live_in_backends():
    bad = [hit for m, path in MODULES.items() if not m.startswith("edgeprune.backends") and m != RUNNER
           for hit in runtime_literals(path)]
    assert sorted({hit.split(":")[0] for hit in bad}) == PENDING_LITERALS


def test_the_literal_scan_finds_backend_names():
    assert len(runtime_literals(ROOT / "backends" / "__init__.py")) + len(runtime_literals(ROOT / "backends" / "ov.py")) > 0
