"""Sparse attention (METHODS.md §7) on real runtimes: layer latency, MiniLM-L6 end to end, GPT-2 perplexity.

    python benchmarks/sparse_attention.py            # full run (≤ ~15 min on a quiet machine) -> results/sparse_attention.*
    python benchmarks/sparse_attention.py --quick    # smoke run: small sizes, prints only (results not written)
    python benchmarks/sparse_attention.py --sections layer gpt2   # re-measure some sections, keep the others

1. attention layer (12 heads x 32, MiniLM's shape), dense vs block-sparse (block 64, density 0.25 and, from
   L = 1024, 0.125; compensation on), exported to ONNX and run on ONNX Runtime and OpenVINO at L = 512, 1024, 2048, 4096; interleaved rounds.
2. MiniLM-L6 at 512 tokens: sentence-embedding cosine to dense and a Rotten Tomatoes probe on long documents
   (same-label reviews joined to 512 tokens, so attention really spans 512 tokens), calibrated per-layer density;
   ONNX Runtime / OpenVINO latency of the whole model.
3. GPT-2-style decoder (tiny_gpt2), byte-level, trained here at context 1024 on the Rotten Tomatoes texts grouped
   per movie (weights cached in benchmarks/.cache); validation perplexity vs density with and without compensation.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import zoo  # noqa: E402
from benchmarks.results_io import atomic_write  # noqa: E402
from edgeprune.attention import AttentionSparsityConfig, sparsify_attention  # noqa: E402
from edgeprune.attention.latency import AttentionLayer  # noqa: E402
from edgeprune.backends import BackendOptions, get_backend  # noqa: E402
from edgeprune.measurement.bench import benchmark_sessions, compare  # noqa: E402
from edgeprune.exporter import convert, export  # noqa: E402

BACKENDS = ("onnxruntime", "openvino")


def latency(models: dict[str, nn.Module], inputs: tuple, names: list[str], backend: str, rounds: int, iters: int,
            tmp: Path, dynamic: dict | None = None):
    """{label: (p50 ms, speedup vs the first model)} on one runtime, interleaved rounds (as structured.py)."""
    sessions = []
    for i, (label, m) in enumerate(models.items()):
        onnx_path = tmp / f"{label}_{inputs[0].shape[-2] if inputs[0].ndim == 4 else inputs[0].shape[1]}.onnx"
        if not onnx_path.exists():
            export(m, inputs, onnx_path, input_names=names, dynamic_dims=dynamic)
        path = onnx_path
        if backend == "openvino":
            path = onnx_path.with_suffix(".xml")
            if not path.exists():
                feeds = {n: t.numpy() for n, t in zip(names, inputs)}
                with torch.no_grad():
                    ref = m(*inputs)
                convert(onnx_path, path, "openvino", reference=([ref.numpy()], feeds))
        sess = get_backend(backend, BackendOptions(precision="fp32"))
        sess.compile(path)
        sessions.append((label, sess, sess.prepare_inputs({n: t.numpy() for n, t in zip(names, inputs)})))
    results = benchmark_sessions(sessions, batch=1, warmup=3, iters=iters, rounds=rounds)
    speed = [None] + compare(results)
    return {label: (r.stats.p50, None if s is None else {"median": s.median, "min": s.min, "max": s.max})
            for (label, _, _), r, s in zip(sessions, results, speed)}


def Layer(density: float, causal: bool = False) -> nn.Module:
    """One attention layer (block 64, window 1, 1 global block): the module `optimize` times for its decision."""
    return AttentionLayer(AttentionSparsityConfig(density=density, block_size=64, window=1, global_tokens=1), causal)


def bench_layer(args, tmp: Path) -> list[dict]:
    """Dense and every density of args.layer_densities(L) in one interleaved run per (L, causal, runtime)."""
    rows = []
    for L in args.lengths:
        q, k, v = (torch.randn(1, 12, L, 32) for _ in range(3))
        for causal in (False, True):
            c = int(causal)
            models = {f"dense_c{c}": Layer(1.0, causal).eval()}
            models.update({f"sparse{d}_c{c}": Layer(d, causal).eval() for d in args.layer_densities(L)})
            ref = models[f"dense_c{c}"](q, k, v)
            err = {label: float((m(q, k, v) - ref).norm() / ref.norm()) for label, m in models.items()}
            for backend in BACKENDS:
                lat = latency(models, (q, k, v), ["q", "k", "v"], backend, args.rounds, args.iters, tmp,
                              dynamic={i: {2: "seq"} for i in range(3)})  # dynamic L, as deployed
                d_ms = lat[f"dense_c{c}"][0]
                for density in args.layer_densities(L):
                    s_ms, sp = lat[f"sparse{density}_c{c}"]
                    rows.append({"seq": L, "causal": causal, "backend": backend, "density": density, "block": 64,
                                 "dense_ms": d_ms, "sparse_ms": s_ms, "speedup": sp,
                                 "rel_error_random_qkv": err[f"sparse{density}_c{c}"], **stamp()})
                    print(f"layer L={L:5d} causal={causal!s:5} {backend:11s} density {density:<5} dense {d_ms:8.2f} ms "
                          f"sparse {s_ms:8.2f} ms  speedup {sp['median']:.2f}x ({sp['min']:.2f}-{sp['max']:.2f})", flush=True)
    return rows


# -- MiniLM-L6 at 512 ----------------------------------------------------------------------------------

def long_documents(n_docs: int, tokens: int = 512):
    """Same-label Rotten Tomatoes reviews joined until each document fills `tokens` WordPiece tokens."""
    texts, y = zoo.rotten_tomatoes()
    tok = zoo.minilm()[1]
    lens = [len(ids) for ids in tok(texts, add_special_tokens=False, verbose=False)["input_ids"]]
    docs, labels = [], []
    for label in (0, 1):
        cur, n = [], 0
        for t, ln, lab in zip(texts, lens, y):
            if lab != label:
                continue
            cur.append(t)
            n += ln
            if n >= tokens:
                docs.append(" ".join(cur))
                labels.append(label)
                cur, n = [], 0
                if sum(1 for lab2 in labels if lab2 == label) >= n_docs // 2:
                    break
    order = np.random.default_rng(0).permutation(len(docs))
    return [docs[i] for i in order], np.asarray(labels)[order]


class Encoder(nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state


@torch.no_grad()
def embed(model, x, batch: int = 8) -> torch.Tensor:
    out = []
    for i in range(0, len(x["input_ids"]), batch):
        h = model(x["input_ids"][i:i + batch], x["attention_mask"][i:i + batch], x["token_type_ids"][i:i + batch])
        out.append(nn.functional.normalize(zoo.mean_pool(h.last_hidden_state, x["attention_mask"][i:i + batch]), dim=-1))
    return torch.cat(out)


def bench_minilm(args, tmp: Path) -> dict:
    model, _ = zoo.minilm()
    docs, y = long_documents(args.docs)
    x = zoo.minilm_inputs(docs, seq_len=512)
    n_train = len(docs) * 2 // 3
    calib_train = tuple(x[k][:8] for k in ("input_ids", "attention_mask", "token_type_ids"))  # probe-train docs only
    t0 = time.perf_counter()
    sparse, report = sparsify_attention(model, None, AttentionSparsityConfig(density=0.25, block_size=64),
                                        calib=calib_train, return_report=True)
    calib_s = time.perf_counter() - t0
    e_dense, e_sparse = embed(model, x), embed(sparse, x)
    cos = float((e_dense * e_sparse).sum(-1).mean())
    acc = {name: zoo.probe_accuracy(e[:n_train], y[:n_train], e[n_train:], y[n_train:])
           for name, e in (("dense", e_dense), ("sparse", e_sparse))}
    ex = tuple(x[k][:1] for k in ("input_ids", "attention_mask", "token_type_ids"))
    lat = {b: latency({"minilm_dense": Encoder(model).eval(), "minilm_sparse": Encoder(sparse).eval()}, ex,
                      ["input_ids", "attention_mask", "token_type_ids"], b, args.rounds, args.iters, tmp,
                      dynamic={i: {1: "seq"} for i in range(3)}) for b in BACKENDS}
    res = {"seq": 512, "docs": len(docs), "measured": stamp(), "n_train": n_train, "embedding_cosine": cos, "probe_accuracy": acc,
           "layer_density": {r.name: r.density for r in report}, "calibration_s": calib_s,
           "layer_compensate": {r.name: r.compensate for r in report},
           "latency": {b: {"dense_ms": v["minilm_dense"][0], "sparse_ms": v["minilm_sparse"][0],
                           "speedup": v["minilm_sparse"][1]} for b, v in lat.items()}}
    print(f"minilm@512: cosine {cos:.4f}  probe dense {acc['dense']:.3f} sparse {acc['sparse']:.3f}  densities "
          f"{list(res['layer_density'].values())}", flush=True)
    for b, v in res["latency"].items():
        print(f"minilm@512 {b:11s} dense {v['dense_ms']:.1f} ms sparse {v['sparse_ms']:.1f} ms speedup "
              f"{v['speedup']['median']:.2f}x", flush=True)
    return res


# -- GPT-2 decoder at context 1024 ---------------------------------------------------------------------
# Byte-level, one document per movie (its plot summary and reviews in file order): distant context (names,
# plot words) then helps the next byte, so dropping distant key blocks has something to lose. A WordPiece
# model of this size spends its few minutes on the 30k-way output layer and stays near unigram perplexity
# (ppl 764 after 240 s in the first run of this script), where no attention change can show.

def byte_blocks(ctx: int, val_frac: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """(train (N, ctx), val (M, ctx)) uint8 ids of the per-movie documents (seed-0 order), '\n'-joined."""
    df = zoo._rt_frame()
    docs = df.groupby("movie_name", sort=False)["text"].apply(" ".join).tolist()
    docs = [docs[i] for i in np.random.default_rng(0).permutation(len(docs))]
    ids = torch.tensor(list("\n".join(docs).encode("utf-8", "replace")), dtype=torch.int64)
    cut = int(len(ids) * (1 - val_frac))
    blocks = lambda t: t[: len(t) // ctx * ctx].view(-1, ctx).clone()  # noqa: E731
    return blocks(ids[:cut]), blocks(ids[cut:])


def _fit(model, train, args):
    """AdamW, lr linearly decayed from 2e-3, seeded batches; fixed steps, so the cache key fixes the weights."""
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / args.gpt_steps)
    g = torch.Generator().manual_seed(0)
    model.train()
    for step in range(args.gpt_steps):
        ids = train[torch.randint(0, len(train), (args.gpt_batch,), generator=g)]
        loss = model(ids, labels=ids, use_cache=False).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.gpt_steps - 1:
            print(f"gpt2 step {step} train loss {float(loss.detach()):.3f}", flush=True)
    return model.eval()


def train_gpt2(args):
    """tiny_gpt2 on byte_blocks(ctx), trained once and cached in benchmarks/.cache (key: settings + this code)."""
    import hashlib
    import inspect

    train, val = byte_blocks(args.ctx)
    model = zoo.tiny_gpt2(256, n_layer=args.gpt_layers, n_embd=args.gpt_embd, n_head=4, n_positions=args.ctx)
    settings = (args.ctx, args.gpt_layers, args.gpt_embd, args.gpt_batch, args.gpt_steps)
    src = "".join(inspect.getsource(f) for f in (byte_blocks, _fit, zoo.tiny_gpt2))
    path = zoo.CACHE / f"byte_gpt2_{hashlib.sha256(f'{src}|{settings}'.encode()).hexdigest()[:16]}.pt"
    t0, cached = time.perf_counter(), path.exists()
    if cached:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.eval()
    else:
        _fit(model, train, args)
        zoo.CACHE.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: torch.save(model.state_dict(), f), binary=True)
    print(f"gpt2: {args.gpt_steps} steps ({'cached' if cached else 'trained'}) {time.perf_counter() - t0:.0f} s",
          flush=True)
    return model, train, val[: args.val_blocks], args.gpt_steps


@torch.no_grad()
def perplexity(model, val) -> float:
    """Per-byte perplexity: exp(mean next-byte cross-entropy) over the validation blocks."""
    nll = [float(model(val[i:i + 1], labels=val[i:i + 1], use_cache=False).loss) for i in range(len(val))]
    return float(np.exp(np.mean(nll)))


def bench_gpt2(args) -> dict:
    model, train, val, steps = train_gpt2(args)
    calib = train[:8]  # compensate="auto" picks per layer on these (training blocks)
    rows = [{"density": 1.0, "compensate": None, "ppl": perplexity(model, val)}]
    print(f"gpt2 dense ppl {rows[0]['ppl']:.3f}", flush=True)
    for density in args.densities:
        for comp in (True, False, "auto"):
            cfg = AttentionSparsityConfig(density=density, block_size=64, compensate=comp, allocation="uniform")
            sparse, report = sparsify_attention(model, None, cfg, calib=calib, return_report=True)
            rows.append({"density": density, "compensate": comp, "ppl": perplexity(sparse, val),
                         "per_layer_compensate": [r.compensate for r in report]})
            print(f"gpt2 density {density:.3f} compensate {comp!s:5} ppl {rows[-1]['ppl']:.3f}", flush=True)
    return {"ctx": args.ctx, "layers": args.gpt_layers, "embd": args.gpt_embd, "train_steps": steps,
            "batch": args.gpt_batch, "tokens": "bytes of per-movie documents", "val_blocks": len(val),
            "rows": rows, "measured": stamp()}


def stamp() -> dict:
    """When and how loaded: each section is measured on its own and merged into the results."""
    import os

    return {"date_utc": zoo.machine_info()["date_utc"], "load_avg_1min": round(os.getloadavg()[0], 2),
            "threads": torch.get_num_threads()}


def markdown(layer_rows, mini, gpt, args) -> str:
    fmt = lambda s: "-" if s is None else f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"  # noqa: E731
    md = ["# Sparse attention (block 64, window 1, 1 global block)", "",
          "Compensation of dropped blocks (pooled key/value): on in the attention-layer rows; in MiniLM and in the "
          "GPT-2 'auto' rows chosen per layer on calibration data (compensate='auto', the default).", "",
          "## Attention layer (1 x 12 heads x L x 32)", "",
          "Dense and the sparse densities of one L are timed in the same interleaved rounds.", "",
          "| L | causal | runtime | density | dense ms | sparse ms | speedup (median, min-max) |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['seq']} | {r['causal']} | {r['backend']} | {r.get('density', 0.25)} | {r['dense_ms']:.2f} | "
           f"{r['sparse_ms']:.2f} | {fmt(r['speedup'])} |" for r in layer_rows]
    md += ["", f"## MiniLM-L6 at 512 tokens ({mini['docs']} long same-label documents, probe trained on {mini['n_train']})", "",
           f"- embedding cosine sparse vs dense: {mini['embedding_cosine']:.4f}",
           f"- probe accuracy: dense {mini['probe_accuracy']['dense']:.3f}, sparse {mini['probe_accuracy']['sparse']:.3f}",
           f"- per-layer density (calibrated, target 0.25): {list(mini['layer_density'].values())}",
           f"- per-layer compensation (auto): {list(mini.get('layer_compensate', {}).values()) or 'not recorded'}", ""]
    md += [f"- {b}: dense {v['dense_ms']:.1f} ms, sparse {v['sparse_ms']:.1f} ms, speedup {fmt(v['speedup'])}"
           for b, v in mini["latency"].items()]
    md += ["", f"## GPT-2-style decoder, context {gpt['ctx']}, byte-level", "",
           f"{gpt['layers']} layers x {gpt['embd']}, 4 heads, trained here for {gpt['train_steps']} steps of "
           f"{gpt.get('batch', '?')} x {gpt['ctx']} bytes on the Rotten Tomatoes texts grouped into one document per movie; "
           f"per-byte perplexity on {gpt['val_blocks']} held-out blocks. Uniform density per layer, block 64.", "",
           "auto = per layer, compensation on or off, whichever gives the lower attention-output error on 8 training "
           "blocks.", "",
           "| density | compensation | perplexity per byte | per-layer compensation |", "|---|---|---|---|"]
    md += [f"| {r['density']} | {'-' if r['compensate'] is None else r['compensate']} | {r['ppl']:.3f} | "
           f"{r.get('per_layer_compensate', '-')} |" for r in gpt["rows"]]
    return "\n".join(md) + "\n"


SECTIONS = ("layer", "minilm", "gpt2")


def previous_sections() -> dict:
    """The sections of the committed results, so a run of some sections keeps the others."""
    try:
        rows = json.loads((zoo.RESULTS / "sparse_attention.json").read_text())["rows"]
    except (OSError, ValueError, KeyError):
        return {}
    return {k: v for k, v in rows.items() if k in SECTIONS} if isinstance(rows, dict) else {}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few rounds; results are printed, not written")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                   help="run these; the others are kept from the existing results (each section carries its date)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the runtimes' sessions use 2 regardless)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.quick:
        args.lengths, args.rounds, args.iters, args.docs = [512, 1024], 2, 3, 24
        args.ctx, args.gpt_layers, args.gpt_embd, args.gpt_batch, args.gpt_steps, args.val_blocks = 1024, 2, 64, 2, 10, 2
        args.densities = [0.25]
    else:
        args.lengths, args.rounds, args.iters, args.docs = [512, 1024, 2048, 4096], 5, 10, 300
        args.ctx, args.gpt_layers, args.gpt_embd, args.gpt_batch, args.gpt_steps, args.val_blocks = 1024, 4, 128, 4, 600, 24
        args.densities = [0.5, 0.25, 0.125]
    # 0.125 from L = 1024 on: at 512 (8 blocks) it would keep only the local and global blocks
    args.layer_densities = lambda L: (0.25, 0.125) if L >= 1024 else (0.25,)
    t0 = time.perf_counter()
    doc = {} if args.quick else previous_sections()
    with tempfile.TemporaryDirectory() as tmp:
        if "layer" in args.sections:
            doc["layer"] = bench_layer(args, Path(tmp))
        if "minilm" in args.sections:
            doc["minilm"] = bench_minilm(args, Path(tmp))
    if "gpt2" in args.sections:
        doc["gpt2"] = bench_gpt2(args)
    if any(k not in doc for k in SECTIONS):
        print(f"sections run: {sorted(doc)}; nothing written (a full run needs every section)")
        return
    md = markdown(doc["layer"], doc["minilm"], doc["gpt2"], args)
    print(md)
    print(f"total {time.perf_counter() - t0:.0f} s")
    if not args.quick:
        zoo.write_results("sparse_attention", doc, md, meta={"threads": torch.get_num_threads(),
                                                             "sections_run": args.sections,
                                                             "seconds": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
