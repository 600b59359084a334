"""Quality metrics on real tiny torch models, checked against hand-computed numbers."""
from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.metrics import METRICS, default_metric_name, first_tensor, get_metric


class Lambda(nn.Module):
    """Wraps a model and changes its output: the 'pruned' model of a test."""

    def __init__(self, inner: nn.Module, fn):
        super().__init__()
        self.inner, self.fn = inner, fn

    def forward(self, *args):
        return self.fn(self.inner(*args), *args)


def table_model(rows: list[list[float]]) -> nn.Embedding:
    """Sample index -> fixed embedding row (output [B,H]): embeddings known exactly by the test."""
    emb = nn.Embedding(len(rows), len(rows[0]))
    with torch.no_grad():
        emb.weight.copy_(torch.tensor(rows, dtype=torch.float32))
    return emb


def angles(degrees: list[float]) -> list[list[float]]:
    return [[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees]


class TokenEncoder(nn.Module):
    """(ids, mask) -> hidden states [B,T,H]; `pad_noise` adds a shift only where mask == 0."""

    def __init__(self, vocab=20, hidden=8, pad_noise=0.0, real_noise=0.0):
        super().__init__()
        torch.manual_seed(1)
        self.emb = nn.Embedding(vocab, hidden)
        self.pad_noise, self.real_noise = pad_noise, real_noise

    def forward(self, ids, mask):
        h = self.emb(ids)
        m = mask.unsqueeze(-1).float()
        return h + (1 - m) * self.pad_noise + m * self.real_noise * torch.arange(h.shape[-1]).float()


class MaskThird(nn.Module):
    """(ids, token_type_ids, mask) -> encoder(ids, mask): the mask is the third input."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, ids, types, mask):
        return self.encoder(ids, mask)


class TinyLM(nn.Module):
    """(ids, mask) -> logits [B,T,V]; a bigram LM (each position sees its own token only)."""

    def __init__(self, vocab=11, hidden=6):
        super().__init__()
        torch.manual_seed(2)
        self.emb = nn.Embedding(vocab, hidden)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids, mask):
        return self.head(self.emb(ids))


# ---- first_tensor -------------------------------------------------------------------------------

def test_first_tensor_handles_every_output_kind():
    a, b = torch.ones(2), torch.zeros(3)

    class WithLogits:
        logits = b

    class Tupled:
        def to_tuple(self):
            return (None, a)

    assert first_tensor(a) is a
    assert first_tensor((None, [a, b])) is a
    assert first_tensor({"x": "text", "h": b, "y": a}) is b
    assert first_tensor(OrderedDict(hidden=a, logits=b)) is b  # logits preferred, like ModelOutput
    assert first_tensor(WithLogits()) is b
    assert first_tensor(Tupled()) is a
    with pytest.raises(ConfigError, match="no tensor"):
        first_tensor({"x": "text"})


# ---- agreement, top1 ----------------------------------------------------------------------------

def test_agreement_is_100_for_itself_and_exact_for_changed_logits():
    torch.manual_seed(0)
    dense = nn.Linear(6, 4)
    x = torch.randn(40, 6)
    batches = [(x[:25],), (x[25:],)]
    bound = get_metric("agreement").bind(dense, batches)
    assert bound.dense_score == 100.0
    assert bound(dense) == 100.0
    # negated logits: argmax becomes argmin, never equal with 4 distinct logits
    assert bound(Lambda(dense, lambda y, x: -y)) == 0.0
    # negate only samples with x0 > 0: agreement = share of samples with x0 <= 0
    flip = Lambda(dense, lambda y, x: torch.where(x[:, :1] > 0, -y, y))
    expected = 100.0 * float((x[:, 0] <= 0).double().mean())
    assert 0 < expected < 100
    assert bound(flip) == pytest.approx(expected, abs=1e-12)
    assert bound.drop(bound(flip)) == pytest.approx(100.0 - expected)


def test_metric_restores_training_flags_and_runs_in_eval():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.9))
    dense.train()
    dense[0].eval()  # mixed flags must come back as they were
    bound = get_metric("agreement").bind(dense, [(torch.randn(30, 6),)])
    assert bound(dense) == 100.0  # dropout active would make the two passes disagree
    assert dense.training and not dense[0].training and dense[1].training


def test_top1_equals_hand_computed_accuracy():
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))  # logits = inputs: argmax known by construction
    x = torch.tensor([[5., 0, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0], [0, 5, 0]])
    labels = torch.tensor([0, 1, 1, 2, 1])  # argmax 0,1,2,0,1 -> hits 1,1,0,0,1 = 3/5
    bound = get_metric("top1").bind(model, [(x[:2],), (x[2:],)], labels=labels)
    assert bound.dense_score == pytest.approx(60.0)
    swapped = Lambda(model, lambda y, x: y[:, [0, 2, 1]])  # argmax 0,2,1,0,2 -> hits 1,0,1,0,0 = 2/5
    assert bound(swapped) == pytest.approx(40.0)
    assert bound.drop(40.0) == pytest.approx(20.0)


def test_top1_without_labels_or_with_wrong_count_is_config_error():
    model, x = nn.Linear(3, 3), torch.randn(4, 3)
    with pytest.raises(ConfigError, match="class-per-folder image tree, a CSV text,label, or an npz with 'labels'"):
        get_metric("top1").bind(model, [(x,)])
    with pytest.raises(ConfigError, match="3 labels for 4 predictions"):
        get_metric("top1").bind(model, [(x,)], labels=torch.tensor([0, 1, 2]))


# ---- cosine -------------------------------------------------------------------------------------

def test_cosine_equals_hand_value():
    dense = table_model([[1., 0], [0, 2]])
    model = table_model([[1., 1], [0, 5]])  # cos 1/sqrt(2) and 1
    bound = get_metric("cosine").bind(dense, [(torch.tensor([0, 1]),)])
    assert bound.dense_score == pytest.approx(100.0)
    assert bound(model) == pytest.approx(100.0 * (1 / math.sqrt(2) + 1) / 2)


def test_cosine_pools_with_the_mask_and_ignores_padded_hidden_states():
    torch.manual_seed(3)
    ids = torch.randint(0, 20, (6, 7))
    mask = torch.ones(6, 7, dtype=torch.long)
    mask[:, 4:] = 0  # right padding
    mask[0, 2:] = 0
    dense, pad_changed = TokenEncoder(), TokenEncoder(pad_noise=50.0)
    bound = get_metric("cosine").bind(dense, [(ids, mask)])
    assert bound(pad_changed) == pytest.approx(100.0, abs=1e-9)
    assert bound(TokenEncoder(real_noise=1.0)) < 99.0  # a change at real tokens does move it
    # the mask found by name at another position works the same
    named = get_metric("cosine").bind(MaskThird(dense), [(ids, torch.zeros_like(ids), mask)],
                                      input_names=["input_ids", "token_type_ids", "attention_mask"])
    assert named(MaskThird(pad_changed)) == pytest.approx(100.0, abs=1e-9)
    # a float 0/1 tensor is not taken for a mask: plain mean, so the padded change shows
    plain = get_metric("cosine").bind(dense, [(ids, mask.float())])
    assert plain(pad_changed) < 99.0


def test_named_mask_of_wrong_shape_is_config_error():
    class IgnoresMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)

        def forward(self, ids, types, mask):
            return self.emb(ids)  # [B,5,H] while the named mask is [B,3]

    ids = torch.randint(0, 20, (2, 5))
    with pytest.raises(ConfigError, match="attention_mask"):
        get_metric("cosine").bind(IgnoresMask(),
                                  [(ids, torch.ones(2, 5, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))],
                                  input_names=["input_ids", "x", "attention_mask"])


# ---- neighbours ---------------------------------------------------------------------------------

def test_neighbours_equals_hand_computation():
    # 5 unit vectors; N=5 -> k=3 (all but self and the farthest). Dense angles 0,10,20,100,210:
    #   NN sets {1,2,3} {0,2,3} {0,1,3} {0,1,2} {0,1,3}
    # model moves sample 3 to 250 deg: NN sets {1,2,3} {0,2,3} {0,1,3} {0,1,4} {0,1,3}
    #   overlaps 3,3,3,2,3 -> 100 * 14 / 15
    dense = table_model(angles([0, 10, 20, 100, 210]))
    model = table_model(angles([0, 10, 20, 250, 210]))
    idx = torch.arange(5)
    bound = get_metric("neighbours").bind(dense, [(idx[:3],), (idx[3:],)])
    assert bound.dense_score == 100.0
    assert bound(dense) == 100.0
    assert bound(model) == pytest.approx(100.0 * 14 / 15)


def test_neighbours_of_noisy_encoder_is_lower():
    torch.manual_seed(4)
    ids = torch.randint(0, 20, (30, 6))
    mask = torch.ones_like(ids)
    dense = TokenEncoder()
    noisy = Lambda(dense, lambda h, ids, mask: h + 3.0 * torch.randn_like(h))
    bound = get_metric("neighbours").bind(dense, [(ids[:16], mask[:16]), (ids[16:], mask[16:])])
    assert bound(dense) == 100.0
    assert bound(noisy) < 90.0


def test_neighbours_needs_three_samples():
    with pytest.raises(ConfigError, match="at least 3"):
        get_metric("neighbours").bind(table_model([[1., 0], [0, 1]]), [(torch.arange(2),)])


# ---- perplexity ---------------------------------------------------------------------------------

def hand_perplexity(model, ids, mask) -> float:
    logits = model(ids, mask)
    nll, n = 0.0, 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            if mask[b, t + 1]:
                nll -= float(torch.log_softmax(logits[b, t].double(), -1)[ids[b, t + 1]])
                n += 1
    return math.exp(nll / n)


def test_perplexity_equals_hand_cross_entropy_and_ignores_padding():
    torch.manual_seed(5)
    lm = TinyLM()
    ids = torch.randint(0, 11, (4, 6))
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0
    mask[3, 2:] = 0
    bound = get_metric("perplexity").bind(lm, [(ids[:2], mask[:2]), (ids[2:], mask[2:])])
    with torch.no_grad():
        expected = hand_perplexity(lm, ids, mask)
    assert bound.dense_score == pytest.approx(expected, rel=1e-6)
    assert not bound.metric.higher_is_better and bound.metric.unit == "ppl"
    # other tokens at padded positions: same perplexity
    ids2 = ids.masked_fill(mask == 0, 7)
    assert not torch.equal(ids2, ids)
    again = get_metric("perplexity").bind(lm, [(ids2[:2], mask[:2]), (ids2[2:], mask[2:])])
    assert again.dense_score == pytest.approx(expected, rel=1e-6)
    # a worse model: drop = score - dense > 0
    worse = Lambda(lm, lambda y, ids, mask: 0.2 * y)
    with torch.no_grad():
        score = bound(worse)
        assert score == pytest.approx(hand_perplexity(worse, ids, mask), rel=1e-6)
    assert bound.drop(score) == pytest.approx(score - expected)


def test_perplexity_of_gpt2_matches_its_own_loss():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(6)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100))
    ids = torch.randint(0, 100, (3, 9))
    bound = get_metric("perplexity").bind(gpt2, [(ids,)])
    assert gpt2.training  # bind ran it in eval mode and put the flag back
    gpt2.eval()  # no dropout for the reference loss either
    with torch.no_grad():
        loss = gpt2(input_ids=ids, labels=ids).loss
    assert bound.dense_score == pytest.approx(math.exp(float(loss)), rel=1e-5)


def test_perplexity_of_a_classifier_is_config_error():
    with pytest.raises(ConfigError, match=r"logits \[B,T,V\]"):
        get_metric("perplexity").bind(nn.Linear(4, 3), [(torch.randn(2, 4),)])


# ---- registry and defaults ----------------------------------------------------------------------

def test_unknown_metric_lists_the_names():
    with pytest.raises(ConfigError) as err:
        get_metric("f1")
    for name in ("top1", "agreement", "perplexity", "cosine", "neighbours"):
        assert name in str(err.value)
    assert set(METRICS) == {"top1", "agreement", "perplexity", "cosine", "neighbours"}


def test_default_metric_name_by_head():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(7)
    ids = torch.randint(0, 100, (2, 8))
    mask = torch.ones_like(ids)
    assert default_metric_name(nn.Linear(5, 3), (torch.randn(2, 5),)) == "agreement"
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                                          num_attention_heads=2, intermediate_size=64))
    assert default_metric_name(bert, (ids, mask), ["input_ids", "attention_mask"]) == "neighbours"
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100))
    assert default_metric_name(gpt2, (ids,)) == "perplexity"
    # no LM class name: [B,T,V] with V = the input vocab -> perplexity; hidden states -> neighbours
    assert default_metric_name(TinyLM(), (ids % 11, mask)) == "perplexity"
    assert default_metric_name(TokenEncoder(), (ids % 20, mask)) == "neighbours"
    seg = nn.Conv2d(3, 4, 1)  # [B,C,H,W] map
    assert default_metric_name(seg, (torch.randn(1, 3, 5, 5),)) == "cosine"
