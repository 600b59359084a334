"""Hugging Face models as they come: ModelOutput / None / Cache outputs flatten, a stock GPT2LMHeadModel exports."""
from __future__ import annotations

import pytest
import torch

import edgeprune as ep
from edgeprune.outputs import flatten_outputs, output_names

transformers = pytest.importorskip("transformers")


def _gpt2():
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval(), (torch.randint(0, 100, (1, 16)),)


def test_flatten_drops_none_and_scalars_and_keeps_order():
    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    assert [t.shape for t in flatten_outputs((a, None, {"x": b, "n": 3, "y": [c, None]}))] == [a.shape, b.shape, c.shape]


def test_model_output_with_cache_flattens_and_names_each_tensor():
    model, (ids,) = _gpt2()
    with torch.no_grad():
        out = model(ids, use_cache=True)
    flat, names = flatten_outputs(out), output_names(out)
    assert names == ["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"]
    assert len(flat) == 5 and flat[0].shape == (1, 16, 100) and flat[1].shape == (1, 2, 16, 16)


def test_stock_gpt2_lm_head_exports_without_cache_by_default(tmp_path):
    model, inputs = _gpt2()
    report = ep.export(model, inputs, tmp_path / "g.onnx")
    assert [(c.name, c.shape) for c in report.checks] == [("logits", (1, 16, 100))]
    assert report.max_abs_diff <= 1e-4


def test_decoder_export_with_present_key_values_is_opt_in(tmp_path):
    model, inputs = _gpt2()
    report = ep.export(model, inputs, tmp_path / "g.onnx", past_key_values=True)
    assert [c.name for c in report.checks] == ["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"]
    assert all(c.ok for c in report.checks)


def test_tied_embedding_lm_prunes_keeps_the_tie_and_exports(tmp_path):
    from edgeprune.models import HFModelWrapper
    from edgeprune.pruning import StructuredConfig

    model, (ids,) = _gpt2()
    wrapped = HFModelWrapper(model, ["input_ids", "attention_mask"]).eval()
    inputs = (ids, torch.ones_like(ids))
    pruned = ep.prune(wrapped, inputs, StructuredConfig(ratio=0.5))
    lm = pruned.model
    assert lm.lm_head.weight is lm.transformer.wte.weight  # heads/FFN pruning leaves d_model, so the tie holds
    assert lm.transformer.h[0].mlp.c_fc.nf == 64 and lm.transformer.h[0].attn.num_heads == 1
    assert pruned(*inputs).shape == (1, 16, 100)
    assert ep.count(pruned, inputs).macs < ep.count(wrapped, inputs).macs
    assert ep.export(pruned, inputs, tmp_path / "g.onnx").max_abs_diff <= 1e-4
