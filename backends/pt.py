"""PyTorch backend: eager or torch.compile, CPU or CUDA. The numerical reference for every other runtime."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from edgeprune.backends.base import Backend, LayerInfo, TensorSpec
from edgeprune.outputs import flatten_outputs
from edgeprune.errors import BackendUnavailable, ConfigError


class TorchBackend(Backend):
    name = "torch"
    package = "torch"
    artifact_suffixes = (".pt2",)

    @classmethod
    def why_unavailable(cls) -> str | None:
        return None  # torch is a core dependency

    def _load(self, model_path: Any, profile: Any) -> None:
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
