"""Results files every benchmark writes: machine and versions, UTC date, atomic JSON + markdown.

    from benchmarks.results_io import write_results   # (also re-exported by benchmarks.zoo)
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


# -- machine info and results -------------------------------------------------------------------------

def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _proc(path: str, key: str) -> str | None:
    try:
        return next((ln.split(":", 1)[1].strip() for ln in Path(path).read_text().splitlines() if ln.startswith(key)),
                    None)
    except OSError:
        return None


def machine_info() -> dict:
    """What every results file records: CPU, cores, memory, versions (from metadata, nothing imported), UTC date."""
    mem_kb = _proc("/proc/meminfo", "MemTotal")
    return {
        "cpu": _proc("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        **{pkg: _version(pkg) for pkg in ("torch", "onnxruntime", "openvino", "transformers", "numpy", "edgeprune")},
        "commit": _commit(),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _commit() -> str | None:
    """The repository's HEAD (with '+dirty' when tracked files differ from it), or None outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def _json_default(o):
    """numpy / torch scalars and arrays, Paths -> JSON."""
    if isinstance(o, (np.generic, np.ndarray, torch.Tensor)):
        return o.tolist()  # a 0-d array or scalar gives a plain Python number
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write(path: Path, write, binary: bool = False) -> None:
    """Write to a temp file in the same directory, then os.replace: readers never see a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(name: str, rows, markdown: str, meta: dict | None = None, results_dir: Path | None = None):
    """Write {results_dir}/{name}.json ({"name", "machine", "meta", "rows"}) and {name}.md (markdown + a machine
    footer), each atomically. rows: list of dicts, or any JSON-able object (e.g. {"latency": [...], ...}).
    Returns (json_path, md_path)."""
    out = Path(results_dir) if results_dir is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    doc = {"name": name, "machine": info, "meta": meta or {}, "rows": rows}
    footer = ("\n\n---\nMachine: " + ", ".join(f"{k} {v}" for k, v in info.items() if v is not None) + "\n")
    jpath, mpath = out / f"{name}.json", out / f"{name}.md"
    atomic_write(jpath, lambda f: f.write(json.dumps(doc, indent=2, default=_json_default) + "\n"))
    atomic_write(mpath, lambda f: f.write(markdown.rstrip("\n") + footer))
    return jpath, mpath
