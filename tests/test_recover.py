"""Recovery on real (small) models: BN re-estimation, distillation, resume, a NaN loss. Numbers, not timings."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from edgeprune.data import CalibrationData, ImagePreprocess
from edgeprune.pruning import StructuredConfig, prune
from edgeprune.recover import RecoverConfig, distill, reestimate_bn
from edgeprune.recover.distill import DistillSetup


def _photos(folder, n: int, seed: int):
    """n real PNG files: smooth colour gradients with a bright disc at a random place (image statistics a CNN's BN
    layers can describe: not white noise)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    for i in range(n):  # the class (for training the dense model) is the disc's quadrant: in the file name
        c = rng.uniform(0, 1, size=(3, 3))
        img = np.stack([c[k, 0] * xx + c[k, 1] * yy + c[k, 2] * 0.3 for k in range(3)], -1)
        cy, cx, r = rng.uniform(8, 32, 2).tolist() + [rng.uniform(4, 10)]
        img[(yy * 40 - cy) ** 2 + (xx * 40 - cx) ** 2 < r * r] = rng.uniform(0.6, 1.0, 3)
        Image.fromarray((255 * img.clip(0, 1)).astype(np.uint8)).save(folder / f"p{i:03d}_{int(cy > 20) * 2 + int(cx > 20)}.png")
    return folder


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.head = nn.Linear(64, 4)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _agreement(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x).argmax(1) == b(x).argmax(1)).float().mean() * 100)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    pre = ImagePreprocess(crop=32, resize=36)
    train = CalibrationData.load(_photos(root / "train", 96, 0), preprocess=pre, n=None)
    held = CalibrationData.load(_photos(root / "held", 64, 1), preprocess=pre, n=None)
    return train, held


@pytest.fixture(scope="module")
def dense_cnn(photos, tmp_path_factory):
    """SmallCNN trained for a few seconds to tell the disc's quadrant (labels from the file names)."""
    train, _ = photos
    root = tmp_path_factory.getbasetemp()
    files = sorted((p for p in root.rglob("*.png") if "train" in str(p.parent)), key=lambda p: p.name)
    assert len(files) == 96
    torch.manual_seed(0)
    model = SmallCNN()
    x = torch.from_numpy(np.stack([ImagePreprocess(crop=32, resize=36)(p) for p in files]))
    y = torch.tensor([int(p.stem.split("_")[1]) for p in files])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        for i in range(0, 96, 16):
            loss = F.cross_entropy(model(x[i:i + 16]), y[i:i + 16])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_bn_reestimation_moves_statistics_and_raises_agreement(photos, dense_cnn):
    train, held = photos
    x = torch.from_numpy(held.arrays[held.names[0]])
    pruned = prune(copy.deepcopy(dense_cnn), (x[:1],), StructuredConfig(ratio=0.5, importance="magnitude", compensate=False))
    before_mean = pruned.features[4].running_mean.clone()
    agreement_before = _agreement(dense_cnn, pruned, x)
    stats = reestimate_bn(pruned, train.batches(16))
    assert stats["layers"] == 3 and stats["samples"] == 96
    assert (pruned.features[4].running_mean - before_mean).abs().mean() > 1e-3  # the statistics moved
    assert stats["mean_shift"] > 1e-3
    agreement_after = _agreement(dense_cnn, pruned, x)
    assert agreement_after >= agreement_before + 5.0, (agreement_before, agreement_after)  # measured: 23.4 -> 32.8
    assert not pruned.training and not pruned.features[1].training  # back in eval mode


def test_shift_corrected_bn_keeps_the_dense_statistics_where_pruning_moved_nothing(photos, dense_cnn):
    from edgeprune.recover.bn import channel_map

    train, held = photos
    x = torch.from_numpy(held.arrays[held.names[0]])
    same = copy.deepcopy(dense_cnn)
    stats = reestimate_bn(same, train.batches(16), reference=dense_cnn)
    assert stats["mean_shift"] == 0.0 and _agreement(dense_cnn, same, x) == 100.0  # nothing pruned: nothing moves
    pruned = prune(copy.deepcopy(dense_cnn), (x[:1],), StructuredConfig(ratio=0.5, importance="magnitude", compensate=False))
    idx = channel_map(pruned.features[1], dense_cnn.features[1])
    assert idx is not None and len(idx) == pruned.features[1].num_features < 32
    assert torch.equal(pruned.features[1].running_mean, dense_cnn.features[1].running_mean[idx])
    before = _agreement(dense_cnn, pruned, x)
    stats = reestimate_bn(pruned, train.batches(16), reference=dense_cnn)
    assert stats["layers"] == 3 and stats["mean_shift"] > 1e-3
    assert _agreement(dense_cnn, pruned, x) >= before + 5.0, before  # measured once: 29.7 -> 43.8 (plain: 40.6)


def _mlp_pair(seed: int = 0):
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 8)).eval()
    x = torch.randn(1, 16)
    student = prune(copy.deepcopy(teacher), (x,), StructuredConfig(ratio=0.75, importance="magnitude", compensate=False))
    return teacher, student


def _kl(teacher, student, x) -> float:
    with torch.no_grad():
        return float(F.kl_div(F.log_softmax(student(x), -1), F.log_softmax(teacher(x), -1), log_target=True,
                              reduction="batchmean"))


def _train_batches(seed: int = 1, n: int = 8):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(32, 16, generator=g),) for _ in range(n)]


