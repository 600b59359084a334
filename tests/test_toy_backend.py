"""Adding a runtime is one backend class plus its profile data: a toy backend registered here (onnx's own
reference evaluator, a real second ONNX runtime) flows through `optimize`, timing and the output folder with no
other edit to edgeprune."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.backends import (Backend, Capabilities, TensorSpec, backend_classes, measurable_here, register_backend,
                                unregister_backend)

HOST_WITH_TOY = """
name: host
vendor: test
kind: cpu
description: this machine, running the toy runtime
runtimes: [{name: toyrt, devices: [cpu]}]
precisions: [fp32]
patterns:
  toyrt: {channel: {multiple: 16, source: test, confidence: D}}
"""


class ToyBackend(Backend):
    """onnx.reference.ReferenceEvaluator: every op in Python/numpy, so it is slow but exact."""

    name = "toyrt"
    package = "onnx"
    display = "ONNX reference evaluator"
    capabilities = Capabilities(export_format="ONNX", artifact_suffix=".onnx", times_on_cpu=True,
                                kernel_proof="none: numpy reference ops")

    @classmethod
    def why_unavailable(cls) -> str | None:
        return None

    def _load(self, model_path, profile) -> None:
        import onnx
        from onnx.reference import ReferenceEvaluator

        self.proto = onnx.load(os.fspath(model_path))
        self.session = ReferenceEvaluator(self.proto)

    def input_specs(self) -> list[TensorSpec]:
        from onnx.helper import tensor_dtype_to_np_dtype

        out = []
        for i in self.proto.graph.input:
            t = i.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim)
            out.append(TensorSpec(i.name, dims, np.dtype(tensor_dtype_to_np_dtype(t.elem_type)).name))
        return out

    def run(self, inputs):
        return self.session.run(None, dict(inputs))


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "cache"))
    register_backend(ToyBackend)
    yield ToyBackend
    unregister_backend(ToyBackend.name)


def test_a_registered_backend_flows_through_optimize(toy, tmp_path):
    from edgeprune.optimizer import OptimizeConfig, optimize
    from edgeprune.recover import RecoverConfig
    from edgeprune.targets.profiles import profile_from_text
    from edgeprune.targets.target import Target

    assert toy in backend_classes() and "toyrt" in measurable_here()
    target = Target(profile_from_text(HOST_WITH_TOY, "host.yaml"), "toyrt")
    assert target.measurable and target.channel_multiple() == 16
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 64)).eval()
    inputs = (torch.randn(64, 64),)
    calib = [(torch.randn(64, 64, generator=torch.Generator().manual_seed(i)),) for i in range(4)]
    config = OptimizeConfig(profile=target, speedup=1.2, threads=1, iters=10, rounds=3, max_rounds=1,
                            max_drop=100.0, recover=RecoverConfig(mode="off"))
    result = optimize(model, inputs, config, calib=calib)
    assert result.runtime == "toyrt" and result.plan.runtime == "toyrt" and result.plan.profile == "host"
    assert {r.backend for r in result.bench} == {"toyrt"}  # dense and optimized were timed on the toy runtime
    # timed there (a Python runtime's fixed cost makes the ratio noisy, so only that it was measured is asserted)
    assert result.speedup is not None and result.speedup["median"] > 0 and result.optimized_ms > 0 and result.dense_ms > 0
    kept = [g["keep"] for g in result.plan.groups]
    assert kept and all(k % 16 == 0 for k in kept) and min(kept) < 1024  # pruned, on the toy's channel multiple
    assert result.counts["optimized"]["macs"] < result.counts["dense"]["macs"]
    out = result.save(tmp_path / "out")
    assert (out / "model.onnx").is_file() and (out / "report.json").is_file()
