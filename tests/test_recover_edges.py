"""Recovery edge cases: metric direction, resuming with nothing saved, labelled loaders and paths in the verb."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgeprune.data import CalibrationData
from edgeprune.recover import RecoverConfig, recover
from edgeprune.recover.distill import DistillSetup


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def _bn_only(higher_is_better: bool, after_bn: float):
    """recover() in bn mode with a scorer that reports 10.0 before and `after_bn` once BN was re-estimated."""
    student, teacher = BNNet().eval(), BNNet().eval()
    with torch.no_grad():  # the student's features differ from the dense twin's, as after pruning: BN has to move
        student.conv.weight.mul_(0.5)
    batches = [(torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(i)) * 3 + 1,) for i in range(4)]
    before = student.bn.running_mean.clone()
    report = recover(student, teacher, batches, DistillSetup("logits"), RecoverConfig(mode="bn"), verify=lambda m: after_bn,
                     is_recovered=lambda s: False, score=10.0, higher_is_better=higher_is_better)
    return report, bool(torch.equal(student.bn.running_mean, before))


@pytest.mark.parametrize("higher, after, undone", [(True, 12.0, False), (True, 8.0, True), (False, 12.0, True), (False, 8.0, False)])
def test_a_stage_is_undone_only_when_the_score_got_worse_in_the_metrics_direction(higher, after, undone):
    report, restored = _bn_only(higher, after)
    bn = report.stages[1]
    assert bn.stage == "bn" and restored is undone
    assert bn.score == (10.0 if undone else after)
    assert ("undone" in bn.note) is undone


def test_best_attempt_is_the_smallest_drop_whatever_the_direction():
    from edgeprune.optimizer.core import Attempt
    from edgeprune.optimizer.run import _best_attempt

    spd = {"median": 1.5, "min": 1.4, "max": 1.6, "ci_low": 1.45, "ci_high": 1.55}
    # perplexity: dense 20; attempt 0 at 21 (drop 1), attempt 1 at 20.5 (drop 0.5): the second is better
    attempts = [Attempt({}, 1.0, 1.0, dict(spd), 21.0, 1.0, True, drop_ok=True),
                Attempt({}, 1.0, 1.0, dict(spd), 20.5, 0.5, True, drop_ok=True)]
    assert _best_attempt(attempts, 1 / 1.5) == 1


def test_resume_with_nothing_saved_recovers_from_the_start(tmp_path):
    student, teacher = BNNet().eval(), BNNet().eval()
    batches = [(torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(i)),) for i in range(4)]
    said = []
    config = RecoverConfig(mode="distill", steps=3, checkpoint_dir=tmp_path / "ckpt", resume=True, blockwise="off")
    report = recover(student, teacher, batches, DistillSetup("logits"), config, verify=lambda m: 50.0,
                     is_recovered=lambda s: False, score=40.0, say=said.append, fingerprint="f")
    assert [s.stage for s in report.stages] == ["compensation", "bn", "distill"]
    assert any("recovering from the start" in m for m in said)


def test_an_x_y_loader_is_read_as_labelled_and_a_generator_loses_nothing():
    from edgeprune.optimizer.api import _with_labels

    x, y = torch.randn(12, 5), torch.arange(12) % 3
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    obj, labelled = _with_labels(loader, n_inputs=1)
    assert labelled and obj is loader
    obj, labelled = _with_labels(((x[i:i + 4],) for i in range(0, 12, 4)), n_inputs=1)
    assert not labelled and sum(b[0].shape[0] for b in obj) == 12  # the peeked batch is handed back
    from edgeprune.data import as_data

    data = as_data(loader, (x[:1],), labelled=True)
    assert len(data) == 12 and list(data.labels) == y.tolist() and len(data.names) == 1


def test_optimize_reads_text_files_with_the_tokenizer_and_the_models_length(tmp_path):
    from edgeprune.models import builtin_path
    from edgeprune.optimizer import OptimizeConfig
    from edgeprune.optimizer.api import resolve_data

    for name, lines in (("calib", ["a quiet film", "loud and long", "it works"]), ("eval", ["not this one", "nor that"])):
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
    example = (torch.ones(1, 24, dtype=torch.long), torch.ones(1, 24, dtype=torch.long), torch.zeros(1, 24, dtype=torch.long))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    calib, train, held = resolve_data(tmp_path / "calib.txt", None, tmp_path / "eval.txt", example, names, OptimizeConfig(),
                                      True, print, tokenizer=builtin_path("minilm"))
    assert len(calib) == 3 and len(held) == 2 and train is calib
    assert calib.arrays["input_ids"].shape == (3, 24)
    with pytest.raises(Exception, match="tokenizer"):
        resolve_data(tmp_path / "calib.txt", None, None, example, names, OptimizeConfig(), False, print)



def test_blockwise_caches_only_what_a_quarter_of_a_timed_budget_buys():
    import time as _time

    from edgeprune.recover.blockwise import MIN_BATCHES, _affordable

    class Slow(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Linear(8, 8)

        def forward(self, x):
            _time.sleep(0.05)  # a lower bound: load can only make a forward slower, so fewer batches, never more
            return self.block(x)

    batches = [(torch.randn(2, 8),) for _ in range(100)]
    # 0.5 x 1 s of caching at >= 3 x 50 ms per batch buys at most 3 batches: the floor of MIN_BATCHES applies
    assert len(_affordable(Slow(), ["block"], batches, budget_s=1.0)) == MIN_BATCHES
    assert len(_affordable(Slow(), ["block"], batches, budget_s=None)) == 100  # fixed steps: memory bound only
