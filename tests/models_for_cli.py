"""Factories used by CLI tests through the `path/file.py:factory` model spec."""
import torch

from conftest import make_cnn, make_mlp  # noqa: F401  (same folder; loaded by file path)


def mlp_with_inputs():
    return make_mlp()


def cnn_only():
    return make_cnn()[0]


def cnn_with_inputs():
    model, _ = make_cnn()
    return model, (torch.randn(1, 3, 32, 32),)


def not_a_model():
    return 42


def broken():
    raise RuntimeError("factory exploded")


def bad_output():
    # export then validates against a model whose output differs between calls
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x + torch.rand_like(x)

    return Noisy(), (torch.randn(2, 4),)
