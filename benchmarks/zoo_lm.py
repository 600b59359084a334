"""Language-modelling half of the zoo: a tiny GPT-2 and the Rotten Tomatoes token stream it learns (re-exported by
zoo.py; split out to keep each module under ~400 lines). Cache keys hash these functions' source, so their text
is the same as when they lived in zoo.py: moving them kept the cached weights valid.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import inspect
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.results_io import atomic_write as _atomic_write

CACHE = Path(__file__).resolve().parent / ".cache"  # = zoo.CACHE
SEED = 0  # = zoo.SEED (part of the cache key)


def _rt_frame():
    from benchmarks.zoo import _rt_frame as frame  # lazy: zoo imports this module at its end

    return frame()


def _minilm():
    from benchmarks.zoo import _minilm as load

    return load()


def tiny_gpt2(vocab_size: int, n_layer: int = 4, n_embd: int = 256, n_head: int = 4, n_positions: int = 1024,
              seed: int = SEED):
    """A randomly initialised GPT2LMHeadModel (seeded). Dropout is 0 so short training runs and evaluations are
    deterministic. pad = 0 and bos = eos = 102 match the MiniLM tokenizer's [PAD] / [SEP] (clamped for small vocabs)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    sep = 102 if vocab_size > 102 else vocab_size - 1
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=sep, eos_token_id=sep,
                     pad_token_id=0)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(cfg)


@functools.lru_cache(maxsize=None)
def _corpus_ids():
    tok = _minilm()[1]
    df = _rt_frame()
    texts = df["text"].tolist()
    texts = [texts[i] for i in np.random.default_rng(SEED).permutation(len(texts))]
    ids = tok(texts, add_special_tokens=False, verbose=False)["input_ids"]
    flat = [t for seq in ids for t in (*seq, tok.sep_token_id)]
    return torch.tensor(flat, dtype=torch.int64)


def char_or_token_corpus() -> torch.Tensor:
    """Every Rotten Tomatoes text (reviews and plot summaries, seed-0 shuffle) as one 1-D int64 stream of MiniLM
    WordPiece ids, each text followed by [SEP] (102). Vocabulary: minilm()[1].vocab_size (30522); ~490k tokens."""
    return _corpus_ids().clone()


def lm_blocks(seq_len: int = 128, val_frac: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(train (N, seq_len), val (M, seq_len)) non-overlapping blocks; val is the last val_frac of the stream."""
    ids = _corpus_ids()
    cut = int(len(ids) * (1 - val_frac))
    blocks = lambda t: t[: len(t) // seq_len * seq_len].view(-1, seq_len).clone()  # noqa: E731
    return blocks(ids[:cut]), blocks(ids[cut:])


# The decoder both structured.py and sparsity.py prune: 2 layers, 128 wide, 4 heads, 64-token blocks.
GPT2_SMALL = dict(n_layer=2, n_embd=128, n_head=4, n_positions=64)


def _fit_gpt2(model, train: torch.Tensor, steps: int, seed: int) -> None:
    """AdamW 2e-3, batches of 32 random blocks (seeded), next-token cross-entropy; fixed steps, not wall time,
    so the result (and its cache file) depends only on the arguments."""
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        ids = train[torch.randint(0, len(train), (32,), generator=g)]
        logits = model(input_ids=ids, use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@functools.lru_cache(maxsize=None)
def _trained_gpt2(steps: int, seed: int):
    train, val = lm_blocks(seq_len=GPT2_SMALL["n_positions"])
    vocab = int(max(train.max(), val.max())) + 1
    model = tiny_gpt2(vocab, **GPT2_SMALL, seed=seed)
    model.config._attn_implementation = "eager"  # ONNX export and the pruners trace the eager attention
    src = "".join(inspect.getsource(f) for f in (tiny_gpt2, _fit_gpt2, _corpus_ids, lm_blocks))
    key = hashlib.sha256(f"{src}|{GPT2_SMALL}|{vocab}|{steps}|{seed}|{SEED}".encode()).hexdigest()[:16]
    path = CACHE / f"tiny_gpt2_{key}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as for MNIST: one thread is faster in wall time on the shared 2-core machines
    try:
        _fit_gpt2(model, train, steps, seed)
    finally:
        torch.set_num_threads(threads)
    CACHE.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda f: torch.save(model.state_dict(), f), binary=True)
    return model.eval()


def trained_tiny_gpt2(steps: int = 200, seed: int = SEED):
    """tiny_gpt2(**GPT2_SMALL) trained `steps` steps on lm_blocks(64)'s train split; eval mode, eager attention,
    fresh copy. Trains once (~1-4 s per step on 2 shared cores), then loads benchmarks/.cache/tiny_gpt2_<hash>.pt."""
    return copy.deepcopy(_trained_gpt2(steps, seed))
