"""The timing harness's own cost per call, measured directly on a no-op, against the fastest runtime call.

    python benchmarks/harness_overhead.py

runtimes.py compares harness and bare loop on real models, but at ±5% run-to-run noise on a shared
2-core machine that comparison cannot resolve 2%. Here both loops time a no-op, so what remains is the
harness itself (two clock reads and a list append per call), which is then divided by the fastest
real call in benchmarks/results/runtimes.json. Writes benchmarks/results/harness_overhead.md|json.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import zoo  # noqa: E402
from edgeprune.measurement.bench import bare_loop_ms, measure  # noqa: E402

N, ROUNDS = 200_000, 7


def main():
    noop = lambda: None  # noqa: E731
    bare, harness = [], []
    for _ in range(ROUNDS):
        bare.append(bare_loop_ms(noop, N) * 1e6)  # ns per call
        harness.append(measure(noop, warmup=0, iters=N, rounds=1).stats.mean * 1e6)
    extra_ns = statistics.median(h - b for h, b in zip(harness, bare))
    doc = json.loads((Path(__file__).parent / "results" / "runtimes.json").read_text())
    fastest = min(r["p50_ms"] for r in doc["rows"]["latency"] if r["batch"] == 1)
    rows = {"bare_ns_per_call": statistics.median(bare), "harness_ns_per_call": statistics.median(harness),
            "harness_extra_ns": extra_ns, "fastest_runtime_call_ms": fastest,
            "overhead_pct_of_fastest_call": 100 * extra_ns / (fastest * 1e6)}
    md = ("# Timing-harness overhead, measured directly\n\n"
          f"No-op callable, {ROUNDS} rounds x {N} calls: bare loop {rows['bare_ns_per_call']:.0f} ns/call, "
          f"edgeprune harness {rows['harness_ns_per_call']:.0f} ns/call, so the harness adds {extra_ns:.0f} ns per call.\n\n"
          f"The fastest real call in runtimes.md (batch 1) takes {fastest:.3f} ms: the harness adds "
          f"{rows['overhead_pct_of_fastest_call']:.2f}% to it, and less to every slower call.\n")
    zoo.write_results("harness_overhead", rows, md, {"calls": N, "rounds": ROUNDS})
    print(md)


if __name__ == "__main__":
    main()
