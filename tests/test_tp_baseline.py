"""benchmarks/tp_baseline.py: the Torch-Pruning heads+FFN baseline structured.py compares against, on tiny random
BERT and GPT-2 models: hidden width kept, heads and FFN reduced, MACs matched, outputs those of the dense model
with the dropped heads/channels removed."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("torch_pruning")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edgeprune as ep  # noqa: E402
from benchmarks import tp_baseline as tpb  # noqa: E402
from edgeprune.models import HFModelWrapper  # noqa: E402
from pruning_models import make_gpt2  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: a second thread only adds synchronisation (and is slow on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_bert():
    import transformers
    from transformers import BertConfig, BertModel

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                     max_position_embeddings=64)
    ids = torch.randint(0, 200, (2, 24))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    return HFModelWrapper(BertModel(cfg).eval(), names).eval(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), 4, 256


def tiny_gpt2():
    model, x = make_gpt2(n_embd=64, vocab_size=100, n_positions=32, seq=24)
    return model, x, 4, 256


@pytest.mark.parametrize("make", [tiny_bert, tiny_gpt2])
@pytest.mark.parametrize("unit", ["auto", "heads", "ffn"])
def test_tp_baseline_matches_macs_keeps_hidden(make, unit):
    model, x, heads, ffn = make()
    dense = ep.count(model, x).macs
    with torch.no_grad():
        ref = model(*x)
    # a reachable target: what a known head/FFN pruning gives (heads-only MACs come in whole-head steps)
    target = ep.count(tpb.tp_prune(model, x, 0.5 * (unit != "ffn"), 0.4 * (unit != "heads")), x).macs
    pruned, macs, ratios = tpb.tp_magnitude_at_macs(model, x, target, heads=unit != "ffn", ffn=unit != "heads")
    assert abs(macs - target) <= 0.01 * dense and macs == ep.count(pruned, x).macs
    w = tpb.widths(pruned.model)
    assert w["hidden"] == 64
    assert all(h < heads for h in w["heads"]) if unit != "ffn" else w["heads"] == [heads, heads]
    assert all(f < ffn for f in w["ffn"]) if unit != "heads" else w["ffn"] == [ffn, ffn]
    assert (ratios[0] > 0) == (unit != "ffn") and (ratios[1] > 0) == (unit != "heads")
    with torch.no_grad():
        out = pruned(*x)
        assert out.shape == ref.shape and torch.isfinite(out).all()
        assert (model(*x) - ref).abs().max() == 0                        # the dense model is not touched
    # whole heads and channels, consistently across q/k/v and the output projections: the pruned model computes
    # what the dense one does with the dropped head/FFN columns of the output projections zeroed
    assert tpb.masked_reference_diff(model, pruned, x) <= 1e-5


def test_search_stops_short_of_removing_every_head():
    # Torch-Pruning asked to remove all 4 heads keeps all 4 (its group check refuses) while its head count says 0
    model, x, _, _ = tiny_gpt2()
    with pytest.raises(ValueError, match="remove all heads"):
        tpb.tp_prune(model, x, 0.8, 0.0)
    target = ep.count(tpb.tp_prune(model, x, 0.75, 0.75), x).macs
    pruned, macs, ratios = tpb.tp_magnitude_at_macs(model, x, target)
    assert abs(macs - target) <= 0.01 * ep.count(model, x).macs
    assert tpb.widths(pruned.model)["heads"] == [1, 1] and ratios[0] <= 0.75


def test_gpt2_conversions_are_exact_and_fused_c_attn_fails_in_torch_pruning():
    model, x, _, _ = tiny_gpt2()
    with torch.no_grad():
        ref = model(*x)
        assert (tpb.conv1d_to_linear(copy.deepcopy(model))(*x) - ref).abs().max() <= 1e-5
        assert (tpb.unfuse_gpt2(copy.deepcopy(model))(*x) - ref).abs().max() <= 1e-5
    # structured.md states this: Torch-Pruning 1.6.1 maps split indices only on dim 1 (GPT-2 splits on the last)
    with pytest.raises(IndexError):
        tpb.tp_prune(model, x, 0.25, 0.25, unfuse=False)
