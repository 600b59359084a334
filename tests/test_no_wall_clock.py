"""No test asserts on wall-clock time: speed lives in benchmarks/, tests assert numbers that cannot flake under load.

Two checks over tests/*.py, by the syntax tree rather than by running anything:
1. no `assert` uses a clock (time.perf_counter / time.time / time.monotonic / time.process_time) or a name computed
   from one (t0 = time.perf_counter(); dt = time.perf_counter() - t0; assert dt < 5);
2. no `assert` orders two timing figures (p50, latency, seconds, speedup, ...) against each other or against a
   bound, except the percentile-order identities (min <= p50 <= p99 <= max) and signs (>= 0), which hold for any
   sample.
Deadlines that only bound a wait loop (`while ... time.monotonic() < deadline`) are not assertions and pass.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
CLOCKS = {"perf_counter", "perf_counter_ns", "time", "time_ns", "monotonic", "monotonic_ns", "process_time"}
TIMING = ("p50", "p90", "p95", "p99", "latency", "seconds", "elapsed", "speedup", "_ms", "wall")
STAT_ORDER = {"min", "p50", "p90", "p95", "p99", "max", "mean"}
# (file, function) pairs exempt, each with why it cannot fail under load: none today (every timing test of the
# harness runs on an injected FakeClock)
ALLOW: set[tuple[str, str]] = set()


# calls whose results are timings: measure, measure_layers, measure_attention, bench, benchmark_sessions
MEASURING = ("measure", "bench", "benchmark")


def _is_clock(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "time":
        return name in CLOCKS
    return name in MEASURING or name.startswith(tuple(f"{w}_" for w in MEASURING))


def _clock_names(fn: ast.AST) -> set[str]:
    """Names assigned from a clock call, or from an expression holding one or such a name (to a fixed point)."""
    names: set[str] = set()
    changed = True
    while changed:
        changed = False
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and _uses_clock(node.value, names):
                for target in node.targets:
                    for t in ast.walk(target):
                        if isinstance(t, ast.Name) and t.id not in names:
                            names.add(t.id)
                            changed = True
    return names


def _uses_clock(expr: ast.AST, names: set[str]) -> bool:
    return any(_is_clock(n) or (isinstance(n, ast.Name) and n.id in names) for n in ast.walk(expr))


def _label(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return str(node.slice.value)
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _timing_order(test: ast.Compare, timed: set[str]) -> bool:
    """Some ordering pair (<, <=, >, >=) of the comparison has a measured or timing-named side, unless the pair is
    a sign check against 0 or a percentile-order identity."""
    sides = [test.left, *test.comparators]
    for a, op, b in zip(sides, test.ops, sides[1:]):
        if not isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)):
            continue
        if any(isinstance(x, ast.Constant) and x.value == 0 for x in (a, b)):
            continue  # a time is >= 0 or > 0 under any load: a sanity check, not a speed claim
        labels = [_label(a).lower(), _label(b).lower()]
        if all(label in STAT_ORDER for label in labels):
            continue
        if _uses_clock(a, timed) or _uses_clock(b, timed) or any(w in label for label in labels for w in TIMING):
            return True
    return False


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        if (path.name, fn.name) in ALLOW:
            continue
        clocked = _clock_names(fn)
        for node in ast.walk(fn):
            if not isinstance(node, ast.Assert):
                continue
            compares = [c for c in ast.walk(node.test) if isinstance(c, ast.Compare)]
            if any(_timing_order(c, clocked) for c in compares):
                found.append(f"{path.name}:{node.lineno} in {fn.name}: {ast.unparse(node.test)[:120]}")
    return found


def test_no_assertion_on_wall_clock_time():
    found = [v for p in sorted(TESTS.glob("*.py")) if p.name != Path(__file__).name for v in _violations(p)]
    assert not found, "wall-clock assertions (move them to benchmarks/ or inject a clock):\n" + "\n".join(found)


@pytest.mark.parametrize("source, flagged", [
    ("def test_a():\n    t0 = time.perf_counter()\n    work()\n    assert time.perf_counter() - t0 < 5\n", True),
    ("def test_a():\n    t0 = time.time()\n    dt = time.time() - t0\n    assert dt < 5\n", True),
    ("def test_a(r):\n    assert r.stats.p50 < 9.0\n", True),
    ("def test_a(small, big):\n    assert small.latency_ms < big.latency_ms\n", True),
    ("def test_a(r):\n    assert r['speedup'] > 1.2\n", True),
    ("def test_a(r):\n    assert r.stats.min <= r.stats.p50 <= r.stats.max\n", False),
    ("def test_a(r):\n    assert r['rounds'] == 3 and r.seconds is not None\n", False),
    ("def test_a(r):\n    assert r['dense_ms'] > 0 and r.time_ms >= 0\n", False),
    ("def test_a():\n    table = measure_layers(s)\n    small, big = table.get(1), table.get(2)\n    assert 0 < small < big\n", True),
    ("def test_a():\n    table = measure_layers(s)\n    assert table.get(1) > 0 and len(table.entries) == 2\n", False),
    ("def test_a():\n    deadline = time.monotonic() + 9\n    while time.monotonic() < deadline:\n        pass\n", False),
])
def test_the_checker_flags_clock_and_timing_assertions(tmp_path, source, flagged):
    path = tmp_path / "test_x.py"
    path.write_text("import time\n" + source)
    assert bool(_violations(path)) is flagged
