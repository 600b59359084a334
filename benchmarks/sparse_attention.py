"""Sparse attention (METHODS.md §7) on real runtimes: layer latency, MiniLM-L6 end to end, GPT-2 perplexity.

    python benchmarks/sparse_attention.py            # full run (≤ ~15 min on a quiet machine) -> results/sparse_attention.*
    python benchmarks/sparse_attention.py --quick    # smoke run: small sizes, prints only (results not written)

1. attention layer (12 heads x 32, MiniLM's shape), dense vs block-sparse (block 64, density 0.25, compensation on),
   exported to ONNX and run on ONNX Runtime and OpenVINO at L = 512, 1024, 2048, 4096; interleaved rounds.
2. MiniLM-L6 at 512 tokens: sentence-embedding cosine to dense and a Rotten Tomatoes probe on long documents
   (same-label reviews joined to 512 tokens, so attention really spans 512 tokens), calibrated per-layer density;
   ONNX Runtime / OpenVINO latency of the whole model.
3. GPT-2-style decoder (tiny_gpt2) trained at context 1024 on the Rotten Tomatoes token stream; validation
   perplexity vs density with and without compensation.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import zoo  # noqa: E402
from edgeprune.attention import AttentionSparsityConfig, attention_layers, sparsify_attention  # noqa: E402
from edgeprune.attention.latency import AttentionLayer  # noqa: E402
from edgeprune.backends import BackendOptions, get_backend  # noqa: E402
from edgeprune.bench import benchmark_sessions, compare  # noqa: E402
from edgeprune.export import export, export_openvino  # noqa: E402

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
                export_openvino(onnx_path, path, reference=([ref.numpy()], feeds))
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
    rows = []
    for L in args.lengths:
        q, k, v = (torch.randn(1, 12, L, 32) for _ in range(3))
        for causal in (False, True):
            models = {f"dense_c{int(causal)}": Layer(1.0, causal).eval(), f"sparse_c{int(causal)}": Layer(0.25, causal).eval()}
            ref = models[f"dense_c{int(causal)}"](q, k, v)
            err = float((models[f"sparse_c{int(causal)}"](q, k, v) - ref).norm() / ref.norm())
            for backend in BACKENDS:
                lat = latency(models, (q, k, v), ["q", "k", "v"], backend, args.rounds, args.iters, tmp,
                              dynamic={i: {2: "seq"} for i in range(3)})  # dynamic L, as deployed
                (d_ms, _), (s_ms, sp) = lat.values()
                rows.append({"seq": L, "causal": causal, "backend": backend, "density": 0.25, "block": 64,
                             "dense_ms": d_ms, "sparse_ms": s_ms, "speedup": sp, "rel_error_random_qkv": err})
                print(f"layer L={L:5d} causal={causal!s:5} {backend:11s} dense {d_ms:8.2f} ms  sparse {s_ms:8.2f} ms  "
                      f"speedup {sp['median']:.2f}x ({sp['min']:.2f}-{sp['max']:.2f})", flush=True)
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
    res = {"seq": 512, "docs": len(docs), "n_train": n_train, "embedding_cosine": cos, "probe_accuracy": acc,
           "layer_density": {r.name: r.density for r in report}, "calibration_s": calib_s,
           "latency": {b: {"dense_ms": v["minilm_dense"][0], "sparse_ms": v["minilm_sparse"][0],
                           "speedup": v["minilm_sparse"][1]} for b, v in lat.items()}}
    print(f"minilm@512: cosine {cos:.4f}  probe dense {acc['dense']:.3f} sparse {acc['sparse']:.3f}  densities "
          f"{list(res['layer_density'].values())}", flush=True)
    for b, v in res["latency"].items():
        print(f"minilm@512 {b:11s} dense {v['dense_ms']:.1f} ms sparse {v['sparse_ms']:.1f} ms speedup "
              f"{v['speedup']['median']:.2f}x", flush=True)
    return res


# -- GPT-2 decoder at context 1024 ---------------------------------------------------------------------

def train_gpt2(args):
    train, val = zoo.lm_blocks(seq_len=args.ctx)
    vocab = zoo.minilm()[1].vocab_size
    model = zoo.tiny_gpt2(vocab, n_layer=args.gpt_layers, n_embd=args.gpt_embd, n_head=4, n_positions=args.ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    model.train()
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < args.train_s:
        ids = train[torch.randint(0, len(train), (args.gpt_batch,), generator=g)]
        loss = model(ids, labels=ids, use_cache=False).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    print(f"gpt2: {steps} steps in {time.perf_counter() - t0:.0f} s, last train loss {float(loss.detach()):.3f}", flush=True)
    return model.eval(), val[: args.val_blocks], steps


@torch.no_grad()
def perplexity(model, val) -> float:
    nll = [float(model(val[i:i + 1], labels=val[i:i + 1], use_cache=False).loss) for i in range(len(val))]
    return float(np.exp(np.mean(nll)))


def bench_gpt2(args) -> dict:
    model, val, steps = train_gpt2(args)
    rows = [{"density": 1.0, "compensate": None, "ppl": perplexity(model, val)}]
    print(f"gpt2 dense ppl {rows[0]['ppl']:.2f}", flush=True)
    for density in args.densities:
        for comp in (True, False):
            cfg = AttentionSparsityConfig(density=density, block_size=64, compensate=comp, allocation="uniform")
            sparse = sparsify_attention(model, None, cfg)
            rows.append({"density": density, "compensate": comp, "ppl": perplexity(sparse, val)})
            print(f"gpt2 density {density:.3f} compensate {comp!s:5} ppl {rows[-1]['ppl']:.2f}", flush=True)
    return {"ctx": args.ctx, "layers": args.gpt_layers, "embd": args.gpt_embd, "train_steps": steps,
            "train_s": args.train_s, "val_blocks": len(val), "rows": rows}


def markdown(layer_rows, mini, gpt, args) -> str:
    fmt = lambda s: "-" if s is None else f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"  # noqa: E731
    md = ["# Sparse attention (block 64, window 1, 1 global block, pooled-block compensation)", "",
          "## Attention layer (1 x 12 heads x L x 32), density 0.25", "",
          "| L | causal | runtime | dense ms | sparse ms | speedup (median, min-max) |", "|---|---|---|---|---|---|"]
    md += [f"| {r['seq']} | {r['causal']} | {r['backend']} | {r['dense_ms']:.2f} | {r['sparse_ms']:.2f} | {fmt(r['speedup'])} |"
           for r in layer_rows]
    md += ["", f"## MiniLM-L6 at 512 tokens ({mini['docs']} long same-label documents, probe trained on {mini['n_train']})", "",
           f"- embedding cosine sparse vs dense: {mini['embedding_cosine']:.4f}",
           f"- probe accuracy: dense {mini['probe_accuracy']['dense']:.3f}, sparse {mini['probe_accuracy']['sparse']:.3f}",
           f"- per-layer density (calibrated, target 0.25): {list(mini['layer_density'].values())}", ""]
    md += [f"- {b}: dense {v['dense_ms']:.1f} ms, sparse {v['sparse_ms']:.1f} ms, speedup {fmt(v['speedup'])}"
           for b, v in mini["latency"].items()]
    md += ["", f"## GPT-2-style decoder, context {gpt['ctx']} ({gpt['layers']} layers x {gpt['embd']}, "
           f"{gpt['train_steps']} steps / {gpt['train_s']} s of training), {gpt['val_blocks']} validation blocks", "",
           "| density | compensation | perplexity |", "|---|---|---|"]
    md += [f"| {r['density']} | {'-' if r['compensate'] is None else r['compensate']} | {r['ppl']:.2f} |" for r in gpt["rows"]]
    return "\n".join(md) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few rounds; results are printed, not written")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if args.quick:
        args.lengths, args.rounds, args.iters, args.docs = [512, 1024], 2, 3, 24
        args.ctx, args.gpt_layers, args.gpt_embd, args.gpt_batch, args.train_s, args.val_blocks = 1024, 2, 64, 2, 15, 2
        args.densities = [0.25]
    else:
        args.lengths, args.rounds, args.iters, args.docs = [512, 1024, 2048, 4096], 5, 10, 300
        args.ctx, args.gpt_layers, args.gpt_embd, args.gpt_batch, args.train_s, args.val_blocks = 1024, 4, 128, 4, 240, 24
        args.densities = [0.5, 0.25, 0.125]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        layer_rows = bench_layer(args, Path(tmp))
        mini = bench_minilm(args, Path(tmp))
    gpt = bench_gpt2(args)
    md = markdown(layer_rows, mini, gpt, args)
    print(md)
    print(f"total {time.perf_counter() - t0:.0f} s")
    if not args.quick:
        zoo.write_results("sparse_attention", {"layer": layer_rows, "minilm": mini, "gpt2": gpt}, md,
                          meta={"threads": torch.get_num_threads(), "seconds": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
