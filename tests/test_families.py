"""One fast case per family the coverage benchmark found hard: a segmentation head (HF SegFormer, whose Mix-FFN has a
depthwise conv between its two Linears), a YOLO-style C2f block (chunk halves feeding a residual: Torch-Pruning
mis-couples it, so it must be left whole and the rest pruned), and HF attention naming beyond BERT/ViT/LLaMA
(DistilBERT *_lin, OPT out_proj, ALBERT's in-module dense). Each asserts the output shape, MACs lower and the
export within 1e-4 of PyTorch."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import edgeprune as ep
from edgeprune.errors import PruningError
from edgeprune.models import HFModelWrapper
from edgeprune.pruning import StructuredConfig

transformers = pytest.importorskip("transformers")


def _check(model, pruned, inputs, tmp_path, macs_below=0.9):
    with torch.no_grad():
        assert pruned(*inputs).shape == model(*inputs).shape
    assert ep.count(pruned, inputs).macs < macs_below * ep.count(model, inputs).macs
    assert ep.export(pruned, inputs, tmp_path / "m.onnx").max_abs_diff <= 1e-4


def test_segformer_semantic_segmentation_prunes_heads_and_mix_ffn_with_its_depthwise_conv(tmp_path):
    cfg = transformers.SegformerConfig(hidden_sizes=[16, 32, 64, 128], num_attention_heads=[1, 2, 4, 8], depths=[1, 1, 1, 1],
                                       decoder_hidden_size=32, num_labels=3, attn_implementation="eager")
    torch.manual_seed(0)
    model = HFModelWrapper(transformers.SegformerForSemanticSegmentation(cfg).eval(), ["pixel_values"]).eval()
    x = (torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)),)
    pruned = ep.prune(model, x, StructuredConfig(ratio=0.5))
    ffn = pruned.model.segformer.stages[3].blocks[0].mlp                # hidden 4 x 128 = 512 channels dense
    assert ffn.fc1.out_features == ffn.dwconv.dwconv.out_channels == ffn.dwconv.dwconv.groups == 256
    assert pruned.model.segformer.stages[0].blocks[0].attention.q_proj.out_features == 16  # 1 head at 50%: kept
    assert pruned(*x).shape == (1, 3, 16, 16)
    _check(model, pruned, x, tmp_path)


class C2f(nn.Module):
    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.cv1 = nn.Conv2d(c, c, 1)
        self.m = nn.Sequential(nn.Conv2d(c // 2, c // 2, 3, padding=1), nn.ReLU())
        self.cv2 = nn.Conv2d(c + c // 2, c, 1)
        self.head = nn.Conv2d(c, 4, 1)

    def forward(self, x):
        a, b = self.cv1(torch.relu(self.stem(x))).chunk(2, 1)
        return self.head(torch.relu(self.cv2(torch.cat([a, b, b + self.m(b)], 1))))


def test_yolo_c2f_group_torch_pruning_miscouples_is_left_whole_and_the_rest_pruned(tmp_path):
    torch.manual_seed(0)
    model, x = C2f().eval(), (torch.randn(1, 3, 16, 16),)
    lines = []
    pruned = ep.prune(model, x, StructuredConfig(ratio=0.5), progress=lines.append)
    left = [ln for ln in lines if ln.startswith("left unpruned")]
    assert left and all("breaks the forward pass" in ln for ln in left), lines
    assert pruned.stem.out_channels == 8 and pruned.cv2.out_channels == 8  # the groups that do not break are pruned
    _check(model, pruned, x, tmp_path)
    with pytest.raises(PruningError, match="breaks the forward pass"):
        ep.prune(model, x, StructuredConfig(ratio=0.5, strict=True))


TEXT = dict(vocab_size=200, max_position_embeddings=64)


@pytest.mark.parametrize("cls, cfg, attn", [
    ("DistilBertModel", transformers.DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=128, **TEXT),
     lambda m: m.transformer.layer[0].attention),
    ("OPTForCausalLM", transformers.OPTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
                                              word_embed_proj_dim=64, **TEXT), lambda m: m.model.decoder.layers[0].self_attn),
    ("AlbertModel", transformers.AlbertConfig(embedding_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                              intermediate_size=128, **TEXT),
     lambda m: m.encoder.albert_layer_groups[0].albert_layers[0].attention),
], ids=["distilbert", "opt", "albert"])
def test_hf_attention_naming_families_lose_half_their_heads(cls, cfg, attn, tmp_path):
    cfg._attn_implementation = "eager"
    cfg.use_cache = False
    torch.manual_seed(0)
    hf = getattr(transformers, cls)(cfg).eval()
    model = HFModelWrapper(hf, ["input_ids", "attention_mask"]).eval()
    ids = torch.randint(5, 200, (1, 16), generator=torch.Generator().manual_seed(1))
    x = (ids, torch.ones_like(ids))
    pruned = ep.prune(model, x, StructuredConfig(ratio=0.5))
    heads = next(getattr(attn(pruned.model), a) for a in ("n_heads", "num_heads", "num_attention_heads")
                 if hasattr(attn(pruned.model), a))
    assert heads == 2
    _check(model, pruned, x, tmp_path)
