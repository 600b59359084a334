"""Sparse attention (edgeprune.attention): exactness at density 1, compensation on real MiniLM activations, causality,
and the exported graph (TopK + Gather, dynamic length) on real ONNX Runtime and OpenVINO sessions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeprune.attention import (AttentionSparsityConfig, AttentionSparsityError, SparseAttention,
                                 block_sparse_attention, dense_attention, sparsify_attention)
from edgeprune.attention.calibrate import LayerCalibration, allocate, capture
from edgeprune.errors import ConfigError


def _qkv(b=2, h=3, L=150, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, L, d, generator=g) for _ in range(3))


@pytest.mark.parametrize("causal", [False, True])
def test_density_one_reproduces_dense(causal):
    q, k, v = _qkv()
    valid = torch.ones(2, 150, dtype=torch.bool)
    valid[1, 120:] = False  # padding in the second sequence (and 150 is not a multiple of the block)
    ref = dense_attention(q, k, v, valid, causal=causal)
    # every block gathered (density 1.0 through the sparse kernel) and the module's dense path
    out = block_sparse_attention(q, k, v, valid, block=16, density=1.0, causal=causal)
    keep = valid[:, None, :, None]
    assert float(((out - ref) * keep).abs().max()) <= 1e-5
    dense = SparseAttention(density=1.0, causal=causal)(q, k, v, valid)
    assert float(((dense - ref) * keep).abs().max()) <= 1e-5


def test_density_one_reproduces_hf_models():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=128, n_embd=32, n_layer=2, n_head=2)).eval()
    ids = torch.randint(0, 64, (2, 100))
    with torch.no_grad():
        ref = gpt(ids, use_cache=False).logits
        out = sparsify_attention(gpt, (ids,), AttentionSparsityConfig(density=1.0, block_size=16))(ids, use_cache=False).logits
    assert float((out - ref).abs().max()) <= 1e-5


@pytest.fixture(scope="module")
def minilm_records():
    """q, k, v of every MiniLM-L6 layer on real text (4 x 256 tokens of Rotten Tomatoes reviews)."""
    from benchmarks import zoo

    model, _ = zoo.minilm()
    texts, _ = zoo.rotten_tomatoes()
    x = zoo.minilm_inputs([" ".join(texts[i * 20:(i + 1) * 20]) for i in range(4)], seq_len=256)
    args = (x["input_ids"], x["attention_mask"], x["token_type_ids"])
    sparse = sparsify_attention(model, None, AttentionSparsityConfig(density=1.0))
    from edgeprune.attention.hf import attention_modules

    return capture(sparse, attention_modules(sparse), [(args, {})])


def test_compensation_lowers_error_on_minilm(minilm_records):
    ratios = []
    for records in minilm_records.values():
        (q, k, v, valid, scale), = records
        ref = dense_attention(q, k, v, valid, scale=scale)
        err = {}
        for comp in (False, True):
            out = block_sparse_attention(q, k, v, valid, block=16, density=0.25, compensate=comp, scale=scale)
            err[comp] = float((out - ref).norm() / ref.norm())
        ratios.append(err[True] / err[False])
    # pooled-block compensation restores the dropped softmax mass: error at most 85% of plain dropping, every layer
    assert max(ratios) < 0.85, ratios
    assert np.mean(ratios) < 0.75, ratios


def test_calibrated_allocation_on_minilm(minilm_records):
    from edgeprune.attention.calibrate import layer_errors

    cfg = AttentionSparsityConfig(density=0.375, block_size=16, density_grid=(0.25, 0.375, 0.5, 1.0))
    layers = {n: SparseAttention.from_config(cfg) for n in minilm_records}
    table = layer_errors(layers, minilm_records, cfg.density_grid)
    dens = allocate(table, cfg.density, cfg.density_grid)
    assert np.mean(list(dens.values())) <= 0.375 + 1e-9
    assert len(set(dens.values())) > 1  # layers differ: the allocation is not uniform
    uniform = sum(t.errors[0.375] for t in table.values())
    assert sum(table[n].errors[d] for n, d in dens.items()) < uniform


def test_auto_compensation_picks_the_lower_error_per_layer(minilm_records):
    from edgeprune.attention.calibrate import layer_errors, relative_error

    cfg = AttentionSparsityConfig(density=0.25, block_size=16, compensate="auto")
    layers = {n: SparseAttention.from_config(cfg) for n in minilm_records}
    table = layer_errors(layers, minilm_records, (0.25,), choose_compensation=True)
    for name, t in table.items():
        tried = {c: relative_error(SparseAttention(density=0.25, block_size=16, compensate=c), minilm_records[name])
                 for c in (True, False)}
        assert t.errors[0.25] == pytest.approx(min(tried.values()), rel=1e-9)
        assert t.compensate[0.25] is min(tried, key=tried.get)
    # on MiniLM compensation helps every layer (test above), so "auto" keeps it everywhere
    assert all(t.compensate[0.25] for t in table.values())


def test_auto_compensation_turns_off_where_it_hurts():
    # a causal head that looks at one particular key per block (a spike aligned with the queries) whose value
    # differs from the block's other values: the block mean is the wrong value, so plain dropping is closer
    torch.manual_seed(0)
    b, h, L, d, B = 1, 2, 256, 16, 16
    q = torch.randn(b, h, L, d) * 0.1 + torch.nn.functional.one_hot(torch.tensor(0), d).float() * 3
    k, v = torch.randn(b, h, L, d) * 0.1, torch.randn(b, h, L, d)
    k[:, :, ::B, 0] = 3.0  # the spike key of every block
    v[:, :, ::B] = 5.0
    calib = [((q, k, v, None, None),)]
    from edgeprune.attention.calibrate import layer_errors

    layer = SparseAttention(density=0.25, block_size=B, causal=True)
    table = layer_errors({"l": layer}, {"l": calib[0]}, (0.25,), choose_compensation=True)
    assert table["l"].compensate[0.25] is False


def test_allocation_keeps_dense_layers_dense():
    grid = (0.25, 0.5, 1.0)
    table = {"easy": LayerCalibration("easy", {0.25: 0.01, 0.5: 0.005, 1.0: 0.0}),
             "hard": LayerCalibration("hard", {0.25: 0.9, 0.5: 0.8, 1.0: 0.0}),
             "mid": LayerCalibration("mid", {0.25: 0.1, 0.5: 0.05, 1.0: 0.0})}
    dens = allocate(table, 0.5, grid)
    assert dens == {"easy": 0.25, "hard": 1.0, "mid": 0.25}


@pytest.mark.parametrize("t", [5, 40, 77])
def test_causal_no_future_influence(t):
    q, k, v = _qkv(b=1, L=96, seed=1)
    layer = SparseAttention(density=0.3, block_size=16, causal=True)
    out = layer(q, k, v)
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, t] += 5.0 * torch.randn_like(x[:, :, t])
    out2 = layer(q2, k2, v2)
    assert float((out2[:, :, :t] - out[:, :, :t]).abs().max()) == 0.0  # nothing before t moves
    assert float((out2[:, :, t:] - out[:, :, t:]).abs().max()) > 1e-3  # and the test can see a change


def test_causal_gpt2_no_future_influence():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=128, n_embd=32, n_layer=2, n_head=2)).eval()
    ids = torch.randint(0, 64, (1, 128))
    sparse = sparsify_attention(gpt, (ids,), AttentionSparsityConfig(density=0.25, block_size=16, allocation="uniform"))
    ids2 = ids.clone()
    ids2[0, 70] = (ids[0, 70] + 1) % 64
    with torch.no_grad():
        a, b = (sparse(x, use_cache=False).logits for x in (ids, ids2))
    assert float((a[:, :70] - b[:, :70]).abs().max()) == 0.0
    assert float((a[:, 70:] - b[:, 70:]).abs().max()) > 1e-4


class _Layer(torch.nn.Module):
    """Bidirectional and causal sparse attention side by side: one export covers both variants."""

    def __init__(self, causal=(False, True)):
        super().__init__()
        self.attn = torch.nn.ModuleList(SparseAttention(density=0.25, block_size=16, causal=c) for c in causal)

    def forward(self, q, k, v):
        return tuple(a(q, k, v) for a in self.attn)


H, D = 2, 8  # small heads x head dim: the export cost is the trace, the checks only need per-head selection


@pytest.fixture(scope="module")
def exported_layer(tmp_path_factory):
    """One dynamic-length export of both variants, shared by the graph, ORT and OpenVINO checks (the export is
    the slow part of this file)."""
    from edgeprune.exporter import convert, export

    tmp = tmp_path_factory.mktemp("attn")
    m = _Layer().eval()
    path = tmp / "attn.onnx"
    export(m, _qkv(b=1, h=H, L=100, d=D), path, input_names=["q", "k", "v"], dynamic_dims={i: {2: "seq"} for i in range(3)})
    convert(path, tmp / "attn.xml", "openvino")
    return m, path, tmp / "attn.xml"


def test_export_gathers_blocks(exported_layer):
    import onnx

    ops = [n.op_type for n in onnx.load(str(exported_layer[1])).graph.node]
    assert ops.count("TopK") == 2 and ops.count("Gather") >= 4  # selection and gathered K/V blocks, per variant


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_export_matches_on_runtime(exported_layer, runtime):
    from edgeprune.backends import BackendOptions, get_backend

    m, onnx_path, xml_path = exported_layer
    backend = (get_backend("onnxruntime").compile(onnx_path) if runtime == "onnxruntime"
               else get_backend("openvino", BackendOptions(precision="fp32")).compile(xml_path))
    for L in (37, 100, 300):  # dynamic sequence length, not a multiple of the block
        q, k, v = _qkv(b=1, h=H, L=L, d=D, seed=L)
        refs = [r.numpy() for r in m(q, k, v)]
        for ref, got in zip(refs, backend.run({"q": q.numpy(), "k": k.numpy(), "v": v.numpy()})):
            assert got.shape == ref.shape
            assert np.abs(got - ref).max() <= 1e-4, (runtime, L)


def test_exported_sparse_graph_is_smaller_than_dense(exported_layer):
    """At L=1024, density 0.25: the largest intermediate of the sparse graph is far below the h*L*L dense scores.

    The shared graph has a dynamic length, so every intermediate is made a graph output and its real size read
    from one ONNX Runtime run at L=1024 (static shape inference cannot follow the Pad/Reshape arithmetic)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(exported_layer[1]))
    del model.graph.value_info[:]
    outs = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for node in model.graph.node
                              for name in node.output if name and name not in outs)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    L = 1024
    q, k, v = _qkv(b=1, h=H, L=L, d=D)
    sizes = [a.size for a in sess.run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()}) if isinstance(a, np.ndarray)]
    assert len(sizes) > 100  # every intermediate was read
    assert max(sizes) <= 0.35 * H * L * L, max(sizes)  # dense: H * 1024 * 1024 scores


def test_config_and_model_errors_are_one_line():
    with pytest.raises(ConfigError, match="density must be in"):
        AttentionSparsityConfig(density=1.5)
    with pytest.raises(AttentionSparsityError, match="no Hugging Face self-attention module found in Linear") as err:
        sparsify_attention(torch.nn.Linear(4, 4), None, AttentionSparsityConfig())
    assert "\n" not in str(err.value) and "fix:" in str(err.value)
