"""Small models for the pruning tests: inverted residual + depthwise + grouped conv + flatten->Linear, GPT-2, ViT."""
from __future__ import annotations

import torch
from torch import nn


class InvertedResidual(nn.Module):
    """EfficientNet-Lite/MobileNetV2 block (expand 1x1, depthwise 3x3, project 1x1, residual add),
    then a grouped conv and a flatten into Linear: the coupled shapes channel pruning must keep consistent."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.expand = nn.Sequential(nn.Conv2d(16, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(64, 64, 3, 1, 1, groups=64, bias=False), nn.BatchNorm2d(64), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(64, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.gconv = nn.Sequential(nn.Conv2d(16, 32, 3, 1, 1, groups=4), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.dw(self.expand(x)))
        x = nn.functional.adaptive_avg_pool2d(self.gconv(x), 4)
        return self.head(torch.flatten(x, 1))


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(16, 16, 1), nn.ReLU())
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.mix(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3)))


class Hidden(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).last_hidden_state


def _randomize_bn(model):
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def make_ir():
    torch.manual_seed(0)
    return _randomize_bn(InvertedResidual()), (torch.randn(2, 3, 32, 32),)


def make_concat():
    torch.manual_seed(0)
    return ConcatNet().eval(), (torch.randn(2, 3, 16, 16),)


def make_gpt2(n_embd: int = 128, vocab_size: int = 512, n_positions: int = 64, seq: int = 32):
    """A random 2-layer, 4-head GPT-2 (eager attention, no cache) behind HFModelWrapper, and input ids (2, seq)."""
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    from edgeprune.models import HFModelWrapper

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=n_embd, n_head=4, vocab_size=vocab_size, n_positions=n_positions, bos_token_id=0,
                     eos_token_id=0, use_cache=False)
    model = GPT2LMHeadModel(cfg)
    model.config._attn_implementation = "eager"
    # positional input_ids -> logits (the first output; use_cache=False in the config, so no past_key_values)
    return HFModelWrapper(model.eval(), ["input_ids"]).eval(), (torch.randint(0, vocab_size, (2, seq)),)


def make_vit():
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8)
    model = ViTModel(cfg, add_pooling_layer=False)
    model.config._attn_implementation = "eager"
    return Hidden(model.eval()).eval(), (torch.randn(2, 3, 32, 32),)
