"""Model specs and input specs resolve, or fail with one clear ModelLoadError/ConfigError."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeprune.errors import ConfigError, ModelLoadError
from edgeprune.models import InputSpec, load_model, parse_input_specs

HERE = Path(__file__).parent


def test_parse_input_specs():
    specs = parse_input_specs(["1x3x224x224", "input_ids=1x128:int64", "2x4:fp16"])
    assert specs[0] == InputSpec(None, (1, 3, 224, 224), "float32")
    assert specs[1] == InputSpec("input_ids", (1, 128), "int64")
    assert specs[2].dtype == "fp16" and specs[2].make().dtype == torch.float16


@pytest.mark.parametrize("bad, match", [("1x3xax4", "bad input shape"), ("1x0x3", "zero dimension"),
                                        ("1x3:complex", "bad dtype"), ("", "bad input shape")])
def test_bad_input_specs(bad, match):
    with pytest.raises(ConfigError, match=match):
        parse_input_specs([bad])


def test_factory_from_file_with_example_inputs():
    loaded = load_model(f"{HERE}/models_for_cli.py:mlp_with_inputs")
    assert loaded.kind == "factory" and loaded.example_inputs[0].shape == (4, 32)
    assert loaded.input_names == ["x"]  # taken from forward's signature


def test_factory_without_inputs_needs_input_shape():
    with pytest.raises(ModelLoadError, match="--input-shape"):
        load_model(f"{HERE}/models_for_cli.py:cnn_only")
    loaded = load_model(f"{HERE}/models_for_cli.py:cnn_only", ["image=1x3x16x16"])
    assert loaded.input_names == ["image"] and loaded.example_inputs[0].shape == (1, 3, 16, 16)


def test_factory_from_package_module():
    loaded = load_model("torch.nn:Identity", ["1x4"])
    assert isinstance(loaded.module, torch.nn.Identity)


@pytest.mark.parametrize("spec, match", [
    ("models_for_cli.py:not_a_model", "not a torch.nn.Module"),
    ("models_for_cli.py:broken", "factory exploded"),
    ("models_for_cli.py:missing", "not found or not callable"),
    ("no_such_file.py:f", "model file not found"),
    ("no.such.module:f", "cannot import module"),
    ("nothing-here", "cannot resolve model spec"),
    ("missing.onnx", "ONNX file not found"),
    ("missing.pt2", ".pt2 file not found"),
])
def test_bad_model_specs(spec, match):
    spec = f"{HERE}/{spec}" if spec.startswith(("models_for_cli", "no_such")) else spec
    with pytest.raises(ModelLoadError, match=match):
        load_model(spec)


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="without config.json"):
        load_model(str(tmp_path))


def test_pt2_round_trip(tmp_path):
    from conftest import make_cnn

    model, inputs = make_cnn()
    program = torch.export.export(model, inputs)
    torch.export.save(program, tmp_path / "cnn.pt2")
    loaded = load_model(str(tmp_path / "cnn.pt2"))
    assert loaded.kind == "pt2" and loaded.example_inputs[0].shape == inputs[0].shape
    assert torch.allclose(loaded.module(*inputs), model(*inputs), atol=1e-6)


def test_hf_folder_defaults_batch1_seq128(minilm):
    assert minilm.kind == "hf"
    assert minilm.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(t.shape == (1, 128) and t.dtype == torch.int64 for t in minilm.example_inputs)
    out = minilm.module(*minilm.example_inputs)
    assert out.shape == (1, 128, 384)
