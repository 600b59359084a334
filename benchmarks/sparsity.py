"""Sparsity benchmark: accuracy of magnitude / Wanda / SparseGPT, uniform vs learned allocation, and measured latency.

    python benchmarks/sparsity.py [--quick]   ->  benchmarks/results/sparsity.md and .json

MiniLM-L6 (packaged): embedding cosine to the dense model on held-out sentences, and the accuracy of a
logistic-regression probe on Rotten Tomatoes (when benchmarks/zoo.py provides the data set).
A GPT-2-style decoder (benchmarks/zoo.py's tiny_gpt2 when present, else a 2-layer GPT-2 trained here for a
few hundred steps): held-out perplexity for the same grid. Latency: the dense and 2:4 MiniLM on ONNX Runtime
and OpenVINO CPU, with the per-runtime "accelerated" verdict and OpenVINO's perf-counter exec types as evidence.
Results are written after every configuration, so an interrupted run still leaves numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
GRID = [("2:4", None)] + [("unstructured", s) for s in (0.5, 0.7)]
METHODS = ("magnitude", "wanda", "sparsegpt")

try:  # the shared benchmark helpers (data sets, probe), written by another helper; optional here
    import zoo  # type: ignore
except ImportError:
    zoo = None


# -- data and models ----------------------------------------------------------------------

def sentences() -> tuple[list[str], list[int] | None, str]:
    """(texts, labels or None, source). Rotten Tomatoes from zoo when present, else local README prose."""
    if zoo is not None and hasattr(zoo, "rotten_tomatoes"):
        data = zoo.rotten_tomatoes()
        texts, labels = _texts_labels(data)
        if texts:
            return texts, labels, "Rotten Tomatoes (benchmarks/zoo.py)"
    import site

    lines = []
    for sp in site.getsitepackages():
        for readme in sorted(Path(sp).glob("*/README*"))[:200] + sorted(Path(sp).glob("*.dist-info/METADATA"))[:400]:
            try:
                for line in readme.read_text(errors="ignore").splitlines():
                    line = line.strip()
                    if 60 <= len(line) <= 300 and line[0].isalpha() and " " in line and "http" not in line:
                        lines.append(line)
            except OSError:
                continue
    rng = np.random.default_rng(0)
    lines = list(dict.fromkeys(lines))
    rng.shuffle(lines)
    return lines[:3000], None, "package README/METADATA prose (Rotten Tomatoes unavailable: benchmarks/zoo.py missing)"


def _texts_labels(data):
    if isinstance(data, dict):
        for key in ("train", "all", "test"):
            if key in data:
                return _texts_labels(data[key])
        if "text" in data:
            return list(data["text"]), list(data.get("label", [])) or None
    if isinstance(data, tuple) and len(data) == 2:
        return list(data[0]), list(data[1])
    if isinstance(data, list) and data and isinstance(data[0], (tuple, list)):
        return [d[0] for d in data], [int(d[1]) for d in data]
    return [], None


def tokenizer():
    from tokenizers import Tokenizer

    from edgeprune.models import builtin_path

    tok = Tokenizer.from_file(str(builtin_path("minilm") / "tokenizer.json"))
    tok.enable_padding(length=64)
    tok.enable_truncation(64)
    return tok


def encode(tok, texts):
    enc = tok.encode_batch(texts)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    return ids, mask, torch.zeros_like(ids)


def embed(model, batch, bs=64):
    """Mean-pooled, L2-normalised sentence embeddings (the sentence-transformers recipe)."""
    ids, mask, types = batch
    outs = []
    with torch.no_grad():
        for i in range(0, len(ids), bs):
            h = model(ids[i:i + bs], mask[i:i + bs], types[i:i + bs])
            m = mask[i:i + bs].unsqueeze(-1).float()
            outs.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(outs)


def probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000).fit(train_x.numpy(), train_y)
    return float(clf.score(test_x.numpy(), test_y))


def tiny_decoder(tok, texts, steps):
    """zoo.tiny_gpt2 when present; else a 2-layer GPT-2 (d=128) trained here on the same corpus."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=128, n_layer=2, n_head=4)
    model = GPT2LMHeadModel(cfg)
    ids, mask, _ = encode(tok, texts)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(ids), (32,))
        labels = ids[idx].masked_fill(mask[idx] == 0, -100)
        loss = model(input_ids=ids[idx], attention_mask=mask[idx], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), f"GPT-2 2 layers d=128 trained {steps} steps here"


def perplexity(model, batch) -> float:
    ids, mask, _ = batch
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ids), 64):
            labels = ids[i:i + 64].masked_fill(mask[i:i + 64] == 0, -100)
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids[i:i + 64], attention_mask=mask[i:i + 64], labels=labels).loss) * n
            count += n
    return math.exp(total / count)


# -- the grid -----------------------------------------------------------------------------

