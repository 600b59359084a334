"""One fast case per family the coverage benchmark found hard, plus channel shuffle and squeeze-excitation: a segmentation head (HF SegFormer, whose Mix-FFN has a
depthwise conv between its two Linears), a YOLO-style C2f block (chunk halves feeding a residual: Torch-Pruning
mis-couples it, probe.py measures it), and HF attention naming beyond BERT/ViT/LLaMA
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


def _prune_half(model, inputs, **kw):
    """(pruned model, every progress line, the "left unpruned" lines) of pruning half of `model`'s units."""
    lines = []
    pruned = ep.prune(model, inputs, StructuredConfig(ratio=0.5, **kw), progress=lines.append)
    return pruned, lines, [ln for ln in lines if ln.startswith("left unpruned")]


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


def test_yolo_c2f_chunk_with_a_residual_writer_is_measured_and_pruned(tmp_path):
    # Torch-Pruning couples cv1's chunk halves to the wrong readers and misses m.0 as a reader; probe.py measures
    # where each channel goes: cv1's unit j feeds cv2 at j (and j + 8 through the residual) and m.0 at j - 8
    torch.manual_seed(0)
    model, x = C2f().eval(), (torch.randn(1, 3, 16, 16),)
    pruned, lines, left = _prune_half(model, x)
    assert not left, lines
    assert pruned.cv1.out_channels == 8 and pruned.m[0].in_channels == pruned.m[0].out_channels == 4
    assert pruned.cv2.in_channels == 12 and pruned.stem.out_channels == pruned.cv2.out_channels == 8
    _check(model, pruned, x, tmp_path, macs_below=0.4)


def test_the_probed_c2f_group_removes_exactly_what_masking_removes():
    import copy

    from edgeprune.pruning.graph import channel_groups
    from edgeprune.pruning.rewire import masked_outputs

    torch.manual_seed(0)
    model, x = C2f().eval(), (torch.randn(2, 3, 16, 16),)
    g = next(g for g in channel_groups(model, x, lambda n: False) if g.name == "cv1")
    assert (g.n_units, g.uniform) == (16, 2)                            # chunk(2): the same slots in both halves
    assert {c.name: c.units[9] for c in g.consumers} == {"m.0": [1], "cv2": [9, 17]}
    assert {p.name: p.rows[9] for p in g.producers} == {"cv1": [9], "m.0": [1]}
    units = [1, 4, 6, 9, 12, 14]                                        # slots 1, 4, 6 of each half
    want = masked_outputs(model, x, g, units)[0]
    trial = copy.deepcopy(model)
    next(t for t in channel_groups(trial, x, lambda n: False) if t.name == "cv1").remove(units)
    with torch.no_grad():
        assert float((trial(*x) - want).abs().max()) < 1e-5 < float((model(*x) - want).abs().max())


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


