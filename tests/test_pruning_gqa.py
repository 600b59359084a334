"""Grouped-query attention (LLaMA-style): K/V groups are pruned whole with their query heads, head_dim stays."""
from __future__ import annotations

import pytest
import torch

import edgeprune as ep
from edgeprune.models import HFModelWrapper
from edgeprune.pruning import StructuredConfig

transformers = pytest.importorskip("transformers")


def _llama():
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8,
                                   num_key_value_heads=2, vocab_size=100, max_position_embeddings=64,
                                   attn_implementation="eager", bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 100, (1, 16), generator=torch.Generator().manual_seed(1))
    return model, HFModelWrapper(model, ["input_ids", "attention_mask"]).eval(), (ids, torch.ones(1, 16, dtype=torch.long))


def test_gqa_decoder_keeps_whole_kv_groups_and_rotary_head_dim_and_generates(tmp_path):
    model, wrapped, inputs = _llama()
    pruned = ep.prune(wrapped, inputs, StructuredConfig(ratio=0.5))
    for layer in pruned.model.model.layers:
        attn = layer.self_attn
        assert attn.head_dim == 8  # 64 / 8 heads: rotary needs it whole
        assert attn.k_proj.out_features == attn.v_proj.out_features == 1 * 8  # 1 of 2 K/V groups kept
        assert attn.q_proj.out_features == attn.o_proj.in_features == 4 * 8  # with its 4 query heads
        assert attn.num_key_value_groups == 4 and layer.mlp.up_proj.out_features == layer.mlp.gate_proj.out_features == 64
    assert pruned(*inputs).shape == (1, 16, 100)
    assert ep.count(pruned, inputs).macs < ep.count(wrapped, inputs).macs
    out = pruned.model.generate(inputs[0], attention_mask=inputs[1], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 20)
    assert ep.export(pruned, inputs, tmp_path / "llama.onnx").max_abs_diff <= 1e-4
