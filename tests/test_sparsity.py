"""Sparsity patterns, masks, checks, errors; magnitude / Wanda / SparseGPT; sequential sparsify on small models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import edgeprune as ep
from edgeprune.errors import ConfigError, SparsityError
from edgeprune.sparsity import NM, Block, SparsityConfig, Unstructured, parse_pattern
from edgeprune.sparsity.calib import Moments
from edgeprune.sparsity.patterns import from_matrix, to_matrix
from edgeprune.sparsity.sparsegpt import reconstruction_error, sparsegpt_prune
from edgeprune.sparsity.wanda import magnitude_mask, wanda_mask

from conftest import make_cnn, make_encoder, make_mlp


def _scores(rows=64, cols=128, seed=0):
    return torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed))


# -- patterns -------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [("2:4", NM(2, 4)), (" 1:4 ", NM(1, 4)), ("4:8", NM(4, 8)),
                                            ("block4x4", Block(4, 4)), ("block8x1", Block(8, 1)),
                                            ("unstructured", Unstructured())])
def test_parse_pattern(text, expected):
    assert parse_pattern(text) == expected
    assert parse_pattern(expected) is expected


@pytest.mark.parametrize("text, fragment", [("3:2", "1 <= N < M"), ("4:4", "1 <= N < M"), ("0:4", "1 <= N < M"),
                                            ("block0x4", "bad block"), ("2-4", "unknown sparsity pattern")])
def test_bad_patterns_give_clear_errors(text, fragment):
    with pytest.raises(SparsityError, match=fragment):
        parse_pattern(text)


def test_nm_mask_every_group_of_four_has_two_zeros():
    keep = NM(2, 4).mask(_scores(), 0.5)
    groups = keep.reshape(64, 32, 4)
    assert bool(((~groups).sum(dim=2) >= 2).all())
    assert int(keep.sum()) == 64 * 128 // 2


def test_nm_mask_keeps_the_largest_of_each_group():
    scores = torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.5, 0.1, 9.0, 8.0]])
    assert NM(2, 4).mask(scores).tolist() == [[False, True, True, False, False, False, True, True]]


def test_block_mask_blocks_all_zero_or_kept():
    keep = Block(4, 8).mask(_scores(), 0.6)
    tiles = keep.reshape(16, 4, 16, 8).sum(dim=(1, 3))
    assert set(tiles.unique().tolist()) <= {0, 32}
    assert abs(float((tiles == 0).float().mean()) - 0.6) < 1 / 256 + 1e-6


@pytest.mark.parametrize("per_row", [False, True])
def test_unstructured_mask_exact_count(per_row):
    keep = Unstructured().mask(_scores(), 0.7, per_row=per_row)
    if per_row:
        assert set((~keep).sum(dim=1).tolist()) == {round(0.7 * 128)}
    else:
        assert int((~keep).sum()) == round(0.7 * 64 * 128)


def test_check_reports_violations_and_sparsity():
    w = torch.randn(8, 16)
    bad = NM(2, 4).check(w)
    assert not bad.ok and bad.violations == 32 and "fewer than 2 zeros" in bad.detail
    good = NM(2, 4).check(w * NM(2, 4).mask(w.abs()))
    assert good.ok and good.sparsity == 0.5 and good.groups == 32
    blocked = w * Block(2, 4).mask(w.abs(), 0.5)
    assert Block(2, 4).check(blocked).ok and not Block(2, 4).check(w.masked_fill(w.abs() < 0.3, 0)).ok
    assert Unstructured().check(blocked, sparsity=0.5).ok and not Unstructured().check(w, sparsity=0.5).ok


def test_conv_groups_run_along_c_in_per_kernel_position():
    w = torch.randn(8, 16, 3, 3)
    mat = to_matrix(w)
    assert mat.shape == (8, 9 * 16)
    assert torch.equal(from_matrix(mat, tuple(w.shape)), w)
    assert torch.equal(mat[:, :16], w[:, :, 0, 0])  # the first 16 columns are C_in at kernel position (0, 0)
    pruned = from_matrix(mat * NM(2, 4).mask(mat.abs()), tuple(w.shape))
    per_position = pruned.permute(0, 2, 3, 1).reshape(8, 3, 3, 4, 4)  # (out, kh, kw, C_in/4, 4)
    assert bool(((per_position == 0).sum(dim=-1) >= 2).all())


@pytest.mark.parametrize("pattern, shape, fragment", [
    (NM(2, 4), (16, 30), "K=30 is not divisible by 4"),
    (NM(2, 4), (16, 3, 3, 3), "C_in=3 is not divisible by 4"),
    (Block(8, 8), (4, 64), "larger than the weight"),
    (Block(4, 4), (16, 30), "not divisible into 4x4 blocks"),
])
def test_validate_rejects_shapes_the_pattern_cannot_tile(pattern, shape, fragment):
    with pytest.raises(SparsityError, match=fragment):
        pattern.validate(shape, where="layer 'x'")


def test_nm_fixes_its_sparsity():
    with pytest.raises(SparsityError, match="fixes sparsity at 0.50"):
        SparsityConfig(pattern="2:4", sparsity=0.7)
    assert SparsityConfig(pattern="2:4").target_sparsity == 0.5
    assert SparsityConfig(pattern="unstructured").target_sparsity == 0.5


@pytest.mark.parametrize("kwargs, error", [({"method": "obs"}, ConfigError), ({"allocation": "greedy"}, ConfigError),
                                           ({"pattern": "2:4", "allocation": "learned"}, ConfigError),
                                           ({"pattern": "unstructured", "sparsity": 1.5}, SparsityError)])
def test_config_errors(kwargs, error):
    with pytest.raises(error):
        SparsityConfig(**kwargs)


# -- reconstruction -------------------------------------------------------------------

def _correlated_layer(seed, k=128, out=64, n=1024):
    """A random layer whose inputs live near a rank-32 subspace (strongly correlated features)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=g) @ torch.randn(32, k, generator=g) + 0.1 * torch.randn(n, k, generator=g)
    w = torch.randn(out, k, generator=g)
    moments = Moments(k, need_hessian=True)
    moments.add(x)
    return w, x, moments


