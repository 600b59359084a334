"""The README's main command, run as a user runs it: `edgeprune optimize` (no arguments), N times, with its output.

    python benchmarks/default_run.py [--runs 2] [--extra "--precision fp32"] [--name default_optimize] [--append]

Each run is a fresh `edgeprune optimize -o DIR` process with an empty latency cache (a user's first run), timed
wall-clock from outside. A row: the precision that shipped, the measured speedup (median of the interleaved rounds,
min-max and the ~95% interval of the median), the held-out 10-NN overlap and its drop, whether the run printed
"targets met", the attempts, the recovery stages and the wall seconds. The first run's console output is kept
verbatim in the markdown (the README pastes it from there). --append adds rows to an existing results file (e.g.
the `--precision fp32` runs beside the default ones).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_io import RESULTS, machine_info, write_results  # noqa: E402


def one_run(extra: list[str]) -> dict:
    """One `edgeprune optimize` process in a fresh folder and cache; its report.json summarised, and its output."""
    with tempfile.TemporaryDirectory(prefix="edgeprune-default-") as tmp:
        env = {**os.environ, "EDGEPRUNE_CACHE": str(Path(tmp) / "cache"), "COLUMNS": "160"}
        cmd = [sys.executable, "-m", "edgeprune", "optimize", *extra, "-o", str(Path(tmp) / "out")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"edgeprune optimize failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        report = json.loads((Path(tmp) / "out" / "report.json").read_text())
    spd = report.get("speedup") or {}  # of what shipped (the INT8 artifact's where one shipped)
    last = proc.stdout.strip().splitlines()[-3:]
    met = any(line.startswith("targets met") for line in proc.stdout.splitlines())
    return {"args": " ".join(extra), "precision": (report.get("precision_choice") or {}).get("label", "FP32"),
            "speedup": spd.get("median"), "min": spd.get("min"), "max": spd.get("max"), "ci_low": spd.get("ci_low"),
            "ci_high": spd.get("ci_high"), "score": report["score"], "score_dense": report["score_dense"],
            "drop": report["score_dense"] - report["score"], "max_drop": report["max_drop"], "met": met,
            "attempts": [{"name": c["name"], "score": c["accuracy"], "note": c["note"]} for c in report["configs"]],
            "recovery": report.get("recovery"), "wall_s": wall, "output": proc.stdout, "tail": last}


def _command(row: dict) -> str:
    return " ".join(["edgeprune optimize", row["args"]]).strip()


def _markdown(rows: list[dict]) -> str:
    lines = ["# `edgeprune optimize` as the README runs it", "",
             "Each row is one fresh process (empty latency cache) of the command shown; speedup = median of the "
             "interleaved rounds against the dense model (min-max; ~95% interval of the median).", "",
             "| command | shipped | speedup (min-max; 95% CI) | neighbours (held-out) | drop <= max_drop | targets | "
             "attempts | wall s | run (UTC, commit) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        atts = "; ".join(f"{a['name']}: {'-' if a['score'] is None else format(a['score'], '.2f')} ({a['note']})"
                         for a in r["attempts"])  # score None: re-planned on its speed before it was scored
        lines.append(f"| `{_command(r)}` | {r['precision']} | {r['speedup']:.2f}x "
                     f"({r['min']:.2f}-{r['max']:.2f}; {r['ci_low']:.2f}-{r['ci_high']:.2f}) | {r['score']:.2f} | "
                     f"{r['drop']:.2f} {'<=' if r['drop'] <= r['max_drop'] else '>'} {r['max_drop']:g} | "
                     f"{'met' if r['met'] else 'not met'} | {atts} | {r['wall_s']:.0f} | {r['date_utc'][:16]} {r['commit']} |")
    first = next((r for r in rows if not r["args"]), rows[0])
    lines += ["", f"Output of the first `{_command(first)}` run ({first['date_utc'][:16]} UTC, commit "
              f"{first['commit']}):", "", "```text", first["output"].rstrip(), "```"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--extra", default="", help="arguments after `edgeprune optimize`, e.g. '--precision fp32'")
    ap.add_argument("--name", default="default_optimize")
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args()
    old = json.loads((RESULTS / f"{args.name}.json").read_text())["rows"] if args.append else []
    rows = list(old)
    for i in range(args.runs):
        print(f"[default_run] run {i + 1}/{args.runs}: edgeprune optimize {args.extra}", flush=True)
        info = machine_info()
        row = dict(one_run(shlex.split(args.extra)), date_utc=info["date_utc"], commit=info["commit"])
        print(f"[default_run] {row['precision']} {row['speedup']:.2f}x, score {row['score']:.2f}, "
              f"{'met' if row['met'] else 'not met'}, {row['wall_s']:.0f} s", flush=True)
        rows.append(row)
        write_results(args.name, rows, _markdown(rows))


if __name__ == "__main__":
    main()
