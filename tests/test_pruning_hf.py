"""Heads and FFN pruning of Hugging Face transformers: MiniLM-L6 (real weights), GPT-2 and ViT (small, random)."""
from __future__ import annotations

import itertools

import pytest
import torch

import edgeprune as ep
from edgeprune.errors import PruningError
from pruning_models import make_gpt2, make_vit

_SUBJECTS = ["the film", "this movie", "the actor", "her performance", "the plot", "the soundtrack", "the director", "the ending"]
_VERBS = ["is", "feels", "seems", "was", "remains"]
_REST = ["a quiet triumph of patient storytelling", "far too long and strangely dull", "funny, warm and sharply written",
         "a mess that never finds its tone", "beautiful to look at but empty inside", "the best thing I saw this year"]


def _sentences(n, offset=0):
    combos = list(itertools.product(_SUBJECTS, _VERBS, _REST))
    return [" ".join(c) + "." for c in combos[offset:offset + n]]


@pytest.fixture(scope="module")
def minilm_text():
    from transformers import AutoTokenizer

    from edgeprune.models import builtin_path, load_model

    loaded = load_model("minilm", seq_len=24)
    tok = AutoTokenizer.from_pretrained(str(builtin_path("minilm")))

    def enc(texts):
        t = tok(texts, padding="max_length", truncation=True, max_length=24, return_tensors="pt")
        return tuple(t[n] for n in loaded.input_names)

    # calibration and evaluation sentences are disjoint
    return loaded, enc(_sentences(48, 0)), enc(_sentences(16, 120))


def _rel(model, ref, x):
    with torch.no_grad():
        out = model(*x)
    return float((out - ref).norm() / ref.norm())


def test_minilm_ratio_zero_identity(minilm_text):
    loaded, cal, test = minilm_text
    pruned = ep.prune(loaded.module, loaded.example_inputs, ep.StructuredConfig(ratio=0.0), calib=cal)
    with torch.no_grad():
        assert (pruned(*test) - loaded.module(*test)).abs().max() <= 1e-6


@pytest.mark.parametrize("unit", ["heads", "ffn"])
def test_minilm_compensation_ratio_and_shapes(minilm_text, unit):
    loaded, cal, test = minilm_text
    model = loaded.module
    with torch.no_grad():
        ref = model(*test)
    errs = {}
    for comp in (False, True):
        pruned = ep.prune(model, loaded.example_inputs, ep.StructuredConfig(ratio=0.5, unit=unit, compensate=comp), calib=cal)
        errs[comp] = _rel(pruned, ref, test)
    assert errs[True] < 0.8 * errs[False], errs  # (how long pruning takes is a benchmark's business, not a test's)
    layer = pruned.model.encoder.layer[0]
    if unit == "heads":
        attn = layer.attention.self
        assert attn.num_attention_heads == 6 and attn.all_head_size == 192 and attn.query.out_features == 192
        assert layer.attention.output.dense.in_features == 192
    else:
        assert layer.intermediate.dense.out_features == 768 and layer.output.dense.in_features == 768
    assert ep.count(pruned, loaded.example_inputs).macs < 0.85 * ep.count(model, loaded.example_inputs).macs


def test_minilm_heads_and_ffn_export_ort_openvino(minilm_text, tmp_path):
    from edgeprune.exporter import export, convert, torch_outputs

    loaded, cal, _ = minilm_text
    # export correctness does not depend on the scores: the data-free path keeps this test fast
    cfg = ep.StructuredConfig(ratio=0.5, unit="auto", importance="magnitude", compensate=False)
    pruned = ep.prune(loaded.module, loaded.example_inputs, cfg, calib=cal)
    layer = pruned.model.encoder.layer[3]
    assert layer.attention.self.num_attention_heads == 6 and layer.intermediate.dense.out_features == 768
    x = loaded.example_inputs
    report = export(pruned, x, tmp_path / "m.onnx", input_names=loaded.input_names)
    assert report.ok and report.max_abs_diff <= 1e-4
    feeds = {n: t.numpy() for n, t in zip(loaded.input_names, x)}
    ov = convert(tmp_path / "m.onnx", tmp_path / "m.xml", "openvino", reference=(torch_outputs(pruned, x), feeds))
    assert ov.ok and ov.max_abs_diff <= 1e-4


@pytest.mark.parametrize("make", [make_gpt2, make_vit])
def test_gpt2_vit_heads_ffn(make, tmp_path):
    from edgeprune.exporter import export, convert, torch_outputs

    model, x = make()
    if x[0].dtype == torch.long:
        cal = torch.randint(0, 512, (48, 32), generator=torch.Generator().manual_seed(1))
    else:
        cal = torch.randn(48, *x[0].shape[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(*x)
    identity = ep.prune(model, x, ep.StructuredConfig(ratio=0.0))
    with torch.no_grad():
        assert (identity(*x) - ref).abs().max() <= 1e-6
    errs = {}
    for comp in (False, True):
        pruned = ep.prune(model, x, ep.StructuredConfig(ratio=0.5, compensate=comp), calib=cal)
        errs[comp] = _rel(pruned, ref, x)
    assert errs[True] < 0.8 * errs[False], errs
    inner = pruned.model
    if make is make_gpt2:
        attn = inner.transformer.h[0].attn
        assert attn.num_heads == 2 and attn.split_size == 64 and attn.c_attn.weight.shape == (128, 192)
        assert inner.transformer.h[0].mlp.c_fc.nf == 256
    else:
        attn = inner.layers[0].attention
        assert attn.num_attention_heads == 2 and attn.q_proj.out_features == 32
        assert inner.layers[0].mlp.fc1.out_features == 64
    assert ep.count(pruned, x).macs < 0.75 * ep.count(model, x).macs
    report = export(pruned, x, tmp_path / "m.onnx")
    assert report.ok
    ov = convert(tmp_path / "m.onnx", tmp_path / "m.xml", "openvino",
                         reference=(torch_outputs(pruned, x), {"input_0": x[0].numpy()}))
    assert ov.ok and ov.max_abs_diff <= 1e-4


def test_unit_heads_on_cnn_raises():
    from conftest import make_cnn

    model, x = make_cnn()
    with pytest.raises(PruningError, match="no recognised attention"):
        ep.prune(model, x, ep.StructuredConfig(ratio=0.5, unit="heads"))


def test_ignore_transformer_layer(minilm_text):
    loaded, cal, _ = minilm_text
    pruned = ep.prune(loaded.module, loaded.example_inputs,
                      ep.StructuredConfig(ratio=0.5, unit="ffn", importance="magnitude", compensate=False,
                                          ignore=["model.encoder.layer.0*"]), calib=cal)
    assert pruned.model.encoder.layer[0].intermediate.dense.out_features == 1536
    assert pruned.model.encoder.layer[1].intermediate.dense.out_features == 768


def test_gpt2_magnitude_importance_scores_conv1d_biases():
    # HF Conv1D biases are 1-D: magnitude importance indexed them as (in, out) matrices and crashed
    model, x = make_gpt2()
    pruned = ep.prune(model, x, ep.StructuredConfig(ratio=0.5, importance="magnitude", compensate=False))
    assert ep.count(pruned, x).macs < 0.75 * ep.count(model, x).macs
