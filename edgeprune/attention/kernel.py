"""Block-sparse attention with dropped-block compensation (METHODS.md §7), written so it exports to ONNX.

Every op here is plain torch with symbolic-shape-safe arithmetic, so `torch.onnx.export(dynamo=True)` with a
dynamic sequence axis gives a graph of TopK + Gather + MatMul on the *gathered* key/value blocks: the dense
L x L score matrix never exists. Shapes use b = batch, h = heads, L = sequence, d = head dim, B = block size,
n = number of blocks (L padded up to n*B), K = key blocks kept per query block.

Steps (one call):
  1. pad L to n*B; padded keys are invalid (masked), padded queries are cut off at the end
  2. pooled queries/keys/values per block -> block scores s = q̄ k̄ᵀ / √d   [b, h, n, n]
  3. per query block: force the local window and the first `global_blocks`, TopK the rest -> idx [b, h, n, K]
  4. Gather K/V blocks -> [b, h, n, K*B, d]; exact logits on them                        [b, h, n, B, K*B]
  5. compensation: every unselected block j enters the same softmax as c_j copies of (k̄_j, v̄_j):
     logit q·k̄_j/√d + log c_j, value v̄_j  (c_j = valid keys in block j, B unless padded) [b, h, n, B, n]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NEG = -1e30  # finite "minus infinity": a fully masked row gives a uniform softmax instead of NaN


def blocks_kept(n_blocks, *, density: float | None, top_k: int | None, forced: int):
    """K = key blocks per query block, as an expression that stays symbolic under torch.export.

    density: K = ceil(density * n) (integer arithmetic on a per-mille density so no SymFloat appears);
    top_k: K = forced + top_k. Either way at least `forced` blocks and at most n (clamped in-graph)."""
    if top_k is not None:
        want = forced + top_k
    else:
        milli = int(round(density * 1000))
        want = torch.sym_max((n_blocks * milli + 999) // 1000, forced)
    return torch.sym_min(want, n_blocks)


def dense_attention(q, k, v, key_valid=None, *, causal: bool = False, scale: float | None = None):
    """Reference attention. q, k, v [b, h, L, d]; key_valid [b, L] bool (None = all valid) -> [b, h, L, d]."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q @ k.transpose(-1, -2)) * scale                      # [b, h, L, L]
    L = q.shape[-2]
    if key_valid is not None:
        logits = logits.masked_fill(~key_valid[:, None, None, :], NEG)
    if causal:
        pos = torch.arange(L, device=q.device)
        logits = logits.masked_fill(pos[None, :] > pos[:, None], NEG)
    return logits.softmax(-1) @ v


def block_sparse_attention(q, k, v, key_valid=None, *, block: int = 64, window: int = 1, global_blocks: int = 1,
                           density: float | None = 0.25, top_k: int | None = None, causal: bool = False,
                           compensate: bool = True, scale: float | None = None, per_head: bool = True):
    """q, k, v [b, h, L, d] (L dynamic), key_valid [b, L] bool or None -> [b, h, L, d].

    per_head: select blocks per head (True) or one selection shared by the heads (scores averaged)."""
    b, h, L, d = q.shape
    B = block
    scale = d ** -0.5 if scale is None else scale
    n = (L + B - 1) // B
    pad = n * B - L
    if key_valid is None:
        key_valid = torch.ones(b, L, dtype=torch.bool, device=q.device)
    # 1. pad to whole blocks: [b, h, n*B, d]; padded keys invalid
    q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    key_valid = F.pad(key_valid, (0, pad), value=False)
    qb, kb, vb = (t.reshape(b, h, n, B, d) for t in (q, k, v))
    kvalid = key_valid.reshape(b, 1, n, B)                            # [b, 1, n, B]
    cnt, kbar, vbar, qbar, block_ok = _pooled(qb, kb, vb, kvalid, causal)
    s, idx, allowed = _select(qbar, kbar, block_ok, scale, window, global_blocks, density, top_k, causal, per_head)
    zero = torch.zeros((), dtype=q.dtype, device=q.device)
    neg = torch.full((), NEG, dtype=q.dtype, device=q.device)
    kg, vg = _gather(kb, vb, kvalid, idx, allowed, s, cnt, kbar, vbar, zero, neg, compensate)
    qa = torch.cat([qb * scale, torch.ones_like(qb[..., :1])], dim=-1)                      # [b, h, n, B, d + 1]
    logits = qa @ kg.transpose(-1, -2)                                # [b, h, n, B, S*B], biases included
    if causal:
        # slot 0 is the diagonal block: lower triangle there, nothing elsewhere. [B, S*B]
        r = torch.arange(B, device=q.device)
        tri = torch.where(r[None, :] > r[:, None], neg, zero)
        logits = logits + F.pad(tri, (0, logits.shape[-1] - B))
    out = logits.softmax(-1) @ vg                                     # [b, h, n, B, d]
    return out.reshape(b, h, n * B, d)[:, :, :L]


def _pooled(qb, kb, vb, kvalid, causal: bool):
    """2. pooled statistics: counts c_j [b, 1, n, 1], pooled k̄, v̄ [b, h, n, d], q̄ [b, h, n, d], block_ok [b, 1, n]."""
    w = kvalid.to(qb.dtype).unsqueeze(-1)                            # [b, 1, n, B, 1]
    cnt = w.sum(3)                                                    # [b, 1, n, 1]
    kbar = (kb * w).sum(3) / cnt.clamp(min=1.0)
    vbar = (vb * w).sum(3) / cnt.clamp(min=1.0)
    # causal: a block's mean query would let its later (future) rows steer the selection of its earlier rows;
    # the block's first query precedes every row that uses the selection
    qbar = qb[:, :, :, 0] if causal else qb.mean(3)
    block_ok = cnt.squeeze(-1) > 0                                    # [b, 1, n]: block has a real key
    return cnt, kbar, vbar, qbar, block_ok


