"""One sweep config, start to end, inside its Ray task: read, optimize (timing placed on the target), save, record.

The record is what results.jsonl holds for the config: model, target, budget, precision, status, the measured
speedup (median, min, max over the interleaved rounds), the held-out score, the node ids and the start/end time of
every stage. The output folder travels back to the driver as tar bytes: nothing is written into the sweep folder
from here, so a worker killed mid-task leaves nothing behind that could be taken as done.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any


def config_data(model: dict, loaded, seed: int) -> tuple[tuple, str]:
    """((calib, train, eval), where the data came from): the entry's files; with none, the packaged default
    (MiniLM) or seeded random inputs shaped like the example, whose score only says how far the outputs moved."""
    from edgeprune.data.files import ReadOptions, read_sets

    if any(model.get(k) for k in ("calib", "train", "eval")):
        return read_sets(loaded, ReadOptions(n=None), calib=model.get("calib"), train=model.get("train"),
                         eval_data=model.get("eval")), "files"
    if model["model"] == "minilm":
        from edgeprune.datasets import minilm_default_sets

        return tuple(minilm_default_sets(loaded.input_names)), "packaged Rotten Tomatoes splits"
    return _random_sets(loaded.example_inputs, seed), "synthetic: random inputs (no data given; not a quality claim)"


def _random_sets(example: tuple, seed: int, n_calib: int = 48, n_eval: int = 32) -> tuple:
    """Disjoint seeded random batches like the example inputs (floats ~ N(0, 1); integers within the example's range)."""
    import torch

    gen = torch.Generator().manual_seed(seed)

    def batch(n: int) -> tuple:
        out = []
        for x in example:
            shape = (n, *x.shape[1:])
            if x.is_floating_point():
                out.append(torch.randn(shape, generator=gen))
            elif int(x.min()) == int(x.max()):  # a constant input (an attention mask of ones) stays constant
                out.append(torch.full(shape, int(x.min()), dtype=x.dtype))
            else:
                out.append(torch.randint(int(x.min()), int(x.max()) + 1, shape, generator=gen, dtype=x.dtype))
        return tuple(out)

    return batch(n_calib), None, batch(n_eval)


def optimize_config(payload: dict):
    from edgeprune.optimizer import OptimizeConfig
    from edgeprune.recover.config import RecoverConfig
    from edgeprune.targets.target import target

    model, tgt = payload["model"], payload["target"]
    kind, value = payload["budget"]
    recover = RecoverConfig(mode=model["recover"], **({"minutes": model["recover_minutes"]} if model.get("recover_minutes") else {}))
    extra = {k: payload[k] for k in ("rounds", "iters") if payload.get(k)}
    return OptimizeConfig(**{kind: value}, profile=target(tgt["profile"], tgt["runtime"]), runtime=tgt["runtime"],
                          precision=payload["precision"], metric=model.get("metric"), max_drop=model.get("max_drop"),
                          recover=recover, seed=payload["seed"], **extra)


def summary(result) -> dict[str, Any]:
    """What a results.jsonl row says of an OptimizeResult."""
    s = result.speedup or {}
    choice = result.precision or {}
    return {
        "speedup": {k: s.get(k) for k in ("median", "min", "max")} if s else None,
        "speedup_measured": bool(s), "predicted_ms": result.predicted_ms, "metric": result.metric,
        "score": result.score, "score_dense": result.score_dense, "max_drop": result.max_drop,
        "met": bool(result.attempts[-1].accepted), "attempts": len(result.attempts),
        "chosen_precision": choice.get("label", "FP32"),
        "plan": {g["name"]: [int(g["keep"]), int(g["width"])] for g in result.plan.groups if g["keep"] < g["width"]},
        "macs_kept": result.counts["optimized"]["macs"] / result.counts["dense"]["macs"],
    }


def run_config(payload: dict, placement: dict, remote_timing) -> dict:
    """The config task's body: returns {"record": ..., "outdir": tar bytes}."""
    from edgeprune.measurement.place import placed
    from edgeprune.models import load_model
    from edgeprune.optimizer import optimize
    from edgeprune.sweeper.stages import Spans, pack, placer

    spans = Spans()
    spans.open("prepare")
    started = time.time()
    try:
        model = payload["model"]
        config = optimize_config(payload)
        loaded = load_model(model["model"], model.get("input_shape"))
        (calib, train, held), source = config_data(model, loaded, payload["seed"])
        spans.next("optimize")
        place = placer(remote_timing, placement["resource"], placement["cpus"], placement.get("node"), spans)
        with placed(place):
            result = optimize(loaded.module, loaded.example_inputs, config, calib=calib, train=train, eval_data=held,
                              input_names=loaded.input_names, model_name=model["name"])
        spans.next("save")
        with tempfile.TemporaryDirectory(prefix="edgeprune-sweep-") as tmp:
            out = Path(tmp) / "out"
            result.save(out)
            data = pack(out)
    finally:
        spans.close()
    record = {**summary(result), "data": source, "node": spans.node, "started": started, "ended": time.time(),
              "stages": sorted(spans.rows, key=lambda r: r["start"])}
    return {"record": record, "outdir": data}


def time_on_device(payload: dict, bundle_bytes: bytes) -> dict:
    """ssh target: the bundle runner on the device (edgeprune.deploy.remote), in a task holding its resource."""
    from edgeprune.deploy.remote import run_remote

    tgt = payload["target"]
    with tempfile.TemporaryDirectory(prefix="edgeprune-sweep-ssh-") as tmp:
        bundle = Path(tmp) / f"{payload['model']['name']}.tar.gz"
        bundle.write_bytes(bundle_bytes)
        start = time.time()
        doc = run_remote(tgt["ssh"], bundle, python=tgt.get("python", "python3"), identity=tgt.get("identity"))
    res = (doc.get("results") or [{}])[0]
    rounds = res.get("round_p50_ms") or []
    return {"device_ms": {"p50": (res.get("stats") or {}).get("p50"), "round_min": min(rounds, default=None),
                          "round_max": max(rounds, default=None)}, "check_ok": doc.get("check", {}).get("ok"),
            "span": {"stage": "timing:device", "node": tgt["ssh"], "start": start, "end": time.time()}}