def _shuffle(x, g):
    b, c, h, w = x.shape
    return x.view(b, g, c // g, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNet unit: grouped 1x1 -> channel shuffle -> depthwise 3x3 -> grouped 1x1, plus the residual."""

    def __init__(self, c=32, g=4):
        super().__init__()
        self.g = g
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.gc1 = nn.Conv2d(c, c, 1, groups=g)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.gc2 = nn.Conv2d(c, c, 1, groups=g)
        self.head = nn.Conv2d(c, 5, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = self.gc2(self.dw(_shuffle(torch.relu(self.gc1(x)), self.g)))
        return self.head(torch.relu(x + y))


def test_channel_shuffle_group_is_measured_and_pruned_in_blocks_both_grouped_convs_accept(tmp_path):
    # Torch-Pruning couples gc1's output channel j with dw's channel j across the shuffle: pruned that way the model
    # runs and exports but is wired differently from dense (max diff ~0.09 against masking those channels).
    # probe.py maps j to the shuffled position (j % 8) * 4 + j // 8 and removes the same slot of each of 16 blocks
    # of 2 channels: gc1's 4 groups and gc2's 4 input groups each keep equal, consistently ordered widths.
    from edgeprune.pruning.graph import channel_groups

    torch.manual_seed(0)
    model, x = ShuffleUnit().eval(), (torch.randn(2, 3, 16, 16),)
    g = next(g for g in channel_groups(model, x, lambda n: False) if g.name == "gc1")
    assert g.uniform == 16 and g.consumers[0].name == "gc2" and g.consumers[0].units[9] == [(9 % 8) * 4 + 9 // 8]
    pruned, lines, left = _prune_half(model, x)
    assert not left, lines
    assert pruned.gc1.out_channels == pruned.dw.out_channels == pruned.dw.groups == pruned.gc2.in_channels == 16
    assert pruned.stem.out_channels == pruned.gc2.out_channels == 16    # the residual group is pruned too
    assert pruned.gc2.groups == pruned.gc1.groups == 4
    _check(model, pruned, x, tmp_path, macs_below=0.5)


class TokenMLP(nn.Module):
    """conv patches -> flatten(2).transpose(1, 2) -> residual MLP: a transpose that keeps channel j at index j."""

    def __init__(self):
        super().__init__()
        self.pe, self.fc1, self.fc2, self.head = nn.Conv2d(3, 32, 4, 4), nn.Linear(32, 64), nn.Linear(64, 32), nn.Linear(32, 5)

    def forward(self, x):
        t = self.pe(x).flatten(2).transpose(1, 2)
        t = t + self.fc2(torch.relu(self.fc1(t)))
        return self.head(t.mean(1))


def test_a_transpose_that_keeps_channel_order_is_checked_and_pruned(tmp_path):
    from edgeprune.pruning.graph import channel_groups

    torch.manual_seed(0)
    model, x = TokenMLP().eval(), (torch.randn(2, 3, 16, 16),)
    groups = channel_groups(model, x, lambda n: False)
    assert any(g.reorders for g in groups)                               # the semantic check ran on it
    pruned, lines, left = _prune_half(model, x, unit="channels")
    assert not left, lines
    assert pruned.pe.out_channels == pruned.fc2.out_features == 16
    _check(model, pruned, x, tmp_path)


class SEBlock(nn.Module):
    """MBConv with squeeze-excitation: the gate's channels multiply the depthwise output channel by channel."""

    def __init__(self, c=32):
        super().__init__()
        self.stem, self.exp = nn.Conv2d(3, c, 3, padding=1), nn.Conv2d(c, 4 * c, 1)
        self.dw = nn.Conv2d(4 * c, 4 * c, 3, padding=1, groups=4 * c)
        self.se_r, self.se_e = nn.Conv2d(4 * c, c // 4, 1), nn.Conv2d(c // 4, 4 * c, 1)
        self.proj, self.head = nn.Conv2d(4 * c, c, 1), nn.Linear(c, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        h = torch.relu(self.dw(torch.relu(self.exp(x))))
        s = torch.sigmoid(self.se_e(torch.relu(self.se_r(h.mean((2, 3), keepdim=True)))))
        return self.head((x + self.proj(h * s)).mean((2, 3)))


def test_squeeze_excitation_gate_prunes_with_the_channels_it_scales(tmp_path):
    torch.manual_seed(0)
    model, x = SEBlock().eval(), (torch.randn(2, 3, 16, 16),)
    pruned = ep.prune(model, x, StructuredConfig(ratio=0.5))
    assert pruned.exp.out_channels == pruned.dw.out_channels == pruned.se_e.out_channels == pruned.proj.in_channels == 64
    assert pruned.se_r.out_channels == 4 and pruned.stem.out_channels == 16
    _check(model, pruned, x, tmp_path, macs_below=0.5)


class ChunkNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b1, self.b2 = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.h = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        u, v = torch.relu(self.a(x)).chunk(2, 1)
        return self.h(torch.cat([torch.relu(self.b1(u)), torch.relu(self.b2(v))], 1))


def test_a_chunked_producer_is_pruned_equally_in_both_chunks(tmp_path):
    torch.manual_seed(0)
    model, x = ChunkNet().eval(), (torch.randn(1, 3, 16, 16),)
    pruned, lines, left = _prune_half(model, x)
    assert not left, lines
    assert pruned.a.out_channels == 16 and pruned.b1.in_channels == pruned.b2.in_channels == 8
    assert pruned.b1.out_channels == pruned.b2.out_channels == 8
    _check(model, pruned, x, tmp_path, macs_below=0.35)


class FixedSplit(ChunkNet):
    def forward(self, x):
        u, v = torch.relu(self.a(x)).split([16, 16], 1)  # literal sizes: no narrower `a` can run
        return self.h(torch.cat([torch.relu(self.b1(u)), torch.relu(self.b2(v))], 1))


def test_a_split_with_literal_sizes_is_left_whole_with_the_reason_and_strict_raises(tmp_path):
    torch.manual_seed(0)
    model, x = FixedSplit().eval(), (torch.randn(1, 3, 16, 16),)
    pruned, lines, left = _prune_half(model, x)
    assert len(left) == 1 and left[0].startswith("left unpruned: a (Conv2d): its channels are split"), lines
    assert "no removal of equal blocks of 'a's channels gives the dense model" in left[0]
    assert pruned.a.out_channels == 32 and pruned.b1.out_channels == pruned.b2.out_channels == 8
    _check(model, pruned, x, tmp_path)
    with pytest.raises(PruningError, match="split"):
        ep.prune(model, x, StructuredConfig(ratio=0.5, strict=True))
