"""TensorRT backend: the GPU-free logic (2:4 eligibility, build plan, log / inspector parsing, cache paths,
availability) runs everywhere; real engine builds are marked `tensorrt` and skip without TensorRT + CUDA."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.backends import BackendOptions, get_backend, get_backend_class
from edgeprune.backends.trt import (
    TensorRTBackend,
    check_sparse_eligibility,
    plan_build,
    timing_cache_path,
)
from edgeprune.backends.trt_logic import check_input_shape, onnx_inputs, onnx_precision, parse_device, sidecar_paths
from edgeprune.errors import BackendUnavailable, ConfigError, ModelLoadError

RNG = np.random.default_rng(0)


# -- tiny ONNX models ----------------------------------------------------------------------------


def dense(*shape: int, dtype=np.float32) -> np.ndarray:
    """No zeros at all."""
    return (RNG.uniform(0.5, 1.5, size=shape) * RNG.choice([-1, 1], size=shape)).astype(dtype)


def two_four(shape: tuple[int, ...], axis: int, dtype=np.float32) -> np.ndarray:
    """Exactly 2 zeros in every group of 4 along `axis`, at positions that vary from group to group."""
    w = np.moveaxis(dense(*shape, dtype=dtype), axis, -1).copy()
    flat = w.reshape(-1, 4)
    for i, row in enumerate(flat):
        row[list(RNG.choice(4, size=2, replace=False))] = 0
    return np.moveaxis(flat.reshape(w.shape), -1, axis)


def wrong_axis(rows: int, cols: int) -> np.ndarray:
    """Half zeros, 2 in every group of 4 along axis 1, none in columns 2 and 3 (so axis 0 fails)."""
    w = dense(rows, cols)
    w[:, 0::4] = 0
    w[:, 1::4] = 0
    assert (w == 0).mean() == 0.5
    return w


def model_of(nodes, inits, inputs, outputs, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def eligibility_model() -> onnx.ModelProto:
    """One of each case the brief names, plus Transpose / DequantizeLinear / activation weights."""
    mm24 = two_four((8, 4), axis=0)  # ONNX MatMul weight (in, out): groups along axis 0
    mm_dense = dense(8, 4)
    mm_wrong_axis = wrong_axis(8, 4)  # 2:4 along the *output* axis only
    conv24 = two_four((4, 8, 3, 3), axis=1)  # (K, C, R, S): groups along C for every (k, r, s)
    conv_wrong = two_four((4, 8, 4, 4), axis=3)  # half zeros, but grouped along S, not C
    conv_c6 = np.zeros((4, 6, 3, 3), np.float32)  # all zeros, yet C=6 is not a multiple of 4
    gemm_t = two_four((4, 8), axis=1)  # transB=1: (out, in) -> groups along axis 1
    gemm_n = wrong_axis(8, 4)  # transB=0: (in, out) -> groups along axis 0, where columns 2, 3 are dense
    tr_src = two_four((4, 8), axis=1)  # Transpose(perm=[1,0]) -> (8, 4) MatMul weight, in-channels on axis 1 of the source
    q = np.where(two_four((8, 4), axis=0) == 0, 0, RNG.integers(1, 127, size=(8, 4))).astype(np.int8)
    inits = {"mm24": mm24, "mm_dense": mm_dense, "mm_wrong_axis": mm_wrong_axis, "conv24": conv24,
             "conv_wrong": conv_wrong, "conv_c6": conv_c6, "gemm_t": gemm_t, "gemm_n": gemm_n, "tr_src": tr_src,
             "q": q, "q_scale": np.array(0.01, np.float32), "q_zp": np.array(0, np.int8)}
    nodes = [
        helper.make_node("MatMul", ["x8", "mm24"], ["y1"], name="mm_24"),
        helper.make_node("MatMul", ["x8", "mm_dense"], ["y2"], name="mm_dense"),
        helper.make_node("MatMul", ["x8", "mm_wrong_axis"], ["y3"], name="mm_wrong_axis"),
        helper.make_node("Conv", ["img8", "conv24"], ["c1"], name="conv_24", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["img8", "conv_wrong"], ["c2"], name="conv_wrong_axis"),
        helper.make_node("Conv", ["img6", "conv_c6"], ["c3"], name="conv_c6", pads=[1, 1, 1, 1]),
        helper.make_node("Gemm", ["x8", "gemm_t"], ["g1"], name="gemm_transB", transB=1),
        helper.make_node("Gemm", ["x8", "gemm_n"], ["g2"], name="gemm_noTrans"),
        helper.make_node("Transpose", ["tr_src"], ["tr_w"], perm=[1, 0]),
        helper.make_node("MatMul", ["x8", "tr_w"], ["y4"], name="mm_transposed"),
        helper.make_node("DequantizeLinear", ["q", "q_scale", "q_zp"], ["q_w"]),
        helper.make_node("MatMul", ["x8", "q_w"], ["y5"], name="mm_qdq"),
        helper.make_node("MatMul", ["x8", "x8t"], ["y6"], name="mm_activation"),
    ]
    inputs = [vi("x8", [2, 8]), vi("x8t", [8, 4]), vi("img8", [1, 8, 5, 5]), vi("img6", [1, 6, 5, 5])]
    outputs = [vi(n, None) for n in ("y1", "y2", "y3", "c1", "c2", "c3", "g1", "g2", "y4", "y5", "y6")]
    return model_of(nodes, inits, inputs, outputs)


def mlp_model(weight: np.ndarray, dtype=TensorProto.FLOAT, dims=("batch", 8)) -> onnx.ModelProto:
    """x (batch, 8) @ W (8, 4): the smallest file plan_build needs."""
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    return model_of([node], {"w": weight}, [vi("x", list(dims), dtype)], [vi("y", None, dtype)])


def qdq_model() -> onnx.ModelProto:
    w = np.where(two_four((8, 4), axis=0) == 0, 0, 3).astype(np.int8)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "s", "zp"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["y"], name="fc_int8")]
    inits = {"w": w, "s": np.array(0.05, np.float32), "zp": np.array(0, np.int8)}
    return model_of(nodes, inits, [vi("x", [4, 8])], [vi("y", None)])


class FakeProfile:
    """Anything with accelerates(runtime, pattern) -> (verdict, reason) is a device profile here."""

    def __init__(self, verdict: str = "yes", reason: str = "Ampere sparse tensor cores", name: str = "fake-orin"):
        self.name, self.verdict, self.reason, self.calls = name, verdict, reason, []

    def accelerates(self, runtime: str, pattern: str):
        self.calls.append((runtime, pattern))
        return self.verdict, self.reason


@pytest.fixture
def sparse_onnx(tmp_path):
    path = tmp_path / "fc24.onnx"
    onnx.save(mlp_model(two_four((8, 4), axis=0)), path)
    return path


@pytest.fixture
def dense_onnx(tmp_path):
    path = tmp_path / "fc_dense.onnx"
    onnx.save(mlp_model(dense(8, 4)), path)
    return path


# -- 2:4 eligibility -----------------------------------------------------------------------------


def test_eligibility_per_layer_is_exact():
    layers = {layer.name: layer for layer in check_sparse_eligibility(eligibility_model())}
    assert {n: layer.eligible for n, layer in layers.items()} == {
        "mm_24": True, "mm_dense": False, "mm_wrong_axis": False, "conv_24": True, "conv_wrong_axis": False,
        "conv_c6": False, "gemm_transB": True, "gemm_noTrans": False, "mm_transposed": True, "mm_qdq": True,
        "mm_activation": False,
    }
    assert layers["mm_24"].axis == 0 and layers["conv_24"].axis == 1 and layers["gemm_transB"].axis == 1
    assert layers["gemm_noTrans"].axis == 0 and layers["mm_transposed"].axis == 1  # traced through Transpose
    assert "not a multiple of 4" in layers["conv_c6"].reason and "C=6" in layers["conv_c6"].reason
    assert layers["conv_c6"].zero_fraction == 1.0
    assert layers["mm_dense"].dense_groups == layers["mm_dense"].groups == 8  # 4 columns x 2 groups
    assert layers["conv_24"].groups == 4 * 3 * 3 * 2 and layers["conv_24"].dense_groups == 0
    assert layers["mm_activation"].weight is None and "not a constant" in layers["mm_activation"].reason
    assert layers["mm_qdq"].weight == "q"


def test_eligibility_reads_files_and_refuses_missing(tmp_path, sparse_onnx):
    assert [(x.name, x.eligible) for x in check_sparse_eligibility(sparse_onnx)] == [("fc", True)]
    with pytest.raises(ModelLoadError, match="not found"):
        check_sparse_eligibility(tmp_path / "nope.onnx")


def test_eligibility_one_dense_group_breaks_a_layer():
    w = two_four((8, 4), axis=0)
    w[0:4, 2] = 1.0  # one group of 4 input channels with no zero
    (layer,) = check_sparse_eligibility(mlp_model(w))
    assert not layer.eligible and layer.dense_groups == 1 and "1/8 groups" in layer.reason


def test_eligibility_uses_the_dequantize_zero_point():
    w = np.where(two_four((8, 4), axis=0) == 0, 128, 200).astype(np.uint8)  # 128 encodes 0.0
    nodes = [helper.make_node("DequantizeLinear", ["w", "s", "zp"], ["wd"]), helper.make_node("MatMul", ["x", "wd"], ["y"], name="fc")]
    model = model_of(nodes, {"w": w, "s": np.array(0.1, np.float32), "zp": np.array(128, np.uint8)}, [vi("x", [2, 8])], [vi("y", None)])
    (layer,) = check_sparse_eligibility(model)
    assert layer.eligible and layer.zero_fraction == 0.5


# -- precision, inputs, device -------------------------------------------------------------------


def test_precision_and_inputs_from_onnx():
    assert onnx_precision(mlp_model(dense(8, 4))) == "fp32"
    assert onnx_precision(mlp_model(dense(8, 4, dtype=np.float16), TensorProto.FLOAT16)) == "fp16"
    assert onnx_precision(qdq_model()) == "int8"
    assert onnx_inputs(mlp_model(dense(8, 4), dims=("batch", 8))) == [("x", ("batch", 8))]


def test_parse_device():
    assert parse_device("cuda") == (None, None) and parse_device("dla:1") == (1, None) and parse_device("dla") == (0, None)
    assert parse_device("cpu")[0] is None and "GPU" in parse_device("cpu")[1]
    with pytest.raises(ConfigError, match="npu"):
        parse_device("npu")


# -- build plan ----------------------------------------------------------------------------------


def test_plan_sets_sparse_weights_when_every_condition_holds(sparse_onnx):
    prof = FakeProfile()
    plan = plan_build(sparse_onnx, BackendOptions(precision="fp16"), prof, trt_version="10.3.0", gpu_name="Orin")
    assert prof.calls == [("tensorrt", "2:4")]
    assert plan.sparse_weights and plan.flags == ("FP16", "SPARSE_WEIGHTS")
    assert not plan.strongly_typed and plan.precision == "fp16" and plan.eligible_layers == ("fc",)
    assert "fake-orin" in plan.sparse_reason and "1/1 layers" in plan.sparse_reason
    assert plan.workspace == 1024 * 2**20 and plan.dla_core is None and not plan.gpu_fallback
    assert plan.profiles[0].input == "x" and plan.profiles[0].min == (1, 8) and plan.profiles[0].opt == (1, 8)
    assert plan.profiles[0].max == (32, 8)
    assert plan.timing_cache.endswith("fake-orin__trt10.3.0__Orin.cache")
    json.dumps(plan.to_dict())  # serializable for the build record


def test_plan_without_profile_assumes_ampere(sparse_onnx):
    plan = plan_build(sparse_onnx, BackendOptions(precision="fp16"), None)
    assert plan.sparse_weights and "assuming an Ampere" in plan.sparse_reason
    assert plan.timing_cache.endswith("generic__trtunknown__unknown.cache")


@pytest.mark.parametrize("verdict", ["no", "memory-only"])
def test_plan_profile_verdict_blocks_sparse(sparse_onnx, verdict):
    plan = plan_build(sparse_onnx, BackendOptions(precision="fp16"), FakeProfile(verdict, "Volta has no sparse TC", "xavier"))
    assert not plan.sparse_weights and "SPARSE_WEIGHTS" not in plan.flags and plan.flags == ("FP16",)
    assert f"'{verdict}'" in plan.sparse_reason and "Volta has no sparse TC" in plan.sparse_reason
    assert "precision" not in plan.sparse_reason  # only the failing condition is named


def test_plan_fp32_blocks_sparse(sparse_onnx):
    plan = plan_build(sparse_onnx, BackendOptions(precision="fp32"), FakeProfile())
    assert not plan.sparse_weights and plan.flags == ()
    assert plan.sparse_reason == "precision fp32: TensorRT sparse tactics need an FP16 or INT8 engine"


def test_plan_no_eligible_layer_blocks_sparse(dense_onnx):
    plan = plan_build(dense_onnx, BackendOptions(precision="fp16"), FakeProfile())
    assert not plan.sparse_weights and plan.eligible_layers == ()
    assert plan.sparse_reason == "no Conv/MatMul/Gemm weight meets 2:4 (1 checked)"


def test_plan_opt_out_and_every_failing_reason(dense_onnx):
    plan = plan_build(dense_onnx, BackendOptions(extra={"sparsity": "disable"}), FakeProfile("no", "CPU only"))
    reasons = plan.sparse_reason.split("; ")
    assert len(reasons) == 4 and reasons[0].startswith("sparsity disabled")
    with pytest.raises(ConfigError, match="sparsity mode"):
        plan_build(dense_onnx, BackendOptions(extra={"sparsity": "force"}))


def test_plan_on_a_profile_without_tensorrt_is_a_no(sparse_onnx):
    from edgeprune.targets.profiles import load_profile

    plan = plan_build(sparse_onnx, BackendOptions(precision="fp16"), load_profile("xeon-spr"))
    assert not plan.sparse_weights and "tensorrt is not a runtime of xeon-spr" in plan.sparse_reason


def test_plan_strongly_typed_fp16_and_qdq(tmp_path):
    fp16 = tmp_path / "fp16.onnx"
    onnx.save(mlp_model(two_four((8, 4), axis=0, dtype=np.float16), TensorProto.FLOAT16), fp16)
    plan = plan_build(fp16, BackendOptions(), FakeProfile())  # precision comes from the file
    assert plan.strongly_typed and plan.precision == "fp16" and plan.flags == ("SPARSE_WEIGHTS",)
    assert any("taken from the ONNX" in n for n in plan.notes)
    qdq = tmp_path / "qdq.onnx"
    onnx.save(qdq_model(), qdq)
    plan = plan_build(qdq, BackendOptions(precision="int8"), FakeProfile())
    assert plan.strongly_typed and plan.precision == "int8" and plan.flags == ("SPARSE_WEIGHTS",)  # no INT8 flag
    assert plan.profiles == ()  # static shapes: no optimization profile


def test_plan_int8_without_qdq_is_refused(sparse_onnx):
    with pytest.raises(ConfigError, match="Q/DQ"):
        plan_build(sparse_onnx, BackendOptions(precision="int8"))


def test_plan_dla(sparse_onnx):
    plan = plan_build(sparse_onnx, BackendOptions(device="dla:1", precision="fp16"), FakeProfile())
    assert plan.dla_core == 1 and plan.gpu_fallback and plan.flags == ("FP16", "GPU_FALLBACK", "SPARSE_WEIGHTS")
    (p,) = plan.profiles
    assert p.min == p.opt == p.max == (1, 8)  # DLA: no dynamic shapes
    no_fallback = plan_build(sparse_onnx, BackendOptions(device="dla", precision="fp16", extra={"gpu_fallback": False}))
    assert no_fallback.dla_core == 0 and "GPU_FALLBACK" not in no_fallback.flags
    with pytest.raises(ConfigError, match="DLA runs FP16 or INT8"):
        plan_build(sparse_onnx, BackendOptions(device="dla"))


def test_plan_shapes_defaults_and_overrides(tmp_path):
    path = tmp_path / "seq.onnx"
    onnx.save(mlp_model(dense(8, 4), dims=("batch", "seq", 8)), path)
    (p,) = plan_build(path, BackendOptions(extra={"batch": 4, "max_seq_len": 256})).profiles
    assert (p.min, p.opt, p.max) == ((1, 1, 8), (4, 128, 8), (32, 256, 8))
    given = {"x": {"min": [1, 16, 8], "opt": [2, 64, 8], "max": [8, 64, 8]}}
    (p,) = plan_build(path, BackendOptions(extra={"shapes": given})).profiles
    assert (p.min, p.opt, p.max) == ((1, 16, 8), (2, 64, 8), (8, 64, 8))
    bad = [{"y": given["x"]}, {"x": {"min": [1, 1, 9], "opt": [1, 1, 9], "max": [1, 1, 9]}},
           {"x": {"min": [2, 1, 8], "opt": [1, 1, 8], "max": [4, 1, 8]}}, {"x": {"min": [1, 8]}}]
    for shapes in bad:
        with pytest.raises(ConfigError):
            plan_build(path, BackendOptions(extra={"shapes": shapes}))
    with pytest.raises(ConfigError, match="above its maximum"):
        plan_build(path, BackendOptions(extra={"batch": 64}))


def test_plan_timing_cache_options(sparse_onnx, tmp_path):
    assert plan_build(sparse_onnx, BackendOptions(extra={"timing_cache": False})).timing_cache is None
    mine = tmp_path / "my.cache"
    assert plan_build(sparse_onnx, BackendOptions(extra={"timing_cache": str(mine)})).timing_cache == str(mine)
    assert plan_build(sparse_onnx, BackendOptions(extra={"workspace_mb": 64})).workspace == 64 * 2**20
    with pytest.raises(ConfigError, match="workspace_mb"):
        plan_build(sparse_onnx, BackendOptions(extra={"workspace_mb": "lots"}))


def test_timing_cache_path(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path))
    path = timing_cache_path("jetson-orin-nano", "10.3.0.30", "Orin (nvgpu)")
    assert path == tmp_path / "trt" / "jetson-orin-nano__trt10.3.0.30__Orin-nvgpu.cache"
    monkeypatch.delenv("EDGEPRUNE_CACHE")
    assert ".cache/edgeprune/trt/" in str(timing_cache_path(None, None, None)).replace("\\", "/")


def test_sidecars_and_shape_check(tmp_path):
    side = sidecar_paths(tmp_path / "model.onnx")
    assert side["engine"].name == "model.engine" and side["inspector"].name == "model.inspector.json"
    assert side["build"].name == "model.trt-build.json"
    check_input_shape("x", (4, 8), (1, 8), (32, 8))
    with pytest.raises(ConfigError, match=r"accepts \(1, 8\) \.\. \(32, 8\)"):
        check_input_shape("x", (64, 8), (1, 8), (32, 8))


# -- availability ----------------------------------------------------------------------------------


def test_registry_and_metadata():
    cls = get_backend_class("trt")
    assert cls is TensorRTBackend and cls.name == "tensorrt" and cls.package == "tensorrt"
    assert cls.artifact_suffixes == (".engine", ".plan", ".onnx")


def _no_tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is None


@pytest.mark.skipif(not _no_tensorrt(), reason="tensorrt is installed here")
def test_unavailable_without_tensorrt(sparse_onnx):
    reason = TensorRTBackend.why_unavailable()
    assert reason and "pip install tensorrt" in reason and "\n" not in reason
    with pytest.raises(BackendUnavailable) as info:
        get_backend("tensorrt").compile(sparse_onnx)
    msg = str(info.value)
    assert "\n" not in msg and "tensorrt" in msg and msg.startswith("backend 'tensorrt' is unavailable")


@pytest.mark.skipif(not _no_tensorrt(), reason="tensorrt is installed here")
def test_unavailable_without_cuda(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    fake = types.ModuleType("tensorrt")
    fake.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    fake.__version__ = "10.3.0"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    reason = TensorRTBackend.why_unavailable()
    assert "no CUDA device" in reason
    fake.__version__ = "8.5.2"
    assert "too old" in TensorRTBackend.why_unavailable()


# -- on a real GPU with TensorRT ---------------------------------------------------------------------


def _need_tensorrt():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install tensorrt from NVIDIA's index)")
    reason = TensorRTBackend.why_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_build_run_and_report_on_gpu(tmp_path):
    _need_tensorrt()
    k, n = 1024, 1024
    w = two_four((k, n), axis=0)
    path = tmp_path / "fc.onnx"
    onnx.save(mlp_model(w, dims=("batch", k)), path)
    backend = get_backend("tensorrt", BackendOptions(device="cuda", precision="fp16",
                                                     extra={"timing_cache": str(tmp_path / "t.cache")})).compile(path)
    assert backend.plan.sparse_weights and "SPARSE_WEIGHTS" in backend.plan.flags
    for side in sidecar_paths(path).values():
        assert side.is_file()
    x = RNG.standard_normal((8, k)).astype(np.float32)
    (y,) = backend.run({"x": x})
    np.testing.assert_allclose(y, x @ w, rtol=2e-2, atol=2e-1)  # fp16 engine
    step = backend.runner({"x": x})
    step()
    report = backend.build_report()
    assert report["build_log_found"] and "fc" in " ".join(report["eligible"])  # TRT agrees the layer is 2:4
    layers = backend.inspect()
    assert layers and all(layer.sparse is not None for layer in layers)
    reloaded = get_backend("tensorrt").compile(sidecar_paths(path)["engine"])
    np.testing.assert_allclose(reloaded.run({"x": x})[0], y, rtol=1e-3, atol=1e-3)
    assert reloaded.build_report()["picked"] == report["picked"]
