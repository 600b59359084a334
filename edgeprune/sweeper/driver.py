"""edgeprune.sweeper: every config of a SWEEP.yaml as a Ray task, results stored per config hash, a report at the end.

Ray schedules; nothing here does. The driver submits one task per config not yet done, waits for them in any
order, and stores each result atomically under DIR/configs/<hash>.json (its output folder under DIR/runs/<hash>/)
the moment it arrives: a re-run skips those, a Ctrl-C loses only the configs in flight. A task that raises is
retried by Ray up to `retries` times (also when its worker dies), then recorded as failed with one line; the
sweep goes on. Without an address the driver starts an embedded local Ray (`ray.init()`), whose one node holds
the resources of the targets that are this host or reached over ssh.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from edgeprune._io import atomic_dir, write_text_atomic
from edgeprune.errors import ConfigError
from edgeprune.sweeper.spec import SweepSpec, config_key, load_sweep, resolve


def expand(spec: SweepSpec, base: Path) -> list[dict]:
    """Every (model, target, budget, precision) as a task payload, in file order, each with its key."""
    out = []
    for m in spec.models:
        model = {**m.model_dump(), **{k: resolve(getattr(m, k), base) for k in ("model", "calib", "train", "eval")}}
        for entry in spec.targets:
            t = entry.model_copy(update={"identity": resolve(entry.identity, base)})
            for budget in spec.budgets.items():
                for precision in spec.precisions:
                    out.append({"key": config_key(m, entry, budget, precision, spec, base), "model": model,
                                "target": t.model_dump(), "budget": list(budget), "precision": precision,
                                "rounds": spec.rounds, "iters": spec.iters, "seed": spec.seed})
    return out


@contextlib.contextmanager
def ray_session(address: str | None, spec: SweepSpec) -> Iterator[None]:
    """Join `address` (ray://..., host:port or "auto"), or start an embedded local Ray holding the host targets."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as err:
        raise ConfigError("edgeprune sweep needs Ray", hint="pip install 'edgeprune[sweep]' (or pip install ray)") from err
    if ray.is_initialized():
        yield  # the caller's own Ray session (a notebook, a test): use it as it is
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        local = {t.resource_name: 1 for t in spec.targets if not t.resource}
        # address="local": a new instance even where `ray start` left a cluster running on this machine
        ray.init(address="local", num_cpus=os.cpu_count(), resources=local, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def placements(spec: SweepSpec) -> dict[str, dict]:
    """Per target: its resource, the CPUs of the node holding it (a timing task takes them all) and that node."""
    import ray

    out = {}
    for t in spec.targets:
        holders = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get(t.resource_name, 0) > 0]
        if not holders:
            raise ConfigError(f"target '{t.name}': no Ray node holds the resource '{t.resource_name}'",
                              hint=f"start that node with ray start --resources '{{\"{t.resource_name}\": 1}}'")
        node = holders[0]
        out[t.name] = {"resource": t.resource_name, "cpus": float(node["Resources"].get("CPU", 1)),
                       "node": node["NodeID"], "ssh": bool(t.ssh)}
    return out


class Store:
    """DIR/configs/<key>.json (one record each, written atomically) and DIR/runs/<key>/ (its output folder)."""

    def __init__(self, outdir: Path):
        self.root = Path(outdir)
        (self.root / "configs").mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> dict | None:
        path = self.root / "configs" / f"{key}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # missing or unreadable: not done

    def put(self, record: dict, outdir: bytes | None) -> None:
        from edgeprune.sweeper.stages import unpack

        if outdir is not None:
            run = self.root / "runs" / record["key"]
            run.parent.mkdir(exist_ok=True)
            with atomic_dir(run) as tmp:
                unpack(outdir, tmp)
        write_text_atomic(self.root / "configs" / f"{record['key']}.json", json.dumps(record, indent=1))

    def write_results(self, payloads: list[dict]) -> list[dict]:
        rows = [r for r in (self.get(p["key"]) for p in payloads) if r is not None]
        write_text_atomic(self.root / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        return rows


def _row(payload: dict, **fields) -> dict:
    return {"key": payload["key"], "model": payload["model"]["name"], "target": payload["target"]["name"],
            "budget": {payload["budget"][0]: payload["budget"][1]}, "precision": payload["precision"], **fields}


def _reason(err: BaseException) -> str:
    """The one line a failed config is recorded with: the user-facing error, not Ray's wrapper and traceback."""
    cause = getattr(err, "cause", None) or err
    text = " ".join(str(cause).split())
    return f"{type(cause).__name__}: {text}"[:500]


def remotes(retries: int, config_cpus: float = 1):
    """The Ray remote functions (made here so that `import edgeprune.sweeper` does not import Ray)."""
    import ray

    from edgeprune.sweeper import job, stages

    timing = ray.remote(max_retries=retries)(stages.timing_task)
    config = ray.remote(num_cpus=config_cpus, max_retries=retries, retry_exceptions=True)(job.run_config)
    device = ray.remote(num_cpus=0, max_retries=retries, retry_exceptions=True)(job.time_on_device)
    return timing, config, device


def _bundle_bytes(outdir: bytes, name: str) -> bytes:
    """The shipped output folder as a bundle (edgeprune.deploy.bundle) for the device runner."""
    import tempfile

    from edgeprune.deploy.bundle import build_bundle
    from edgeprune.sweeper.stages import unpack

    with tempfile.TemporaryDirectory(prefix="edgeprune-sweep-b-") as tmp:
        unpack(outdir, Path(tmp) / "out")
        build_bundle(Path(tmp) / "out", Path(tmp) / "b.tar.gz", name=name)
        return (Path(tmp) / "b.tar.gz").read_bytes()


def _collect(refs: dict, store: Store, report: Callable[[dict], None], fns, place: dict) -> None:
    """Wait for every task in any order; store each result the moment it arrives (ssh targets: after the device)."""
    import ray

    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
        report({"running": len(refs)})
        for ref in ready:
            payload, phase, out = refs.pop(ref)
            try:
                value = ray.get(ref)
            except Exception as err:  # a task that failed after its retries: recorded, the sweep goes on
                reason = _reason(err)
                store.put(_row(payload, status="failed", reason=reason, started=None, ended=time.time()), None)
                report({"failed": payload["key"], "reason": reason})
                continue
            if phase == "config" and place[payload["target"]["name"]]["ssh"]:
                device = fns[2].options(resources={place[payload["target"]["name"]]["resource"]: 1})
                refs[device.remote(payload, _bundle_bytes(value["outdir"], payload["model"]["name"]))] = (payload, "device", value)
                continue
            record, data = (value["record"], value["outdir"]) if phase == "config" else _with_device(out, value)
            store.put(_row(payload, status="ok", **record), data)
            report({"done": payload["key"]})


def _with_device(config_value: dict, device: dict) -> tuple[dict, bytes]:
    record = dict(config_value["record"])
    record.update(device_ms=device["device_ms"], device_check_ok=device["check_ok"])
    record["stages"] = record["stages"] + [device["span"]]
    return record, config_value["outdir"]


def sweep(spec: SweepSpec | str | Path, outdir: str | Path, *, address: str | None = None, retries: int = 1,
          retry_failed: bool = False, progress: Callable[[dict], None] | None = None, base: Path | None = None) -> list[dict]:
    """Run every config of `spec` not already stored in `outdir`; returns results.jsonl's rows (report.html too).

    A config whose record says ok is skipped; one that failed is skipped too unless retry_failed."""
    import ray

    from edgeprune.sweeper.report import write_report

    if not isinstance(spec, SweepSpec):
        spec, base = load_sweep(spec)
    base = base or Path.cwd()
    report = progress or (lambda event: None)
    store, payloads = Store(Path(outdir)), expand(spec, base)
    todo = [p for p in payloads if not _finished(store.get(p["key"]), retry_failed)]
    report({"total": len(payloads), "todo": len(todo)})
    if todo:
        with ray_session(address, spec):
            # one node that is also every target (embedded): timing owns it, so configs cannot overlap timing anyway;
            # each config gets all of that node's CPUs (Ray sets the task's torch threads from them), not one thread
            alive = [n for n in ray.nodes() if n.get("Alive")]
            config_cpus = float(alive[0]["Resources"].get("CPU", 1)) if len(alive) == 1 else 1
            place, fns = placements(spec), remotes(retries, config_cpus)
            refs = {fns[1].remote(p, place[p["target"]["name"]], fns[0]): (p, "config", None) for p in todo}
            try:
                _collect(refs, store, report, fns, place)
            except BaseException:  # Ctrl-C / SIGTERM: stop what runs; what finished is stored and will be skipped
                for ref in refs:
                    ray.cancel(ref, force=True)
                raise
    rows = store.write_results(payloads)
    write_report(rows, Path(outdir) / "report.html")
    return rows


def _finished(record: dict | None, retry_failed: bool) -> bool:
    return record is not None and (record.get("status") == "ok" or (record.get("status") == "failed" and not retry_failed))