def _rel_err(w, w_new, x):
    return float(((x @ w.T - x @ w_new.T) ** 2).sum() / ((x @ w.T) ** 2).sum())


@pytest.mark.parametrize("pattern, sparsity, max_ratio", [("2:4", None, 0.3), ("unstructured", 0.5, 0.3), ("block4x4", 0.5, 0.05)])
def test_sparsegpt_beats_magnitude_on_layer_reconstruction(pattern, sparsity, max_ratio):
    w, x, moments = _correlated_layer(0)
    pat = parse_pattern(pattern)
    magnitude = w * magnitude_mask(w, pat, sparsity)
    pruned, keep = sparsegpt_prune(w, moments.hessian, pat, sparsity)
    assert pat.check(pruned).ok and torch.equal(pruned == 0, ~keep | (pruned == 0))
    assert abs(float((pruned == 0).float().mean()) - 0.5) < 0.01
    err_gpt, err_mag = _rel_err(w, pruned, x), _rel_err(w, magnitude, x)
    assert err_gpt / err_mag < max_ratio, (err_gpt, err_mag)  # measured ~0.19 (2:4), 0.16 (unstructured), 0.002 (block)
    assert reconstruction_error(w, pruned, moments.hessian) == pytest.approx(err_gpt, rel=1e-3)


def test_wanda_weights_by_input_norm():
    w = torch.ones(2, 4)
    keep = wanda_mask(w, torch.tensor([1.0, 5.0, 2.0, 0.1]), NM(2, 4), None)
    assert keep.tolist() == [[False, True, True, False]] * 2


def test_sparsegpt_dead_inputs_become_zero():
    w, x, moments = _correlated_layer(1, k=16, out=8, n=256)
    h = moments.hessian.clone()
    h[3, :] = 0
    h[:, 3] = 0
    pruned, _ = sparsegpt_prune(w, h, NM(2, 4), None)
    assert bool((pruned[:, 3] == 0).all()) and NM(2, 4).check(pruned).ok


# -- sparsify on models ---------------------------------------------------------------

