"""Structured channel pruning of CNNs/MLPs: config errors, counting, dependency groups, compensation, export."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import edgeprune as ep
from conftest import make_cnn, make_encoder, make_mlp, make_target
from edgeprune.errors import ConfigError, PruningError
from edgeprune.pruning.graph import channel_groups
from pruning_models import make_concat, make_ir


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _calib(x, n=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *x[0].shape[1:]), generator=g)


def _out(model, x):
    with torch.no_grad():
        return model(*x)


# -- config -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{"ratio": 1.0}, {"ratio": -0.1}, {"per_layer": {"stem.*": 1.5}},
                                    {"importance": "bogus"}, {"unit": "rows"}, {"round_to": 0}, {"min_keep": 0},
                                    {"scope": "everywhere"}, {"target": object()}])
def test_bad_config_raises(kwargs):
    with pytest.raises(ConfigError):
        ep.StructuredConfig(**kwargs)


def test_config_is_frozen_and_hashable():
    cfg = ep.StructuredConfig(ratio=0.3, per_layer={"a*": 0.1}, ignore="head")
    assert cfg.ignore == ("head",) and cfg.ratio_for("a.0") == 0.1 and cfg.ratio_for("b") == 0.3
    hash(cfg)
    with pytest.raises(Exception):
        cfg.ratio = 0.2


def test_ignoring_everything_raises():
    model, x = make_cnn()
    with pytest.raises(ConfigError, match="nothing left to prune"):
        ep.prune(model, x, ep.StructuredConfig(ratio=0.5, ignore=["*"]))


def test_zero_width_raises():
    model, x = make_mlp()
    with pytest.raises(ConfigError, match="would keep 0"):
        ep.prune(model, x, ep.StructuredConfig(ratio=0.995, importance="magnitude"))


def test_taylor_without_loss_raises():
    model, x = make_mlp()
    with pytest.raises(ConfigError, match="loss"):
        ep.prune(model, x, ep.StructuredConfig(ratio=0.5, importance="taylor"))


def test_unsupported_layer_names_module_and_suggests_ignore():
    model, x = make_encoder()
    with pytest.raises(PruningError, match=r"layer\.self_attn.*ignore"):
        ep.prune(model, x, ep.StructuredConfig(ratio=0.5, unit="channels", strict=True))
    lines = []
    pruned = ep.prune(model, x, ep.StructuredConfig(ratio=0.5, unit="channels"), progress=lines.append)
    assert any(ln.startswith("left unpruned: layer.self_attn (MultiheadAttention)") for ln in lines)
    assert pruned(*x).shape == model(*x).shape


# -- counting ------------------------------------------------------------------------------------------
def test_count_linear_and_conv():
    model, x = make_mlp()
    c = ep.count(model, x)
    assert c.macs == 4 * (32 * 64 + 64 * 10) and c.params == 32 * 64 + 64 + 64 * 10 + 10
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert ep.count(conv, torch.randn(1, 3, 10, 10)).macs == 8 * 3 * 9 * 100


# -- dependency groups ---------------------------------------------------------------------------------
def test_groups_residual_cnn():
    model, x = make_cnn()
    groups = {g.name: g for g in channel_groups(model, x, lambda n: False)}
    assert len(groups) == 2                                # the classifier's outputs are not prunable
    res = next(g for g in groups.values() if any(p.name == "stem.0" for p in g.producers))
    # the residual stream couples stem, block.3 (grouped conv) and the head's inputs
    assert {p.name for p in res.producers} == {"stem.0", "block.3"}
    assert {c.name for c in res.consumers} == {"block.0", "head"} and res.uniform == 4


def test_groups_inverted_residual_depthwise_flatten():
    model, x = make_ir()
    groups = {g.name: g for g in channel_groups(model, x, lambda n: False)}
    dw = next(g for g in groups.values() if any(p.name == "expand.0" for p in g.producers))
    assert [c.name for c in dw.consumers] == ["project.0"] and dw.uniform == 1   # depthwise rides along
    flat = next(g for g in groups.values() if any(c.name == "head" for c in g.consumers))
    assert len(flat.consumers[0].units[0]) == 16                                  # one channel -> 4x4 features


@pytest.mark.parametrize("make", [make_cnn, make_ir, make_concat, make_mlp])
def test_ratio_zero_is_identity(make):
    model, x = make()
    pruned = ep.prune(model, x, ep.StructuredConfig(ratio=0.0))
    assert (_out(pruned, x) - _out(model, x)).abs().max() <= 1e-6


@pytest.mark.parametrize("make", [make_cnn, make_ir, make_concat, make_mlp])
def test_compensation_lowers_error_and_macs_drop(make):
    model, x = make()
    cal = _calib(x, 256 if make is make_mlp else 48)  # enough rows that the refit is not underdetermined
    ref = _out(model, x)
    errs = {}
    for comp in (False, True):
        pruned = ep.prune(model, x, ep.StructuredConfig(ratio=0.5, compensate=comp), calib=cal)
        errs[comp] = _rel(_out(pruned, x), ref)
    assert errs[True] < 0.8 * errs[False], errs
    dense, small = ep.count(model, x), ep.count(pruned, x)
    assert small.macs < 0.75 * dense.macs and small.params < dense.params


def test_shapes_shrink_as_configured():
    model, x = make_cnn()
    pruned = ep.prune(model, x, ep.StructuredConfig(ratio=0.5, importance="magnitude"))
    assert pruned.stem[0].out_channels == 8 and pruned.block[0].out_channels == 8
    assert pruned.block[3].groups == 4 and pruned.head.in_features == 8
    assert model.stem[0].out_channels == 16                 # the input model is untouched


@pytest.mark.parametrize("importance", ["magnitude", "l1", "wanda", "numerical", "random"])
def test_importances_run(importance):
    model, x = make_ir()
    pruned = ep.prune(model, x, ep.StructuredConfig(ratio=0.3, importance=importance), calib=_calib(x, 16))
    assert _out(pruned, x).shape == (2, 10)


def test_taylor_with_loss_and_global_scope():
    model, x = make_ir()
    y = torch.randint(0, 10, (16,))
    cal = _calib(x, 16)
    pruned = ep.prune(model, x, ep.StructuredConfig(ratio=0.4, importance="taylor", scope="global"), calib=cal,
                      loss_fn=lambda out: nn.functional.cross_entropy(out, y[: out.shape[0]]))
    assert ep.count(pruned, x).macs < ep.count(model, x).macs
    pruned = ep.prune(model, x, ep.StructuredConfig(ratio=0.4, scope="global"), calib=cal)
    assert _out(pruned, x).shape == (2, 10)


def test_round_to_and_profile():
    model, x = make_ir()
    for cfg in (ep.StructuredConfig(ratio=0.3, round_to=8), ep.StructuredConfig(ratio=0.3, target=make_target(multiple=8))):
        pruned = ep.prune(model, x, cfg, calib=_calib(x, 16))
        assert pruned.expand[0].out_channels % 8 == 0 and pruned.expand[0].out_channels < 64


def test_ignore_keeps_layer():
    model, x = make_ir()
    pruned = ep.prune(model, x, ep.StructuredConfig(ratio=0.5, ignore=["expand.*"]), calib=_calib(x, 16))
    assert pruned.expand[0].out_channels == 64 and pruned.gconv[0].out_channels < 32


def test_calib_forms():
    model, x = make_cnn()
    cal = _calib(x, 8)
    a = ep.prune(model, x, ep.StructuredConfig(ratio=0.5), calib=cal)
    b = ep.prune(model, x, ep.StructuredConfig(ratio=0.5), calib=[(cal[:4],), (cal[4:],)])
    assert torch.allclose(_out(a, x), _out(b, x), atol=1e-5)       # deterministic, batching-invariant
    with pytest.raises(ConfigError):
        ep.prune(model, x, ep.StructuredConfig(ratio=0.5), calib=["nope"])


@pytest.mark.parametrize("make", [make_cnn, make_ir])
def test_pruned_cnn_exports_to_ort_and_openvino(make, tmp_path):
    from edgeprune.exporter import export, convert, torch_outputs

    model, x = make()
    pruned = ep.prune(model, x, ep.StructuredConfig(ratio=0.5), calib=_calib(x, 16))
    report = export(pruned, x, tmp_path / "p.onnx")
    assert report.ok and report.max_abs_diff <= 1e-4
    feeds = {"input_0": x[0].numpy()}
    ov = convert(tmp_path / "p.onnx", tmp_path / "p.xml", "openvino", reference=(torch_outputs(pruned, x), feeds))
    assert ov.ok and ov.max_abs_diff <= 1e-4


def test_ridge_cholesky_recovers_singular_and_names_the_layer_when_it_cannot():
    from edgeprune.errors import PruningError
    from edgeprune.pruning.compensate import ridge_cholesky

    x = torch.randn(3, 8, dtype=torch.float64)
    singular = x.t() @ x  # rank 3 of 8: PSD, not PD
    L = ridge_cholesky(singular, "layer 'a'")
    assert torch.allclose(L @ L.t(), singular, atol=1e-3 * singular.diagonal().mean().item())
    with pytest.raises(PruningError, match="layer 'b'.*not positive definite"):
        ridge_cholesky(-torch.eye(4, dtype=torch.float64), "layer 'b'")
    with pytest.raises(PruningError, match="layer 'c'.*NaN/Inf"):
        ridge_cholesky(torch.full((2, 2), float("inf"), dtype=torch.float64), "layer 'c'")


def test_overflowing_calibration_names_the_layer_in_one_line(tmp_path):
    from pathlib import Path

    import numpy as np
    from click.testing import CliRunner

    from edgeprune.cli import main

    np.save(tmp_path / "huge.npy", np.full((16, 32), 3e38, dtype=np.float32))  # finite, but the first Linear overflows
    result = CliRunner().invoke(main, ["prune", f"{Path(__file__).parent}/models_for_cli.py:mlp_with_inputs", "--ratio", "0.5",
                                       "--calib", str(tmp_path / "huge.npy"), "-o", str(tmp_path / "m.pt2")])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "NaN/Inf" in lines[0] and "layer 'net." in lines[0], result.output
    assert not (tmp_path / "m.pt2").exists()


def test_importance_and_sparsity_method_are_registries_without_fallback():
    # an unknown name lists the registered ones; a registered one runs its own metric (never torch.rand)
    from edgeprune.errors import ConfigError
    from edgeprune.pruning.importance import IMPORTANCE, importance_metric
    from edgeprune.sparsity import SparsityConfig
    from edgeprune.sparsity.methods import SPARSITY_METHODS

    for bad in (lambda: importance_metric("nope"), lambda: ep.StructuredConfig(importance="nope"),
                lambda: SparsityConfig(method="nope")):
        with pytest.raises(ConfigError) as err:
            bad()
        assert "use one of" in err.value.hint
    assert set(IMPORTANCE) == {"numerical", "wanda", "magnitude", "l2", "l1", "taylor", "random"}
    assert set(SPARSITY_METHODS) == {"magnitude", "wanda", "sparsegpt"}
    assert IMPORTANCE["numerical"].needs_stats and not IMPORTANCE["l1"].needs_stats


def test_compensation_ridge_keeps_a_channel_that_calibration_barely_exercises():
    """A kept input that is nearly constant on the calibration set must keep its weight: a ridge toward zero (the
    old refit) erased it, which fits the calibration rows and breaks every input where that channel moves."""
    from edgeprune.pruning.compensate import refit_block
    from edgeprune.pruning.stats import BlockStats

    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=g, dtype=torch.float64)
    x[:, 2] = 0.01 * x[:, 2]                              # column 2 barely varies on calibration data
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.5, 2.0, 0.3], [-1.0, 0.2, 1.5, 0.1], [0.4, -0.7, -2.0, 0.2]]))
    w_before = lin.weight.detach().clone()
    st = BlockStats(out=slice(None), ch=slice(0, 4), per_ch=1, G=x.t() @ x, s=x.sum(0), n=512)
    refit_block(lin, st, torch.tensor([3]), damp=1e-2)
    assert torch.allclose(lin.weight[:, 2], w_before[:, 2], atol=0.05), lin.weight[:, 2]   # toward zero: ~0.4x
    assert float(lin.weight.detach()[:, 3].abs().max()) == 0.0
    fresh = torch.randn(256, 4, generator=g, dtype=torch.float64).float()   # column 2 moves here
    want = fresh[:, :3] @ w_before[:, :3].t()
    with torch.no_grad():
        got = lin(torch.cat([fresh[:, :3], torch.zeros(256, 1)], 1)) - lin.bias
    assert float((got - want).abs().max()) < 0.1