def configs(quick: bool):
    from edgeprune.sparsity import SparsityConfig

    out = []
    for pattern, sparsity in GRID:
        for method in METHODS:
            for allocation in ("uniform",) if pattern == "2:4" else ("uniform", "learned"):
                out.append(SparsityConfig(pattern=pattern, sparsity=sparsity, method=method, allocation=allocation,
                                          ignore=("*pooler*", "lm_head"), allocation_steps=60 if quick else 200,
                                          allocation_samples=16))
    return out


def label(cfg) -> str:
    return f"{cfg.pattern.name}{'' if cfg.sparsity in (None, 0.5) and cfg.pattern.name == '2:4' else f' {cfg.sparsity:.0%}'}"


def run_minilm(doc, save, quick):
    import edgeprune as ep

    texts, labels, source = sentences()
    tok = tokenizer()
    n_cal, n_eval = (32, 200) if quick else (128, 1000)
    calib, held = texts[:n_cal], texts[n_cal:n_cal + n_eval]
    loaded = ep.load_model("minilm")
    dense = loaded.module
    held_batch = encode(tok, held)
    ref = embed(dense, held_batch)
    probe = None
    if labels is not None:
        y = np.array(labels[n_cal:n_cal + n_eval])
        split = len(held) * 7 // 10
        probe = (split, y)
    def acc(emb):
        return None if probe is None else probe_accuracy(emb[:probe[0]], probe[1][:probe[0]], emb[probe[0]:], probe[1][probe[0]:])
    doc["minilm"] = {"data": source, "calibration_samples": n_cal, "eval_sentences": len(held), "seq_len": 64,
                     "dense": {"probe_accuracy": acc(ref)}, "rows": []}
    cal_batch = encode(tok, calib)
    for cfg in configs(quick):
        t0 = time.perf_counter()
        sparse, report = ep.sparsify(dense, None, cfg, calib=cal_batch, return_report=True)
        seconds = time.perf_counter() - t0
        emb = embed(sparse, held_batch)
        row = {"pattern": label(cfg), "method": cfg.method, "allocation": cfg.allocation, "seconds": round(seconds, 1),
               "global_sparsity": round(report.global_sparsity, 4), "pattern_ok": report.pattern_ok,
               "embedding_cosine": round(float((emb * ref).sum(-1).mean()), 4), "probe_accuracy": acc(emb)}
        if report.allocation:
            row["per_layer_sparsity"] = [round(l.sparsity, 3) for l in report.sparsified]
        doc["minilm"]["rows"].append(row)
        print(json.dumps(row), flush=True)
        save()
    return texts, tok


def run_decoder(doc, save, quick, texts, tok):
    import edgeprune as ep

    model, what = tiny_decoder(tok, texts[1200:], 60 if quick else 400)
    held = encode(tok, texts[:300])
    cal = encode(tok, texts[300:300 + (32 if quick else 128)])
    doc["decoder"] = {"model": what, "dense_perplexity": round(perplexity(model, held), 3), "rows": []}
    save()
    for cfg in configs(quick):
        t0 = time.perf_counter()
        sparse, report = ep.sparsify(model, None, cfg, calib=(cal[0], cal[1]), return_report=True)
        row = {"pattern": label(cfg), "method": cfg.method, "allocation": cfg.allocation,
               "seconds": round(time.perf_counter() - t0, 1), "global_sparsity": round(report.global_sparsity, 4),
               "perplexity": round(perplexity(sparse, held), 3)}
        doc["decoder"]["rows"].append(row)
        print(json.dumps(row), flush=True)
        save()


def run_latency(doc, save, quick):
    """Dense vs 2:4 MiniLM on ORT and OpenVINO CPU; the verdict column comes from the report, evidence from OV counters."""
    import edgeprune as ep
    from edgeprune.backends import BackendOptions, get_backend
    from edgeprune.bench import measure
    from edgeprune.export import export
    from edgeprune.sparsity import SparsityConfig

    loaded = ep.load_model("minilm", seq_len=128)
    sparse, report = ep.sparsify(loaded, None, SparsityConfig(pattern="2:4", method="magnitude", ignore=("*pooler*",)),
                                 return_report=True)
    report.assess(precision="fp32", sparse_rate=0.4)
    summary = report.summary()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, module in (("dense", loaded.module), ("2:4", sparse)):
            paths[name] = Path(tmp) / f"{name.replace(':', '_')}.onnx"
            export(module, loaded.example_inputs, paths[name], input_names=loaded.input_names)
        for backend_name, options in (("onnxruntime", BackendOptions(threads=2)),
                                      ("openvino", BackendOptions(threads=2, sparse_weights=True, extra={"sparse_rate": 0.4}))):
            for name, path in paths.items():
                backend = get_backend(backend_name, options).compile(path)
                feeds = backend.prepare_inputs(None)
                stats = measure(backend.runner(feeds), warmup=10, iters=30 if quick else 100)
                st = stats.stats
                row = {"model": name, "runtime": backend_name, "p50_ms": round(st.p50, 3), "p90_ms": round(st.p90, 3)}
                if name == "2:4":
                    s = summary["openvino" if backend_name == "openvino" else "onnxruntime"]
                    row["accelerated"] = f"{'/'.join(s['verdicts'])}: {s['main_reason']}"
                    if backend_name == "openvino":
                        layers = backend.inspect(feeds, runs=3)
                        fc = [l for l in layers if l.op_type in ("FullyConnected", "MatMul")]
                        row["evidence"] = (f"{sum(1 for l in fc if l.sparse)} of {len(fc)} FullyConnected/MatMul layers ran a sparse "
                                           f"kernel; exec types: {sorted({l.exec_type for l in fc})}")
                rows.append(row)
                print(json.dumps(row), flush=True)
    dense_ms = {r["runtime"]: r["p50_ms"] for r in rows if r["model"] == "dense"}
    for r in rows:
        r["speedup_vs_dense"] = round(dense_ms[r["runtime"]] / r["p50_ms"], 3)
    doc["latency"] = {"seq_len": 128, "batch": 1, "threads": 2, "rows": rows,
                      "torch_cuda_and_tensorrt": {k: summary[k] for k in ("torch-cuda", "tensorrt")}}
    save()


