"""CalibrationData: sources, deterministic sampling, views, and clear errors on bad data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeprune.data import CalibrationData, CalibrationError, ImagePreprocess, InputSpec, sample_indices


def _write_images(folder, n, size=(40, 30)):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
    return folder


def test_sampling_is_deterministic_and_seeded():
    a, b = sample_indices(1000, 128, seed=0), sample_indices(1000, 128, seed=0)
    assert np.array_equal(a, b) and len(a) == 128 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, sample_indices(1000, 128, seed=1))
    assert np.array_equal(sample_indices(50, 128), np.arange(50))  # fewer than asked: all, in order


def test_numpy_sources_sample_deterministically(tmp_path):
    x = np.random.default_rng(0).standard_normal((300, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", image=x, other=np.arange(300))
    one = CalibrationData.load(tmp_path / "x.npy", input_names=["image"])
    two = CalibrationData.load(tmp_path / "x.npy", input_names=["image"])
    assert len(one) == 128 and one.names == ["image"]  # default: 128 samples
    assert np.array_equal(one.arrays["image"], two.arrays["image"])
    z = CalibrationData.load(tmp_path / "x.npz", n=10, seed=3)
    assert z.names == ["image", "other"] and len(z) == 10
    assert np.array_equal(z.arrays["image"], x[z.arrays["other"]])  # inputs sampled together


def test_image_folder(tmp_path):
    folder = _write_images(tmp_path / "imgs", 6)
    (folder / "notes.txt").write_text("not an image")
    data = CalibrationData.load(folder, n=4, preprocess=ImagePreprocess(crop=16))
    assert data.arrays["input"].shape == (4, 3, 16, 16) and data.arrays["input"].dtype == np.float32
    again = CalibrationData.load(folder, n=4, preprocess=ImagePreprocess(crop=16))
    assert np.array_equal(data.arrays["input"], again.arrays["input"])
    nhwc = CalibrationData.from_images(folder, ImagePreprocess(crop=16, layout="NHWC"), n=2)
    assert nhwc.arrays["input"].shape == (2, 16, 16, 3)


def test_text_is_tokenized_with_the_model_tokenizer(tmp_path):
    from edgeprune.models import builtin_path

    path = tmp_path / "lines.txt"
    path.write_text("a fine film\n\nthe plot is thin\nlovely acting\n")
    data = CalibrationData.load(path, tokenizer=builtin_path("minilm"), seq_len=16)
    assert len(data) == 3 and {"input_ids", "attention_mask"} <= set(data.names)
    assert data.arrays["input_ids"].shape == (3, 16) and data.arrays["input_ids"].dtype == np.int64
    with pytest.raises(CalibrationError, match="tokenizer"):
        CalibrationData.load(path)


def test_views_batches_feeds_and_onnx_reader():
    data = CalibrationData.from_iterable([(torch.randn(5, 4), torch.ones(5, 2, dtype=torch.int64))] * 2, input_names=["x", "m"])
    assert len(data) == 10
    batches = data.batches(4)
    assert len(batches) == 2 and all(isinstance(t, torch.Tensor) for t in batches[0]) and batches[0][0].shape == (4, 4)
    feeds = data.feeds(["m"], batch_size=3)
    assert len(feeds) == 3 and list(feeds[0]) == ["m"] and feeds[0]["m"].dtype == np.int64
    reader = data.as_onnx_reader(["x", "m"], batch_size=5)
    got = [reader.get_next(), reader.get_next(), reader.get_next()]
    assert got[2] is None and got[0]["x"].shape == (5, 4)
    reader.rewind()
    assert reader.get_next() is not None
    assert len(list(iter(data))) == 10  # per-sample tuples: what pruning's calib= consumes
    dicts = CalibrationData.from_iterable([{"a": np.zeros((2, 3))}, {"a": np.ones((2, 3))}])
    assert dicts.arrays["a"].shape == (4, 3)


def test_pruning_accepts_calibration_data():
    """prune(calib=CalibrationData) uses the same samples as the raw tensor: one data path (as_data) for both."""
    from torch import nn

    from edgeprune.pruning import StructuredConfig, prune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.randn(40, 8)
    data = CalibrationData.from_iterable([x])
    assert len(data) == 40 and np.array_equal(data.arrays["input_0"], x.numpy())
    a = prune(model, x[:2], StructuredConfig(ratio=0.5), calib=data)
    b = prune(model, x[:2], StructuredConfig(ratio=0.5), calib=x)
    assert a[0].out_features == 16 and torch.equal(a[0].weight, b[0].weight) and torch.equal(a[2].weight, b[2].weight)
    c = prune(model, x[:2], StructuredConfig(ratio=0.5), calib=x[:20])  # other samples, other refit
    assert not torch.equal(a[2].weight, c[2].weight)


@pytest.mark.parametrize("make, match", [
    (lambda p: (p / "empty").mkdir() or p / "empty", "no images"),
    (lambda p: (p / "e.txt").write_text("\n \n") and p / "e.txt", "no text lines"),
    (lambda p: np.save(p / "e.npy", np.zeros((0, 3))) or p / "e.npy", "empty"),
    (lambda p: p / "missing.npz", "not found"),
])
def test_empty_or_missing_sources_fail_clearly(tmp_path, make, match):
    with pytest.raises(CalibrationError, match=match):
        CalibrationData.load(make(tmp_path), tokenizer=object())


def test_bind_names_expected_shape_and_dtype():
    spec = [InputSpec("image", ("batch", 3, 32, 32), "float32")]
    good = CalibrationData({"x": np.zeros((4, 3, 32, 32), np.float64)}).bind(spec)
    assert good.names == ["image"] and good.arrays["image"].dtype == np.float32  # float64 -> float32 is fine
    with pytest.raises(CalibrationError, match=r"dim 2 is 28; the model expects image \(N, 3, 32, 32\) float32"):
        CalibrationData({"x": np.zeros((4, 3, 28, 32), np.float32)}).bind(spec)
    with pytest.raises(CalibrationError, match=r"rank 3.*expects image \(N, 3, 32, 32\)"):
        CalibrationData({"x": np.zeros((4, 32, 32), np.float32)}).bind(spec)
    ids = [InputSpec("input_ids", (1, 16), "int64")]
    with pytest.raises(CalibrationError, match=r"dtype float32; the model expects input_ids \(1, 16\) int64"):
        CalibrationData({"input_ids": np.zeros((2, 16), np.float32)}).bind(ids)
    assert CalibrationData({"input_ids": np.zeros((2, 16), np.int32)}).bind(ids).arrays["input_ids"].dtype == np.int64
    with pytest.raises(CalibrationError, match="holds inputs"):
        CalibrationData({"a": np.zeros((2, 16)), "b": np.zeros((2, 16))}).bind(ids)
    with pytest.raises(CalibrationError, match="different sample counts"):
        CalibrationData({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))})