def _select(qbar, kbar, block_ok, scale: float, window: int, global_blocks: int, density, top_k, causal: bool,
            per_head: bool):
    """3. block scores s [b, h, n, n], the K kept key blocks of each query block idx [b, h, n, K] (idx[..., 0] = i),
    and allowed [b, h, n, n]. forced = local window (+ first global blocks); allowed = causal j <= i and non-empty.

    The diagonal block scores highest so TopK (sorted) puts it in slot 0: the causal triangle then is one
    constant [B, B] bias on the first B gathered columns instead of a full [.., B, K*B] mask."""
    b, h, n, _ = qbar.shape
    ar = torch.arange(n, device=qbar.device)
    ii, jj = ar[:, None], ar[None, :]                                 # query block i, key block j
    forced = ((ii - jj).abs() <= window) | (jj < global_blocks)       # [n, n]
    allowed = block_ok[:, :, None, :]                                 # [b, 1, 1, n]
    if causal:
        allowed = allowed & (jj <= ii)
    allowed = allowed.expand(b, h, n, n)
    s = (qbar @ kbar.transpose(-1, -2)) * scale                       # [b, h, n, n]
    if not per_head:
        s = s.mean(1, keepdim=True).expand(b, h, n, n)
    score = torch.where(forced & allowed, torch.full_like(s, 1e20), torch.where(allowed, s, torch.full_like(s, NEG)))
    score = torch.where(ii == jj, torch.full_like(s, 2e20), score)
    n_forced = (window + 1 if causal else 2 * window + 1) + global_blocks
    K = blocks_kept(n, density=density, top_k=top_k, forced=n_forced)
    return s, score.topk(K, dim=-1).indices, allowed                  # idx: [b, h, n, K] int64


def _gather(kb, vb, kvalid, idx, allowed, s, cnt, kbar, vbar, zero, neg, compensate: bool):
    """4. the gathered keys kg [b, h, n, S*B, d + 1] and values vg [b, h, n, S*B, d], S = K (+ nc compensation).

    K rows carry one extra column: the key's additive bias (0, NEG for padding, log c_j for a pooled key), so
    biases ride through the MatMul against a query column of ones (no broadcast Add over the logits). Table rows
    are blocks of B keys: [b*h*n key blocks | b*h*n*nc compensation blocks | null block]."""
    b, h, n, B, d = kb.shape
    kbias = torch.where(kvalid, zero, neg).expand(b, h, n, B).unsqueeze(-1)                  # [b, h, n, B, 1]
    ktabs = [torch.cat([kb, kbias], dim=-1).reshape(b * h * n, B, d + 1)]
    vtabs = [vb.reshape(b * h * n, B, d)]
    base = (torch.arange(b * h, device=kb.device) * n).reshape(b, h, 1, 1)
    slot_ok = allowed.gather(-1, idx)                                 # [b, h, n, K]
    null = b * h * n
    cols = [idx + base]
    if compensate:
        ktab, vtab, col = _compensation(idx, allowed, s, cnt, kbar, vbar, neg, B)
        ktabs.append(ktab)
        vtabs.append(vtab)
        cols.append(col)
        null = null + ktab.shape[0]
    ktabs.append(F.pad(torch.full_like(ktabs[0][:1, :, :1], NEG), (d, 0)))                  # null block
    vtabs.append(torch.zeros_like(vtabs[0][:1]))
    cols[0] = torch.where(slot_ok, cols[0], null)                    # disallowed slots -> null block
    flat = torch.cat(cols, dim=-1)                                    # [b, h, n, S] with S = K (+ nc)
    S = flat.shape[-1]
    kg = torch.cat(ktabs).index_select(0, flat.reshape(-1)).reshape(b, h, n, S * B, d + 1)
    vg = torch.cat(vtabs).index_select(0, flat.reshape(-1)).reshape(b, h, n, S * B, d)
    return kg, vg


def _compensation(idx, allowed, s, cnt, kbar, vbar, neg, B: int):
    """5. compensation block(s) of query block i: the pooled key/value of every block j, biased log c_j when j was
    dropped (unselected and allowed), NEG otherwise; each pooled key stands for its c_j keys in the softmax
    numerator and denominator. n pooled rows padded to nc*B rows -> nc gathered slots.
    Returns key rows [b*h*n*nc, B, d + 1], value rows [b*h*n*nc, B, d] and their columns [b, h, n, nc]."""
    b, h, n, d = kbar.shape
    nc = (n + B - 1) // B
    selected = torch.zeros_like(s).scatter(-1, idx, 1.0) > 0      # [b, h, n, n]
    drop = ~selected & allowed
    logc = torch.log(cnt.clamp(min=1.0)).reshape(b, 1, 1, n)
    pk = torch.cat([kbar.unsqueeze(2).expand(b, h, n, n, d), torch.where(drop, logc, neg).unsqueeze(-1)], -1)
    pk = torch.cat([F.pad(pk[..., :d], (0, 0, 0, nc * B - n)), F.pad(pk[..., d:], (0, 0, 0, nc * B - n), value=NEG)], -1)
    pv = F.pad(vbar.unsqueeze(2).expand(b, h, n, n, d), (0, 0, 0, nc * B - n))          # [b, h, n, nc*B, d]
    qrow = (torch.arange(b * h * n, device=kbar.device) * nc).reshape(b, h, n, 1)
    col = b * h * n + qrow + torch.arange(nc, device=kbar.device)                         # [b, h, n, nc]
    return pk.reshape(b * h * n * nc, B, d + 1), pv.reshape(b * h * n * nc, B, d), col