def markdown(doc) -> str:
    lines = ["# Sparsity: accuracy of magnitude / Wanda / SparseGPT, uniform vs learned allocation, measured latency", ""]
    env = doc.get("machine", {})
    lines.append(f"Machine: {env}. Date: {doc.get('date')}.")
    if "minilm" in doc:
        m = doc["minilm"]
        lines += ["", f"## MiniLM-L6 (data: {m['data']}; {m['calibration_samples']} calibration samples, "
                  f"{m['eval_sentences']} held-out sentences, seq len {m['seq_len']})", "",
                  f"Dense probe accuracy: {m['dense']['probe_accuracy']}", "",
                  "| pattern | method | allocation | global sparsity | embedding cosine | probe accuracy | seconds |", "|---|---|---|---|---|---|---|"]
        for r in m["rows"]:
            probe = "-" if r["probe_accuracy"] is None else f"{r['probe_accuracy']:.3f}"
            lines.append(f"| {r['pattern']} | {r['method']} | {r['allocation']} | {r['global_sparsity']:.2%} | "
                         f"{r['embedding_cosine']:.4f} | {probe} | {r['seconds']} |")
    if "decoder" in doc:
        d = doc["decoder"]
        lines += ["", f"## GPT-2-style decoder ({d['model']}); dense perplexity {d['dense_perplexity']}", "",
                  "| pattern | method | allocation | global sparsity | perplexity | seconds |", "|---|---|---|---|---|---|"]
        for r in d["rows"]:
            lines.append(f"| {r['pattern']} | {r['method']} | {r['allocation']} | {r['global_sparsity']:.2%} | {r['perplexity']} | {r['seconds']} |")
    if "latency" in doc:
        lat = doc["latency"]
        lines += ["", f"## Measured latency, MiniLM-L6 batch 1 x {lat['seq_len']} tokens, {lat['threads']} threads", "",
                  "| model | runtime | p50 ms | p90 ms | speedup vs dense | accelerated | evidence |", "|---|---|---|---|---|---|---|"]
        for r in lat["rows"]:
            lines.append(f"| {r['model']} | {r['runtime']} | {r['p50_ms']} | {r['p90_ms']} | {r['speedup_vs_dense']}x | "
                         f"{r.get('accelerated', '-')} | {r.get('evidence', '-')} |".replace("\n", " "))
        for k, s in lat["torch_cuda_and_tensorrt"].items():
            lines.append(f"- {k} (not measured on this CPU host): {s['verdicts']}: {s['main_reason']}")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small grid settings (smoke run)")
    parser.add_argument("--only", choices=["minilm", "decoder", "latency"], action="append")
    args = parser.parse_args()
    torch.set_num_threads(2)
    RESULTS.mkdir(exist_ok=True)
    import platform

    old = RESULTS / "sparsity.json"
    doc = json.loads(old.read_text()) if args.only and old.is_file() else {}  # --only refreshes sections, keeps the rest
    doc.update({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick,
           "machine": {"cpu": platform.processor() or platform.machine(), "threads": 2, "torch": torch.__version__}})
    from edgeprune.sparsity.support import HostFacts

    doc["machine"]["amx"] = HostFacts.probe().amx
    doc["machine"]["cpu"] = HostFacts.probe().cpu or doc["machine"]["cpu"]

    def save():
        (RESULTS / "sparsity.json").write_text(json.dumps(doc, indent=2, default=str))
        (RESULTS / "sparsity.md").write_text(markdown(doc))

    only = set(args.only or ["minilm", "decoder", "latency"])
    if "latency" in only:
        run_latency(doc, save, args.quick)
    texts, tok = (run_minilm(doc, save, args.quick) if "minilm" in only else (sentences()[0], tokenizer()))
    if "decoder" in only:
        run_decoder(doc, save, args.quick, texts, tok)
    save()


if __name__ == "__main__":
    main()
