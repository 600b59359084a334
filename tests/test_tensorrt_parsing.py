"""TensorRT build-log and engine-inspector parsing: how edgeprune proves which layers ran a sparse kernel.
Pure text parsing, no GPU or tensorrt needed (edgeprune.backends.trt_logic)."""
from __future__ import annotations

import json

from edgeprune.backends.trt_logic import parse_inspector_json, parse_sparsity_log

# Modelled on the TensorRT Developer Guide, "Structured Sparsity" (8.x; same lines in 10.x): trtexec prints the
# "[date] [I] [TRT]" prefix; our ILogger stores "[I] <msg>", which the first two lines imitate.
BUILD_LOG = """\
[I] [MemUsageChange] Init CUDA: CPU +2, GPU +0, now: CPU 19, GPU 1082 (MiB)
[I] Local timing cache in use. Profiling results in this builder pass will not be stored.
[03/23/2021-00:14:05] [I] [TRT] Detected 1 inputs and 1 output network tensors.
[03/23/2021-00:14:05] [I] [TRT] (Sparsity) Layers eligible for sparse math: conv1, conv2 + relu2, /fc/MatMul
[03/23/2021-00:14:05] [I] [TRT] (Sparsity) TRT inference plan picked sparse implementation for layers: conv2 + relu2, /fc/MatMul
[03/23/2021-00:14:05] [I] [TRT] Total Activation Memory: 1048576 bytes
"""

# Detailed layer: the Developer Guide's "Engine Inspector" example (kDETAILED), trimmed. Names-only: the
# {"Layers": [...], "Bindings": [...]} form trtexec --exportLayerInfo writes under LAYER_NAMES_ONLY
# (NVIDIA/TensorRT issue #4020). The sparse tactic name below is made up: "sparse" in tactic names is unconfirmed.
INSPECTOR_DETAILED = json.dumps({"Layers": [
    {"Name": "conv1", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "input", "Dimensions": [16, 512, 28, 28], "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}],
     "Outputs": [{"Name": "c1", "Dimensions": [16, 256, 28, 28], "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}],
     "ParameterType": "Convolution", "Kernel": [1, 1], "Groups": 1, "AllowSparse": 1,
     "TacticName": "sm80_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32_nchw_vect_c_32kcrs_vect_c_32_nchw_vect_c_32_tilesize256x128x64_stage4_warpsize4x2x1_g1_tensor16x8x32_simple_t1r1s1_epifadd",
     "TacticValue": "0x11bde0e1d9f2f35d"},
    {"Name": "conv2 + relu2", "LayerType": "CaskConvolution", "ParameterType": "Convolution", "AllowSparse": 1,
     "TacticName": "sm80_xmma_fprop_implicit_gemm_f16f16_f16f32_nhwckrsc_nhwc_tilesize128x128x64_stage3", "TacticValue": "0x1"},
    {"Name": "/fc/MatMul + /fc/Add", "LayerType": "CaskGemmMatrixMultiply", "AllowSparse": 1,
     "TacticName": "sm80_xmma_gemm_f16f16_f16f32_f32_nn_n_tilesize64x64x64_stage4", "TacticValue": "0x2"},
    {"Name": "head", "LayerType": "CaskGemmMatrixMultiply", "TacticName": "sm86_xmma_sparse_gemm_f16f16_f16f32", "TacticValue": "0x3"},
    {"Name": "Reformatting CopyNode for Output Tensor 0 to head", "LayerType": "Reformat", "TacticName": "", "TacticValue": "0x0"},
], "Bindings": ["input", "output"]})
INSPECTOR_NAMES_ONLY = json.dumps({"Layers": [
    "Reformatting CopyNode for Input Tensor 0 to resnetv15_conv0_fwd + resnetv15_batchnorm0_fwd + resnetv15_relu0_fwd",
    "resnetv15_conv0_fwd + resnetv15_batchnorm0_fwd + resnetv15_relu0_fwd",
    "resnetv15_stage1_conv0_fwd + resnetv15_stage1_batchnorm0_fwd + resnetv15_stage1_relu0_fwd",
], "Bindings": ["data", "resnetv15_dense0_fwd"]})


def test_parse_sparsity_log():
    eligible, picked = parse_sparsity_log(BUILD_LOG.splitlines())
    assert eligible == ["conv1", "conv2 + relu2", "/fc/MatMul"]
    assert picked == ["conv2 + relu2", "/fc/MatMul"]
    assert parse_sparsity_log([BUILD_LOG, BUILD_LOG]) == (eligible, picked)  # one multi-line chunk, repeated
    assert parse_sparsity_log(["[I] (Sparsity) Layers eligible for sparse math: a",
                               "[I] (Sparsity) TRT inference plan picked sparse implementation for layers: "]) == (["a"], [])
    assert parse_sparsity_log(["[I] nothing about sparsity"]) == ([], [])


def test_parse_inspector_detailed():
    _, picked = parse_sparsity_log(BUILD_LOG.splitlines())
    layers = parse_inspector_json(INSPECTOR_DETAILED, picked)
    by_name = {layer.name: layer for layer in layers}
    assert [layer.name for layer in layers][:2] == ["conv1", "conv2 + relu2"]
    assert by_name["conv1"].op_type == "CaskConvolution" and by_name["conv1"].exec_type.startswith("sm80_xmma_fprop")
    assert by_name["conv1"].sparse is False  # eligible (AllowSparse) but not picked: ran dense
    assert by_name["conv1"].extra["AllowSparse"] == 1 and "Int8" in by_name["conv1"].extra["inputs"][0]
    assert by_name["conv2 + relu2"].sparse is True  # in the picked list
    assert by_name["/fc/MatMul + /fc/Add"].sparse is True  # fused: a part of the name was picked
    assert by_name["head"].sparse is True  # "sparse" in the tactic name
    assert by_name["Reformatting CopyNode for Output Tensor 0 to head"].sparse is False
    no_log = {layer.name: layer.sparse for layer in parse_inspector_json(INSPECTOR_DETAILED)}
    assert no_log["conv1"] is None and no_log["head"] is True  # unknown without a build log


def test_parse_inspector_names_only():
    layers = parse_inspector_json(INSPECTOR_NAMES_ONLY, picked=["resnetv15_conv0_fwd"])
    assert len(layers) == 3 and all(layer.op_type == "" and layer.exec_type == "" for layer in layers)
    assert [layer.sparse for layer in layers] == [False, True, False]  # the reformat layer before the conv is not it
    assert parse_inspector_json(json.loads(INSPECTOR_NAMES_ONLY))[0].sparse is None
    assert parse_inspector_json('{"Layers": [], "Bindings": []}') == []
