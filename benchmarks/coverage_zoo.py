"""The architectures of benchmarks/coverage.py: Hugging Face `transformers` configs with random weights (structure,
not quality), plus our own UNet, YOLO-style detector and DenseNet-style concat net.

Sizes are small enough that 33 models prune, export and time in well under an hour on 2 cores, and large enough
that batch-1 latency is compute, not runtime overhead (hidden 256-384, 4 layers, 128 tokens; images 128-224).
Every entry: name -> (family, builder); a builder returns (module, example_inputs, input_names), the module a
plain positional-input nn.Module (HFModelWrapper: first output tensor), eval mode, seeded.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

SEQ, IMG = 128, 160
TEXT = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1024, vocab_size=4096,
            max_position_embeddings=256)


def _wrap(model, names, inputs):
    from edgeprune.models import HFModelWrapper

    return HFModelWrapper(model.eval(), names).eval(), inputs, names


def _text_inputs(vocab: int = 4096):
    ids = torch.randint(5, vocab, (1, SEQ), generator=torch.Generator().manual_seed(1))
    return (ids, torch.ones(1, SEQ, dtype=torch.long))


def _hf(cls_name: str, cfg_name: str, kind: str, **cfg) -> Callable[[], tuple]:
    def build():
        import transformers

        torch.manual_seed(0)
        config = getattr(transformers, cfg_name)(**cfg)
        config._attn_implementation = "eager"
        if hasattr(config, "use_cache"):
            config.use_cache = False
        model = getattr(transformers, cls_name)(config)
        if kind == "text":
            return _wrap(model, ["input_ids", "attention_mask"], _text_inputs(cfg.get("vocab_size", 4096)))
        if kind == "audio":
            return _wrap(model, ["input_values"], (torch.randn(1, 16000, generator=torch.Generator().manual_seed(1)),))
        if kind == "whisper":
            n = 2 * cfg["max_source_positions"]
            return _wrap(model, ["input_features"], (torch.randn(1, cfg["num_mel_bins"], n,
                                                                 generator=torch.Generator().manual_seed(1)),))
        size = cfg.get("image_size", IMG)
        return _wrap(model, ["pixel_values"], (torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1)),))
    return build


def _decoder(cls: str, cfg: str, **extra):
    base = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1024,
                vocab_size=4096, max_position_embeddings=256)
    base.update(extra)
    return _hf(cls, cfg, "text", **base)


VIT = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1024, image_size=IMG,
           patch_size=16, num_labels=10)

HF_MODELS: dict[str, tuple[str, Callable[[], tuple]]] = {
    # vision CNNs
    "ResNet": ("vision", _hf("ResNetForImageClassification", "ResNetConfig", "image", embedding_size=32,
                             hidden_sizes=[64, 128, 256, 512], depths=[1, 1, 2, 1], layer_type="bottleneck", num_labels=10)),
    "ConvNeXt": ("vision", _hf("ConvNextForImageClassification", "ConvNextConfig", "image", hidden_sizes=[48, 96, 192, 384],
                               depths=[1, 1, 3, 1], num_labels=10)),
    "ConvNeXtV2": ("vision", _hf("ConvNextV2ForImageClassification", "ConvNextV2Config", "image",
                                 hidden_sizes=[48, 96, 192, 384], depths=[1, 1, 3, 1], num_labels=10)),
    "MobileNetV1": ("vision", _hf("MobileNetV1ForImageClassification", "MobileNetV1Config", "image", image_size=IMG,
                                  num_labels=10)),
    "MobileNetV2": ("vision", _hf("MobileNetV2ForImageClassification", "MobileNetV2Config", "image", image_size=IMG,
                                  num_labels=10)),
    "EfficientNet": ("vision", _hf("EfficientNetForImageClassification", "EfficientNetConfig", "image", image_size=IMG,
                                   width_coefficient=0.5, depth_coefficient=0.5, hidden_dim=640, num_labels=10)),
    "RegNet": ("vision", _hf("RegNetForImageClassification", "RegNetConfig", "image", embedding_size=32,
                             hidden_sizes=[64, 128, 256, 512], depths=[1, 1, 2, 1], groups_width=16, num_labels=10)),
    # vision transformers
    "ViT": ("vision", _hf("ViTForImageClassification", "ViTConfig", "image", **VIT)),
    "DeiT": ("vision", _hf("DeiTForImageClassification", "DeiTConfig", "image", **VIT)),
    "MobileViT": ("vision", _hf("MobileViTForImageClassification", "MobileViTConfig", "image", image_size=IMG,
                                num_labels=10)),
    "Swin": ("vision", _hf("SwinForImageClassification", "SwinConfig", "image", image_size=IMG, patch_size=4,
                           embed_dim=48, depths=[1, 1, 2, 1], num_heads=[2, 4, 8, 16], window_size=5, num_labels=10)),
    # segmentation / detection heads
    "SegFormer": ("segmentation", _hf("SegformerForSemanticSegmentation", "SegformerConfig", "image", image_size=IMG,
                                      hidden_sizes=[32, 64, 160, 256], num_labels=8, decoder_hidden_size=128)),
    "UperNet-ConvNeXt": ("segmentation", lambda: _upernet()),
    "DPT": ("segmentation", _hf("DPTForSemanticSegmentation", "DPTConfig", "image", hidden_size=256, num_hidden_layers=4,
                                num_attention_heads=8, intermediate_size=1024, image_size=IMG, patch_size=16,
                                backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[32, 64, 128, 256],
                                fusion_hidden_size=64, num_labels=8)),
    "MobileNetV2-DeepLabV3": ("segmentation", _hf("MobileNetV2ForSemanticSegmentation", "MobileNetV2Config", "image",
                                                  image_size=IMG, num_labels=8)),
    "DETR": ("detection", lambda: _detr()),
    # encoders
    "BERT": ("encoder", _hf("BertModel", "BertConfig", "text", **TEXT)),
    "DistilBERT": ("encoder", _hf("DistilBertModel", "DistilBertConfig", "text", dim=256, n_layers=4, n_heads=8,
                                  hidden_dim=1024, vocab_size=4096, max_position_embeddings=256)),
    "RoBERTa": ("encoder", _hf("RobertaModel", "RobertaConfig", "text", **TEXT)),
    "ALBERT": ("encoder", _hf("AlbertModel", "AlbertConfig", "text", embedding_size=128, **TEXT)),
    "DeBERTa-v2": ("encoder", _hf("DebertaV2Model", "DebertaV2Config", "text", **TEXT)),
    "ELECTRA": ("encoder", _hf("ElectraModel", "ElectraConfig", "text", embedding_size=128, **TEXT)),
    # decoders
    "GPT-2": ("decoder", _hf("GPT2LMHeadModel", "GPT2Config", "text", n_embd=256, n_layer=4, n_head=8, n_inner=1024,
                             vocab_size=4096, n_positions=256)),
    "GPT-Neo": ("decoder", _hf("GPTNeoForCausalLM", "GPTNeoConfig", "text", hidden_size=256, num_layers=4, num_heads=8,
                               intermediate_size=1024, vocab_size=4096, max_position_embeddings=256,
                               attention_types=[[["global", "local"], 2]], window_size=64)),
    "OPT": ("decoder", _hf("OPTForCausalLM", "OPTConfig", "text", hidden_size=256, num_hidden_layers=4,
                           num_attention_heads=8, ffn_dim=1024, vocab_size=4096, max_position_embeddings=256,
                           word_embed_proj_dim=256)),
    "Llama": ("decoder", _decoder("LlamaForCausalLM", "LlamaConfig", num_key_value_heads=4)),
    "Mistral": ("decoder", _decoder("MistralForCausalLM", "MistralConfig", num_key_value_heads=2, sliding_window=64)),
    "Qwen2": ("decoder", _decoder("Qwen2ForCausalLM", "Qwen2Config", num_key_value_heads=2)),
    "Phi": ("decoder", _decoder("PhiForCausalLM", "PhiConfig")),
    "Gemma": ("decoder", _decoder("GemmaForCausalLM", "GemmaConfig", num_key_value_heads=1, head_dim=32)),
    # speech encoders
    "Wav2Vec2": ("speech", _hf("Wav2Vec2Model", "Wav2Vec2Config", "audio", hidden_size=256, num_hidden_layers=4,
                               num_attention_heads=8, intermediate_size=1024, conv_dim=[128] * 5,
                               conv_kernel=[10, 3, 3, 3, 2], conv_stride=[5, 2, 2, 2, 2], num_conv_pos_embeddings=32,
                               num_conv_pos_embedding_groups=8, do_stable_layer_norm=True, feat_extract_norm="layer")),
    "Whisper-encoder": ("speech", _hf("WhisperForAudioClassification", "WhisperConfig", "whisper", d_model=256,
                                      encoder_layers=4, encoder_attention_heads=8, encoder_ffn_dim=1024,
                                      decoder_layers=1, decoder_attention_heads=8, num_mel_bins=80,
                                      max_source_positions=200, num_labels=10)),
}


def _upernet():
    import transformers

    torch.manual_seed(0)
    backbone = transformers.ConvNextConfig(hidden_sizes=[48, 96, 192, 384], depths=[1, 1, 2, 1],
                                           out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = transformers.UperNetConfig(backbone_config=backbone, hidden_size=128, auxiliary_in_channels=192,
                                     use_auxiliary_head=False, num_labels=8)
    return _wrap(transformers.UperNetForSemanticSegmentation(cfg), ["pixel_values"],
                 (torch.randn(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(1)),))


def _detr():
    import transformers

    torch.manual_seed(0)
    backbone = transformers.ResNetConfig(embedding_size=32, hidden_sizes=[64, 128, 256, 512], depths=[1, 1, 1, 1],
                                         layer_type="basic", out_features=["stage4"])
    cfg = transformers.DetrConfig(use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False,
                                  d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                  decoder_attention_heads=4, encoder_ffn_dim=512, decoder_ffn_dim=512, num_queries=20,
                                  num_labels=8)
    cfg._attn_implementation = "eager"
    return _wrap(transformers.DetrForObjectDetection(cfg), ["pixel_values"],
                 (torch.randn(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(1)),))


# -- our own: a UNet, a YOLO-style detector, a DenseNet-style concat net ------------------------------------------

def _cbr(i, o, k=3, s=1):
    return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, bias=False), nn.BatchNorm2d(o), nn.SiLU())


class UNet(nn.Module):
    """Two-level UNet: ConvTranspose2d up-path, concat skips, a 1x1 segmentation head."""

    def __init__(self, w=32, classes=4):
        super().__init__()
        self.d1, self.d2, self.d3 = nn.Sequential(_cbr(3, w), _cbr(w, w)), _cbr(w, 2 * w, s=2), _cbr(2 * w, 4 * w, s=2)
        self.up3, self.f2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2), _cbr(4 * w, 2 * w)
        self.up2, self.f1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2), _cbr(2 * w, w)
        self.head = nn.Conv2d(w, classes, 1)

    def forward(self, x):
        s1 = self.d1(x)
        s2 = self.d2(s1)
        y = self.f2(torch.cat([s2, self.up3(self.d3(s2))], 1))
        return self.head(self.f1(torch.cat([s1, self.up2(y)], 1)))


class C2f(nn.Module):
    """YOLOv8's C2f: split (chunk) into two halves, bottlenecks on one, concat everything."""

    def __init__(self, c, n=2):
        super().__init__()
        self.cv1, self.cv2 = _cbr(c, c, 1), _cbr((2 + n) * (c // 2), c, 1)
        self.m = nn.ModuleList(nn.Sequential(_cbr(c // 2, c // 2), _cbr(c // 2, c // 2)) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(y[-1] + m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class YOLOish(nn.Module):
    """A YOLOv8-style backbone (strided convs + C2f), an FPN-ish upsample-concat neck and two detection heads."""

    def __init__(self, w=32, outputs=4 + 1 + 8):
        super().__init__()
        self.stem, self.s1 = _cbr(3, w, s=2), nn.Sequential(_cbr(w, 2 * w, s=2), C2f(2 * w))
        self.s2, self.s3 = nn.Sequential(_cbr(2 * w, 4 * w, s=2), C2f(4 * w)), nn.Sequential(_cbr(4 * w, 8 * w, s=2), C2f(8 * w))
        self.up, self.neck = nn.Upsample(scale_factor=2.0, mode="nearest"), C2f(12 * w)
        self.neck_in = _cbr(12 * w, 12 * w, 1)
        self.head_s, self.head_l = nn.Conv2d(12 * w, outputs, 1), nn.Conv2d(8 * w, outputs, 1)

    def forward(self, x):
        p4 = self.s2(self.s1(self.stem(x)))
        p5 = self.s3(p4)
        small = self.neck(self.neck_in(torch.cat([self.up(p5), p4], 1)))
        return torch.cat([self.head_s(small).flatten(2), self.head_l(p5).flatten(2)], 2)


class DenseNetish(nn.Module):
    """DenseNet blocks (every layer reads the concat of all before it) with transitions and a classifier."""

    def __init__(self, growth=24, layers=(4, 4), classes=10):
        super().__init__()
        c, blocks = 2 * growth, []
        self.stem = _cbr(3, c, s=2)
        for i, n in enumerate(layers):
            convs = nn.ModuleList()
            for _ in range(n):
                convs.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 4 * growth, 1, bias=False),
                                           nn.BatchNorm2d(4 * growth), nn.ReLU(),
                                           nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)))
                c += growth
            blocks.append(convs)
            if i < len(layers) - 1:
                blocks.append(nn.Sequential(nn.BatchNorm2d(c), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)))
                c //= 2
        self.blocks, self.head = nn.ModuleList(blocks), nn.Linear(c, classes)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            if isinstance(b, nn.ModuleList):
                for layer in b:
                    x = torch.cat([x, layer(x)], 1)
            else:
                x = b(x)
        return self.head(x.mean((2, 3)))


def _own(cls):
    def build():
        torch.manual_seed(0)
        model = cls().eval()
        g = torch.Generator().manual_seed(3)
        for m in model.modules():  # trained-looking BN statistics, so no channel is trivially dead
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        return model, (torch.randn(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(1)),), ["pixel_values"]
    return build


OWN_MODELS = {"UNet (ours)": ("segmentation", _own(UNet)), "YOLO-style (ours)": ("detection", _own(YOLOish)),
              "DenseNet-style (ours)": ("vision", _own(DenseNetish))}
MODELS = {**HF_MODELS, **OWN_MODELS}