@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_sparsify_mlp_bakes_zeros_and_leaves_no_hooks(method):
    model, inputs = make_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out, report = ep.sparsify(model, inputs, SparsityConfig(pattern="2:4", method=method), calib=torch.randn(64, 32),
                              return_report=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the caller's model is untouched
    for lin in (out.net[0], out.net[2]):
        assert NM(2, 4).check(lin.weight).ok
        assert not lin._forward_pre_hooks and not hasattr(lin, "parametrizations")
    assert set(out.state_dict()) == set(before)
    assert report.global_sparsity == 0.5 and report.pattern_ok
    assert [l.method for l in report.layers] == [method] * 2
    assert torch.isfinite(out(*inputs)).all()


def test_sparsify_sequential_uses_the_sparsified_prefix():
    """The second layer's Hessian must come from the first layer's *sparse* output."""
    model, _ = make_mlp()
    calib = torch.randn(128, 32)
    out = ep.sparsify(model, None, SparsityConfig(pattern="2:4", method="sparsegpt"), calib=calib)
    seen = {}
    out.net[2].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    out(calib)
    moments = Moments(64, need_hessian=True)
    moments.add(seen["x"])
    w_dense = model.net[2].weight.detach()
    redo, _ = sparsegpt_prune(w_dense, moments.hessian, NM(2, 4), None)
    assert torch.allclose(redo, out.net[2].weight.detach(), atol=1e-5)


def test_sparsify_cnn_errors_then_skips_incompatible_layers():
    model, inputs = make_cnn()
    with pytest.raises(SparsityError, match=r"C_in=3 is not divisible by 4.*ignore=\['stem.0', 'block.3'\]"):
        ep.sparsify(model, inputs, SparsityConfig(pattern="2:4", on_incompatible="error"))
    out, report = ep.sparsify(model, inputs, SparsityConfig(pattern="2:4", method="sparsegpt"),  # skip: the default
                              calib=torch.randn(8, 3, 32, 32), return_report=True)
    by_name = {l.name: l for l in report.layers}
    assert by_name["stem.0"].status == "skipped" and "C_in=3" in by_name["stem.0"].reason
    assert "grouped conv" in by_name["block.3"].reason
    assert NM(2, 4).check(out.block[0].weight).ok and by_name["block.0"].recon_error is not None
    same = ep.sparsify(model, inputs, SparsityConfig(pattern="2:4", ignore=("stem.*", "block.3")))
    assert NM(2, 4).check(same.head.weight).ok and torch.equal(same.stem[0].weight, model.stem[0].weight)


def test_sparsify_encoder_block_pattern_and_unstructured():
    model, inputs = make_encoder()
    calib = torch.randn(16, 16, 64)
    for pattern in ("block4x4", "unstructured"):
        out, report = ep.sparsify(model, inputs, SparsityConfig(pattern=pattern, method="sparsegpt", sparsity=0.6),
                                  calib=calib, return_report=True)
        assert report.pattern_ok and abs(report.global_sparsity - 0.6) < 0.005
        cos = nn.functional.cosine_similarity(out(*inputs).flatten(), model(*inputs).flatten(), dim=0)
        assert cos > 0.8


def test_sparsify_without_calibration_says_so():
    model, inputs = make_mlp()
    _, report = ep.sparsify(model, inputs, SparsityConfig(pattern="2:4", method="wanda"), return_report=True)
    assert any("example inputs only" in n for n in report.notes)
    with pytest.raises(ConfigError, match="needs calibration data"):
        ep.sparsify(model, None, SparsityConfig(pattern="2:4", method="wanda"))


def test_report_is_honest_on_this_cpu():
    from edgeprune.sparsity.support import HostFacts

    model, inputs = make_mlp()
    _, report = ep.sparsify(model, inputs, SparsityConfig(pattern="2:4"), return_report=True)
    no_amx = HostFacts(amx=False, cuda=None, cuda_capability=None)
    report.assess(host=no_amx)
    verdicts = {v.runtime: v for v in report.layers[0].verdicts}
    assert verdicts["onnxruntime"].verdict == "no" and "densifies" in verdicts["onnxruntime"].reason
    assert verdicts["openvino"].verdict == "no" and "no AMX on this CPU" in verdicts["openvino"].reason
    assert verdicts["torch-cuda"].verdict == "no" and "too small for a sparse kernel to pay" in verdicts["torch-cuda"].reason
    amx = HostFacts(amx=True, cuda=None, cuda_capability=None)
    big = report.layers[0]
    big.matrix_shape, big.sparsity = (256, 512), 0.7
    report.assess(host=amx, precision="int8")
    ov = {v.runtime: v for v in big.verdicts}["openvino"]
    assert ov.verdict == "memory-only", ov
    summary = report.summary()["openvino"]
    assert summary["compressed_weight_bytes"] < summary["dense_weight_bytes"]
    assert "| net.0 |" in report.markdown()


class _Profile:
    name = "fake-orin"

    def accelerates(self, runtime, pattern):
        return ("yes", "2:4 sparse tensor cores") if (runtime, pattern) == ("tensorrt", "2:4") else ("no", "not on this device")


def test_profile_verdict_is_used_and_lowered_by_layer_facts():
    from edgeprune.sparsity.support import HostFacts, layer_verdict, pattern_support

    assert pattern_support(NM(2, 4), "tensorrt", _Profile()).verdict == "yes"
    assert pattern_support(Block(4, 4), "tensorrt", _Profile()).verdict == "no"
    gpu = HostFacts(amx=False, cuda="Orin", cuda_capability=(8, 7), installed=frozenset({"tensorrt"}))
    big = layer_verdict(NM(2, 4), "tensorrt", op="Linear", matrix_shape=(8192, 8192), sparsity=0.5, precision="fp16",
                        profile=_Profile(), host=gpu)
    assert big.verdict == "yes" and "fake-orin" in big.reason
    fp32 = layer_verdict(NM(2, 4), "tensorrt", op="Linear", matrix_shape=(8192, 8192), sparsity=0.5, precision="fp32",
                         profile=_Profile(), host=gpu)
    assert fp32.verdict == "no" and "FP16 or INT8" in fp32.reason