def test_distillation_lowers_kl_on_held_out_inputs():
    teacher, student = _mlp_pair()
    held = torch.randn(512, 16, generator=torch.Generator().manual_seed(99))
    kl_before = _kl(teacher, student, held)
    config = RecoverConfig(mode="distill", steps=150, lr=3e-3, batch_size=32)
    out = distill(student, teacher, _train_batches(), DistillSetup("logits"), config, budget_s=600.0,
                  verify=lambda m: -_kl(teacher, m, held), is_recovered=lambda s: False, score=-kl_before, say=lambda m: None)
    kl_after = _kl(teacher, student, held)
    assert out["steps"] == 150 and out["stopped"] == "done"
    assert kl_after < 0.5 * kl_before, (kl_before, kl_after)


class _Interrupt(Exception):
    pass


def test_resume_continues_from_the_checkpoint_and_matches_an_uninterrupted_run(tmp_path):
    held = torch.randn(256, 16, generator=torch.Generator().manual_seed(7))
    teacher, reference = _mlp_pair()
    base = RecoverConfig(mode="distill", steps=40, lr=3e-3, batch_size=32)
    verify = lambda m: -_kl(teacher, m, held)  # noqa: E731
    distill(reference, teacher, _train_batches(), DistillSetup("logits"), base, budget_s=600.0, verify=verify,
            is_recovered=lambda s: False, score=verify(reference), say=lambda m: None, fingerprint="fp")

    _, student = _mlp_pair()
    ckpt = tmp_path / "ckpt"
    calls = {"n": 0}

    def verify_then_stop(m):  # evaluations at steps 5, 10, 15, 20: the run "dies" during the 4th
        calls["n"] += 1
        if calls["n"] == 4:
            raise _Interrupt
        return verify(m)

    with pytest.raises(_Interrupt):
        distill(student, teacher, _train_batches(), DistillSetup("logits"), dataclasses_replace(base, checkpoint_dir=ckpt),
                budget_s=600.0, verify=verify_then_stop, is_recovered=lambda s: False, score=verify(student),
                say=lambda m: None, fingerprint="fp")
    saved = torch.load(ckpt / "recover.pt", weights_only=True)
    assert saved["step"] == 15
    _, resumed = _mlp_pair()
    messages = []
    out = distill(resumed, teacher, _train_batches(), DistillSetup("logits"),
                  dataclasses_replace(base, checkpoint_dir=ckpt, resume=True), budget_s=600.0, verify=verify,
                  is_recovered=lambda s: False, score=verify(resumed), say=messages.append, fingerprint="fp")
    assert out["steps"] == 40 and any("resuming recovery at step 15" in m for m in messages)
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    with pytest.raises(Exception, match="another model, plan or recovery setting"):
        distill(resumed, teacher, _train_batches(), DistillSetup("logits"), dataclasses_replace(base, checkpoint_dir=ckpt, resume=True),
                budget_s=1.0, verify=verify, is_recovered=lambda s: False, score=0.0, say=lambda m: None, fingerprint="other")


def dataclasses_replace(config, **kw):
    import dataclasses

    return dataclasses.replace(config, **kw)


class _NaNAfter(nn.Module):
    """A teacher whose outputs turn to NaN after `after` calls: the distillation loss becomes non-finite."""

    def __init__(self, inner: nn.Module, after: int):
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, x):
        self.calls += 1
        out = self.inner(x)
        return out * float("nan") if self.calls > self.after else out


def test_nan_loss_stops_recovery_and_keeps_the_best_checkpoint(tmp_path):
    teacher, student = _mlp_pair()
    held = torch.randn(256, 16, generator=torch.Generator().manual_seed(3))
    verify = lambda m: -_kl(teacher, m, held)  # noqa: E731
    config = RecoverConfig(mode="distill", steps=80, lr=3e-3, batch_size=32, checkpoint_dir=tmp_path / "ckpt")
    out = distill(student, _NaNAfter(teacher, 25), _train_batches(), DistillSetup("logits"), config, budget_s=600.0,
                  verify=verify, is_recovered=lambda s: False, score=verify(student), say=lambda m: None)
    assert out["stopped"] == "nan" and out["steps"] == 25
    assert "non-finite at step 26" in out["note"] and "kept the best checkpoint" in out["note"]
    assert out["best_step"] == 20  # evaluations every 10 steps: 10, 20; the NaN came at step 26
    assert all(torch.isfinite(p).all() for p in student.parameters())
    assert verify(student) == pytest.approx(out["best_score"], abs=1e-9)
    saved = torch.load(tmp_path / "ckpt" / "recover.pt", weights_only=True)
    assert saved["best_step"] == 20


def test_recovery_with_fixed_steps_is_deterministic_under_a_seed(photos, dense_cnn):
    from edgeprune.recover import recover
    from edgeprune.recover.blocks import find_blocks

    train, held = photos
    x = torch.from_numpy(held.arrays[held.names[0]])
    results = []
    for _ in range(2):
        student = prune(copy.deepcopy(dense_cnn), (x[:1],), StructuredConfig(ratio=0.5, importance="magnitude"))
        batches = train.batches(16)
        setup = DistillSetup("logits", None, find_blocks(dense_cnn, student, batches[0]))
        config = RecoverConfig(mode="distill", steps=12, lr=1e-3, seed=5, blockwise="on")
        report = recover(student, dense_cnn, batches, setup, config, verify=lambda m: _agreement(dense_cnn, m, x),
                         is_recovered=lambda s: False, score=_agreement(dense_cnn, student, x))
        results.append((report.to_dict(), [p.detach().clone() for p in student.parameters()]))
    (rep_a, params_a), (rep_b, params_b) = results
    assert [s["stage"] for s in rep_a["stages"]] == ["compensation", "bn", "blockwise", "distill"]
    assert [s["score"] for s in rep_a["stages"]] == [s["score"] for s in rep_b["stages"]]
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))
    assert rep_a["stages"][-1]["steps"] == 12
