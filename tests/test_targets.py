"""Target = device profile + runtime + that runtime's capabilities: built once, typed, passed everywhere."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import edgeprune as ep
from conftest import one_error_line
from edgeprune.backends import DEFAULT, capabilities, measurable_here
from edgeprune.errors import ConfigError

TWO_RUNTIMES = """
name: two-runtimes
vendor: test
kind: cpu
description: a device whose two runtimes want different channel multiples
runtimes: [{name: onnxruntime, devices: [cpu]}, {name: openvino, devices: [cpu]}]
precisions: [fp32]
patterns:
  onnxruntime: {channel: {multiple: 8, source: test, confidence: D}}
  openvino: {channel: {multiple: 32, source: test, confidence: D}}
"""


def test_target_is_profile_runtime_and_capabilities():
    t = ep.target("jetson-orin-nano", runtime="trt")  # an alias is made canonical
    assert (t.name, t.runtime) == ("jetson-orin-nano", "tensorrt")
    assert t.capabilities == capabilities("tensorrt") and t.capabilities.export_format == "TensorRT engine"
    assert t.channel_multiple("fp16") == t.profile.channel_multiple("tensorrt", "fp16")
    assert not t.on_host and not t.measurable  # a Jetson's plans are estimated here, never timed
    assert ep.target(t) is t and ep.target(t, runtime="onnxruntime").runtime == "onnxruntime"


def test_host_target_times_on_a_runtime_this_machine_can_time():
    host = ep.Target.host()
    assert host.on_host and host.runtime in measurable_here() and host.measurable
    assert ep.Target.host("openvino").runtime == "openvino"
    assert ep.target("jetson-orin-nano").runtime == DEFAULT  # TensorRT is not installed here: planned for the default


def test_a_runtime_without_a_backend_is_refused_listing_the_known_ones():
    with pytest.raises(ConfigError, match="runtime 'tflite' has no backend here") as err:
        ep.target("graviton3", runtime="tflite")
    assert "onnxruntime" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="must be an edgeprune Target"):
        ep.StructuredConfig(target=ep.load_profile("xeon-spr"))


def _pruned_width(tmp_path, *args) -> int:
    from edgeprune.cli import main

    (tmp_path / "dev.yaml").write_text(TWO_RUNTIMES)
    out = tmp_path / f"m{len(args)}.pt2"
    spec = f"{__file__.rsplit('/', 1)[0]}/models_for_cli.py:mlp_with_inputs"
    result = CliRunner().invoke(main, ["prune", spec, "--ratio", "0.4", "--profile", str(tmp_path / "dev.yaml"),
                                       *args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    program = torch.export.load(str(out))  # .pt2 is a zip of tensors and a graph: no pickle
    weights = [v for k, v in program.state_dict.items() if k.endswith("weight") and v.ndim == 2]
    return int(weights[0].shape[0])


def test_prune_aligns_widths_for_the_runtime_the_user_runs(tmp_path):
    # 40% of 64 units removed leaves 38.4: ONNX Runtime's multiple 8 keeps 40, OpenVINO's 32 keeps 32
    assert _pruned_width(tmp_path) == 40  # no --runtime: the device's first runtime
    assert _pruned_width(tmp_path, "--runtime", "openvino") == 32  # the runtime named: its multiple


def test_runtime_without_profile_is_one_line(tmp_path):
    from edgeprune.cli import main

    result = CliRunner().invoke(main, ["prune", "x", "--runtime", "openvino", "-o", str(tmp_path / "m.pt2")])
    assert result.exit_code == 2 and "--runtime openvino needs --profile" in one_error_line(result)


def test_precisions_are_a_registry_without_fallback():
    from edgeprune import precisions
    from edgeprune.targets.types import PRECISIONS

    assert precisions.canonical("float16") == "fp16" and precisions.bytes_per_element("int8") == 1
    assert precisions.bytes_per_element("int4") == 0.5 and PRECISIONS == precisions.names()
    with pytest.raises(ConfigError, match="unknown precision 'fp7'") as err:
        precisions.bytes_per_element("fp7")  # never the old silent 4 bytes
    assert "int8" in str(err.value)
    from edgeprune.optimizer.planner import choose_pattern

    gpu = ep.target("a100-sxm", runtime="tensorrt")
    assert choose_pattern(gpu, "bf16")[0] == "2:4" and choose_pattern(gpu, "fp32")[0] == "dense"


def test_timing_primitives_take_a_target_and_refuse_one_that_is_not_here():
    from edgeprune.measurement.latency import LayerShape, measure_layers

    with pytest.raises(ConfigError, match="cannot time for tensorrt on jetson-orin-nano on this machine"):
        measure_layers([LayerShape(1, 64, 64)], ep.target("jetson-orin-nano", runtime="tensorrt"))
