"""PyTorch backend: eager or torch.compile, CPU or CUDA. The numerical reference for every other runtime."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgeprune.backends.base import (GPU_EVIDENCE, GPU_PAYS_FROM, Backend, Capabilities, HostFacts, HostView, LayerInfo,
                                     SparseLayer, TensorSpec, nvidia_24_default, nvidia_24_rule)

if TYPE_CHECKING:  # a type only: backends never import targets (targets imports backends)
    from edgeprune.targets.schema import DeviceProfile

# torch.sparse semi-structured minimum/multiple (rows, cols) of the dense weight, per dtype
SEMI_SHAPE = {"float16": (32, 64), "bfloat16": (32, 64), "int8": (32, 128), "float32": (32, 32)}
from edgeprune.errors import BackendUnavailable, ConfigError


class TorchBackend(Backend):
    name = "torch"
    package = "torch"
    display = "PyTorch"
    aliases = ("pytorch", "torch-cuda")
    artifact_suffixes = (".pt2",)
    capabilities = Capabilities(
        export_format="torch.export", artifact_suffix=".pt2",
        kernel_proof="torch.profiler op names (a semi-structured 2:4 matmul shows as its cuSPARSELt kernel)",
        precisions={"fp32": (), "fp16": ("sm_53",), "bf16": ("sm_80",)},
        patterns={"channel": "dense kernels on smaller shapes",
                  "nm": "2:4 only: to_sparse_semi_structured on Linear weights, sm_80+, pays only on large GEMMs"},
        devices=("cpu", "gpu"))

    sparse_name = "torch-cuda"  # its sparse path is CUDA's semi-structured 2:4, reported as such

    @classmethod
    def sparse_constraints(cls) -> tuple[str, ...]:
        return ("2:4 only, Linear weights", "fp16/bf16 (rows % 32, cols % 64) or int8 (rows % 32, cols % 128)",
                "compute capability >= 8.0", "pays only for large GEMMs (" + GPU_EVIDENCE + ")")

    @classmethod
    def sparse_default(cls, layer: SparseLayer) -> tuple[str, str]:
        return nvidia_24_default(layer)

    @classmethod
    def sparse_failures(cls, layer: SparseLayer, host: HostFacts, verdict: str) -> list[str]:
        fails = []
        if host.cuda is None:
            fails.append("no CUDA GPU on this host")
        elif host.cuda_capability and host.cuda_capability < (8, 0):
            fails.append(f"{host.cuda} has compute capability {host.cuda_capability} < 8.0")
        if layer.op != "Linear":
            fails.append(f"{layer.op}: to_sparse_semi_structured swaps Linear weights only")
        rows, cols = SEMI_SHAPE.get(layer.precision if layer.precision != "fp32" else "float16", (32, 64))
        if layer.out_ch % rows or layer.k % cols:
            fails.append(f"weight {layer.out_ch}x{layer.k} not a multiple of {rows}x{cols}")
        if verdict == "yes" and min(layer.k, layer.out_ch) < GPU_PAYS_FROM:
            fails.append(f"K={layer.k} too small for a sparse kernel to pay ({GPU_EVIDENCE})")
        return fails

    @classmethod
    def gpu_build(cls, version: str, dist: str) -> bool:
        return "+cpu" not in version

    @classmethod
    def probe_patterns(cls, host: HostView) -> dict[str, Any]:
        return nvidia_24_rule(host, "torch semi-structured 2:4 (cuSPARSELt)")

    @classmethod
    def why_unavailable(cls) -> str | None:
        return None  # torch is a core dependency

    def _load(self, model_path: Any, profile: DeviceProfile | None) -> None:
        import torch

        from edgeprune.models import LoadedModel, load_model

        loaded = model_path if isinstance(model_path, LoadedModel) else load_model(model_path)
        if loaded.module is None:
            raise ConfigError(f"the torch backend cannot run {loaded.source} (no torch module)",
                              hint="benchmark .onnx files with --backend onnxruntime or openvino")
        device = "cuda" if self.options.device in ("cuda", "gpu") else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("the torch backend was asked for CUDA but no CUDA device is visible",
                                     hint="use --device cpu or run on a GPU machine")
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        self.device = torch.device(device)
        self.loaded = loaded
        module = loaded.module
        param = next(module.parameters(), None)
        if param is not None and param.device != self.device:
            import copy

            # Never move the caller's module: another session (or the user) may still run it where it is.
            module = copy.deepcopy(module).to(self.device)
        module = module.eval()
        self.model = torch.compile(module) if self.options.torch_compile else module

    def input_specs(self) -> list[TensorSpec]:
        return [
            TensorSpec(n, tuple(t.shape), str(t.dtype).replace("torch.", ""))
            for n, t in zip(self.loaded.input_names, self.loaded.example_inputs)
        ]

    def _tensors(self, inputs: Mapping[str, np.ndarray]):
        import torch

        return [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device) for n in self.loaded.input_names]

    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(*self._tensors(inputs))
        from edgeprune.outputs import flatten_outputs  # imports torch: only once a torch model runs

        return [t.detach().float().cpu().numpy() if t.dtype.is_floating_point else t.cpu().numpy() for t in flatten_outputs(out)]

    def runner(self, inputs: Mapping[str, np.ndarray]):
        import torch

        tensors, model = self._tensors(inputs), self.model
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

        def call():
            with torch.inference_mode():
                model(*tensors)
            sync()

        return call

    def inspect(self) -> list[LayerInfo]:
        return [LayerInfo(name=n, op_type=type(m).__name__) for n, m in self.loaded.module.named_modules() if n and not list(m.children())]
