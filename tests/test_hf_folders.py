"""Hugging Face folders as they come (#19): the class named in config.json's `architectures` is loaded, so task
heads survive (a causal LM returns vocabulary logits, a classifier its labels, a segmenter its masks), the example
inputs follow the model's main input, a folder holding only config.json is built from it, and each prunes and
exports within 1e-4."""
from __future__ import annotations

import pytest
import torch

import edgeprune as ep
from edgeprune.models import load_model
from edgeprune.pruning import StructuredConfig

transformers = pytest.importorskip("transformers")

TEXT = dict(vocab_size=300, max_position_embeddings=64)
CASES = {
    "gpt2-lm": (lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                                                              vocab_size=300)), (1, 16, 300)),
    "bert-cls": (lambda: transformers.BertForSequenceClassification(transformers.BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_labels=3, **TEXT)), (1, 3)),
    "vit-cls": (lambda: transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8,
        num_labels=5)), (1, 5)),
    "segformer-seg": (lambda: transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(
        hidden_sizes=[16, 32, 64, 128], num_attention_heads=[1, 2, 4, 8], depths=[1, 1, 1, 1], decoder_hidden_size=32,
        num_labels=3, image_size=64)), (1, 3, 16, 16)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_folder_keeps_its_task_head_and_prunes_and_exports(case, tmp_path):
    build, shape = CASES[case]
    torch.manual_seed(0)
    build().save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m", seq_len=16)
    assert type(loaded.module.model).__name__ == loaded.config["architectures"][0]
    with torch.no_grad():
        out = loaded.module(*loaded.example_inputs)
    assert tuple(out.shape) == shape
    pruned = ep.prune(loaded.module, loaded.example_inputs, StructuredConfig(ratio=0.5))
    assert ep.count(pruned, loaded.example_inputs).macs < 0.9 * ep.count(loaded.module, loaded.example_inputs).macs
    assert ep.export(pruned, loaded.example_inputs, tmp_path / "p.onnx").max_abs_diff <= 1e-4


def test_config_only_folder_is_built_from_the_config(tmp_path):
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=300, max_position_embeddings=64,
                                   architectures=["LlamaForCausalLM"])
    (tmp_path / "cfg").mkdir()
    cfg.save_pretrained(tmp_path / "cfg")
    assert sorted(p.name for p in (tmp_path / "cfg").iterdir()) == ["config.json"]
    loaded = load_model(tmp_path / "cfg", seq_len=8)
    assert type(loaded.module.model).__name__ == "LlamaForCausalLM"
    ids = loaded.example_inputs[0]
    assert ids.shape == (1, 8) and int(ids.max()) < 300   # default ids fold into the small vocabulary
    with torch.no_grad():
        assert loaded.module(*loaded.example_inputs).shape == (1, 8, 300)


def test_given_input_shapes_fold_ids_into_a_small_vocabulary_too(tmp_path):
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=300, max_position_embeddings=64, architectures=["BertModel"])
    (tmp_path / "cfg").mkdir()
    cfg.save_pretrained(tmp_path / "cfg")
    loaded = load_model(tmp_path / "cfg", ["input_ids=2x12:int64", "attention_mask=2x12:int64"])
    assert loaded.example_inputs[0].shape == (2, 12) and int(loaded.example_inputs[0].max()) < 300
    assert int(loaded.example_inputs[1].min()) == 1                        # a mask stays all ones
