"""Factories for the sweep tests, loaded through the `file.py:factory` model spec, and the issue's minimal file."""
import torch
from torch import nn

# The minimal SWEEP.yaml of issue #23, which must work as written (m.py:cnn next to it)
MINIMAL = """models:
  - {name: cnn, model: "m.py:cnn", input_shape: ["1x3x32x32"]}
targets:
  - {name: host-ort, profile: host, runtime: onnxruntime}
  - {name: host-ov, profile: host, runtime: openvino}
budgets: {speedup: [1.3, 1.5]}
precisions: [fp32]
"""


def cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1),
                          nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()
    return model, (torch.randn(1, 3, 32, 32),)


def encoder():
    """A 2-layer, 4-head BERT with random weights (transformers config), positional inputs (ids, mask)."""
    from transformers import BertConfig, BertModel

    from edgeprune.models import HFModelWrapper

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024,
                     max_position_embeddings=64, attn_implementation="eager")
    model = HFModelWrapper(BertModel(cfg).eval(), ["input_ids", "attention_mask"]).eval()
    return model, (torch.randint(1, 64, (1, 64)), torch.ones(1, 64, dtype=torch.long))


def broken():
    raise RuntimeError("factory exploded")
