"""Sparse attention inside `optimize`: the pays/does-not-pay decision (measured and analytic), forced application
after head pruning, and plan.json re-applying it."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_target

from edgeprune.attention import AttentionSparsityConfig, attention_layers
from edgeprune.attention.latency import AttentionShape, estimate_attention
from edgeprune.errors import ConfigError
from edgeprune.optimizer import OptimizeConfig, apply_plan, optimize
from edgeprune.optimizer.attention import PAYS, decide_attention
from edgeprune.optimizer.planner import Plan
from edgeprune.recover import RecoverConfig


def Target():
    """A device that is not this machine: no measurement, the analytic estimate decides."""
    return make_target("target", multiple=1, reason="dense runtime")


def Host():
    return make_target("host", multiple=1, reason="dense runtime")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "cache"))


def _bert(seq: int, batch: int = 2):
    """A 2-layer, 4-head BERT (head dim 8) behind the positional wrapper `load_model` uses, and its inputs.

    Weights 10x BERT's init scale: attention then concentrates on a few keys, as in trained models (at the default
    scale it is near uniform, which dropped-block compensation reproduces almost exactly)."""
    from transformers import BertConfig, BertModel

    from edgeprune.models import HFModelWrapper

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=256, initializer_range=0.2, attn_implementation="eager")
    model = HFModelWrapper(BertModel(cfg).eval(), ["input_ids", "attention_mask"]).eval()
    g = torch.Generator().manual_seed(1)
    make = lambda: (torch.randint(0, 64, (batch, seq), generator=g), torch.ones(batch, seq, dtype=torch.long))  # noqa: E731
    return model, make(), [make() for _ in range(2)]


def test_estimate_pays_at_2048_not_at_128():
    cfg = AttentionSparsityConfig()  # block 64, density 0.25: MiniLM's 12 heads x 32
    short, long = (estimate_attention(AttentionShape(12, L, 32), cfg) for L in (128, 2048))
    assert (short.blocks, short.kept) == (2, 2)  # window + global blocks already cover both blocks
    assert short.saving < 0  # every block computed plus the selection: sparse costs more than dense
    assert (long.blocks, long.kept) == (32, 8)
    assert long.saving >= 0.5 >= PAYS


@pytest.mark.parametrize("profile, measured", [(Target(), False), (Host(), True)])
def test_auto_at_short_sequence_is_not_applied(profile, measured):
    model, inputs, _ = _bert(seq=32, batch=1)
    rec = decide_attention(model, inputs, "auto", profile, measured=measured, threads=1)
    assert rec["applied"] is False and rec["source"] == ("measured" if measured else "estimate")
    assert (rec["seq"], rec["heads"], rec["head_dim"], rec["blocks"], rec["kept_blocks"]) == (32, 4, 8, 1, 1)
    if not measured:  # a measured saving of two near-equal layers is noise; applied=False is structural here
        assert rec["saving"] < PAYS
    assert "does not pay at length 32: 1 block(s) of 64, every one kept" in rec["reason"]
    assert "pays from about length" in rec["reason"]
    if measured:
        assert rec["dense_ms"] > 0 and rec["sparse_ms"] > 0 and "onnxruntime on this machine" in rec["reason"]
    else:
        assert rec["dense_cost"] > 0 and "analytic estimate for target" in rec["reason"]


def test_forced_config_applies_after_head_pruning_and_plan_reproduces():
    model, inputs, calib = _bert(seq=64)
    cfg = AttentionSparsityConfig(density=0.25, block_size=16, window=0, global_tokens=0)  # 4 blocks, 1 kept
    config = OptimizeConfig(profile=Target(), speedup=1.5, max_drop=100.0, attention=cfg,
                            recover=RecoverConfig(mode="off"))
    held = [(torch.randint(0, 64, (8, 64), generator=torch.Generator().manual_seed(9)), torch.ones(8, 64, dtype=torch.long))]
    result = optimize(model, inputs, config, calib=calib, eval_data=held, input_names=["input_ids", "attention_mask"])
    rec = result.plan.attention
    assert rec["applied"] is True and rec["source"] == "forced"
    assert set(rec["layers"]) == set(attention_layers(result.model))
    heads = [m.num_attention_heads for n, m in result.model.named_modules() if n in rec["layers"]]
    assert len(heads) == 2 and sum(heads) < 8  # heads were pruned first, sparse attention runs on the rest

    with torch.no_grad():
        ref = apply_plan(dataclasses.replace(result.plan, attention=None), model, inputs, calib=result.calib_data)(*inputs)
        out = result.model(*inputs)
        rel = float((out - ref).norm() / ref.norm())
    assert 0.01 < rel < 0.25, rel  # sparse attention changed the pruned model (0.079 measured), by a bounded amount  # sparse attention changed the pruned model, by a bounded amount

    again = apply_plan(Plan.from_json(result.plan.to_json()), model, inputs, calib=result.calib_data)
    with torch.no_grad():
        assert float((again(*inputs) - out).abs().max()) <= 1e-5


def test_bad_attention_value_is_one_line():
    model, inputs, _ = _bert(seq=32, batch=1)
    with pytest.raises(ConfigError, match="attention must be 'auto', 'off'") as err:
        decide_attention(model, inputs, "sometimes", Target(), measured=False)
    assert "\n" not in str(err.value)
    assert decide_attention(model, inputs, "off", Target(), measured=False)["applied"] is False
