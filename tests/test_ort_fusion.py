"""Encoder fusion for ONNX Runtime (quantize/ort_fusion.py): what fuses, that it runs the same as the original on
real padded batches, that dynamic INT8 then carries QAttention, and that a graph the fusion would change is kept."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
import torch

from edgeprune.data import CalibrationData
from edgeprune.exporter import export, run_reference
from edgeprune.models import LoadedModel
from edgeprune.quantize import quantize
from edgeprune.quantize.ort_fusion import fuse_encoder


class Bert(torch.nn.Module):
    """Random-weight 2-layer BertModel with a padding mask; `decoder` adds BERT's causal mask on top of it."""

    def __init__(self, attention: str = "eager", decoder: bool = False):
        super().__init__()
        from transformers import BertConfig, BertModel

        torch.manual_seed(5)
        cfg = BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                         max_position_embeddings=64, hidden_act="gelu", is_decoder=decoder)
        cfg._attn_implementation = attention
        self.bert = BertModel(cfg, add_pooling_layer=False).eval()

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _padded(n=16, seq=32, seed=3) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    mask = np.zeros((n, seq), np.int64)
    for i, length in enumerate(g.integers(5, seq, n)):  # a different padding length per row
        mask[i, :length] = 1
    return {"input_ids": g.integers(1, 200, (n, seq)).astype(np.int64) * mask, "attention_mask": mask}


def _export(module, path):
    ids, mask = torch.randint(1, 200, (1, 32)), torch.ones(1, 32, dtype=torch.long)
    export(LoadedModel("bert", "module", module, (ids, mask), ["input_ids", "attention_mask"]), None, path)
    return path


def _ops(path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def encoder_onnx(tmp_path_factory):
    return _export(Bert(), tmp_path_factory.mktemp("fuse") / "bert.onnx")


def test_attention_and_gelu_fuse_and_run_as_the_original_on_padded_batches(encoder_onnx, tmp_path):
    out = tmp_path / "fused.onnx"
    done = fuse_encoder(encoder_onnx, out)
    assert done["attention"] == 2 and done["gelu"] == 2 and done["kept"], done
    ops = _ops(out)
    assert ops["Attention"] == 2 and ops["Gelu"] == 2 and ops["Softmax"] == 0 and ops["Erf"] == 0, ops
    assert ops["Transpose"] == 0 and _ops(encoder_onnx)["Transpose"] == 8  # 4 a layer went with the heads' reshapes
    # ORT's slow LayerNormalization kernel is written out (embeddings + 2 a layer), exactly: the diff bound below
    assert done["layernorm"] == 5 and ops["LayerNormalization"] == 0 and ops["ReduceMean"] == 10, ops
    batch = _padded()
    for i in range(0, 16, 4):  # row by row: the exported graph has a static 1x32 shape
        feeds = {k: v[i:i + 1] for k, v in batch.items()}
        ref, got = run_reference(encoder_onnx, feeds)[0], run_reference(out, feeds)[0]
        assert np.abs(ref - got).max() < 1e-4, (i, np.abs(ref - got).max())


def test_dynamic_int8_quantizes_the_fused_attention(encoder_onnx, tmp_path):
    from edgeprune.quantize.ort import OrtQuantConfig

    batch = _padded()
    calib = CalibrationData({k: v[:8] for k, v in batch.items()})
    held = CalibrationData({k: v[8:] for k, v in batch.items()})
    r = quantize(encoder_onnx, "onnxruntime", calib, "int8", tmp_path / "q.onnx", config=OrtQuantConfig(mode="dynamic"),
                 validate_data=held)
    assert r.details["fused"]["attention"] == 2 and r.details["model_type"] == "transformer", r.details
    assert r.details["quantized_nodes"]["QAttention"] == 2, r.details["quantized_nodes"]
    assert r.min_cosine >= 0.99, r.checks  # measured 0.9998
    plain = quantize(encoder_onnx, "onnxruntime", calib, "int8", tmp_path / "p.onnx",
                     config=OrtQuantConfig(mode="dynamic", fuse=False), validate_data=held)
    assert "fused" not in plain.details and "QAttention" not in plain.details["quantized_nodes"]


def test_a_causal_mask_is_not_replaced_by_the_padding_mask(tmp_path):
    """BERT as a decoder adds a causal mask to the padding one: Attention with the raw padding mask would attend to
    later tokens, so the check on ORT rejects the fused graph (max diff 0.08 measured) and writes nothing."""
    path = _export(Bert(decoder=True), tmp_path / "decoder.onnx")
    out = tmp_path / "fused.onnx"
    done = fuse_encoder(path, out)
    assert done["attention"] == 2 and not done["kept"] and "it differs" in done["reason"], done
    assert not out.exists() and not list(tmp_path.glob(".fused*"))


def test_sdpa_attention_fuses_too(tmp_path):
    """torch's SDPA decomposition (transformers' default attention) scales q and k^T by sqrt(scale) each, builds k^T
    through Reshape/Transpose/Reshape and guards the softmax with Where(IsNaN): it fuses to the same Attention."""
    path = _export(Bert(attention="sdpa"), tmp_path / "sdpa.onnx")
    out = tmp_path / "fused.onnx"
    done = fuse_encoder(path, out)
    assert done["attention"] == 2 and done["gelu"] == 2 and done["kept"], done
    ops = _ops(out)
    assert ops["Attention"] == 2 and ops["Softmax"] == 0 and ops["IsNaN"] == 0 and ops["Transpose"] == 0, ops
    feeds = {k: v[:1] for k, v in _padded().items()}
    assert np.abs(run_reference(path, feeds)[0] - run_reference(out, feeds)[0]).max() < 1e-4


def test_a_fusion_that_breaks_ships_the_plain_graph(encoder_onnx, tmp_path, monkeypatch):
    """Fusion is a speed pass: if it raises (onnx cannot save a >2 GB graph in one file, say), dynamic INT8 goes on
    with the unfused graph and says why."""
    import edgeprune.quantize.ort_fusion as fusion
    from edgeprune.quantize.ort import OrtQuantConfig

    def broken(onnx_in, onnx_out, model=None):
        raise ValueError("the proto is larger than 2 GB")

    monkeypatch.setattr(fusion, "fuse_encoder", broken)
    batch = _padded()
    r = quantize(encoder_onnx, "onnxruntime", CalibrationData({k: v[:8] for k, v in batch.items()}), "int8",
                 tmp_path / "q.onnx", config=OrtQuantConfig(mode="dynamic"),
                 validate_data=CalibrationData({k: v[8:] for k, v in batch.items()}))
    assert not r.details["fused"]["kept"] and "larger than 2 GB" in r.details["fused"]["reason"], r.details
    assert "QAttention" not in r.details["quantized_nodes"] and r.min_cosine >= 0.99, r.details
