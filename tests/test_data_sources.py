"""edgeprune.data: every source from real files, labels, NaN refusal, held-out overlap checks, as_data, minibatches."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from edgeprune.data import CalibrationData, CalibrationError, ImagePreprocess, as_data, check_disjoint, sample_fingerprints
from edgeprune.errors import ConfigError

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
COLORS = {"cat": (200, 30, 30), "dog": (20, 40, 220), "owl": (90, 160, 60)}


def _photo(path, rgb, size=(40, 30)):
    """A PNG of one flat color: after preprocessing, every pixel of channel c is (rgb[c]/255 - mean[c]) / std[c]."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), rgb, dtype=np.uint8)).save(path)
    return path


def _expected(rgb) -> np.ndarray:
    return (np.asarray(rgb, np.float32) / 255.0 - MEAN) / STD


@pytest.fixture(scope="module")
def tokenizer():
    from edgeprune.data import load_tokenizer
    from edgeprune.models import builtin_path

    return load_tokenizer(builtin_path("minilm"))


# -- sources -----------------------------------------------------------------------------------

def test_flat_image_folder_has_pixels_files_and_no_labels(tmp_path):
    rgbs = [(10 * i, 100, 255 - 10 * i) for i in range(6)]
    paths = [_photo(tmp_path / "photos" / f"p{i}.png", rgb) for i, rgb in enumerate(rgbs)]
    data = CalibrationData.load(tmp_path / "photos", n=4, preprocess=ImagePreprocess(crop=16))
    x = data.arrays["input"]
    assert x.shape == (4, 3, 16, 16) and x.dtype == np.float32 and data.labels is None and data.class_names is None
    assert len(data.files) == 4 and data.files <= {str(p.resolve()) for p in paths}
    # each sample is one of the flat colors, normalized per channel
    picked = sorted(int(Path(p).stem[1:]) for p in data.files)  # p3.png -> 3
    for row, i in zip(x, picked):
        assert np.allclose(row.mean(axis=(1, 2)), _expected(rgbs[i]), atol=1e-5)


def test_class_tree_labels_follow_sorted_subfolders(tmp_path):
    for name, rgb in COLORS.items():
        for i in range(3):
            _photo(tmp_path / "tree" / name / f"{i}.png", rgb)
    data = CalibrationData.load(tmp_path / "tree", n=None, preprocess=ImagePreprocess(crop=8))
    assert data.class_names == ["cat", "dog", "owl"] and len(data) == 9
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for row, label in zip(data.arrays["input"], data.labels):  # the label names the color that is in the pixels
        assert np.allclose(row[:, 0, 0], _expected(COLORS[data.class_names[label]]), atol=1e-5)
    some = CalibrationData.load(tmp_path / "tree", n=4, seed=1, preprocess=ImagePreprocess(crop=8))
    assert len(some) == 4 and some.class_names == data.class_names
    for row, label in zip(some.arrays["input"], some.labels):
        assert np.allclose(row[:, 0, 0], _expected(COLORS[some.class_names[label]]), atol=1e-5)


def test_text_lines_tokenized_and_kept(tmp_path, tokenizer):
    lines = ["a fine film", "the plot is thin", "lovely acting", "too long by half"]
    (tmp_path / "lines.txt").write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n")
    data = CalibrationData.load(tmp_path / "lines.txt", tokenizer=tokenizer, seq_len=12)
    assert data.texts == lines and data.labels is None
    assert data.arrays["input_ids"].shape == (4, 12) and data.arrays["input_ids"].dtype == np.int64
    assert data.files == {str((tmp_path / "lines.txt").resolve())}
    for ids, text in zip(data.arrays["input_ids"], lines):
        assert ids[0] == tokenizer.cls_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert data.arrays["attention_mask"][2].sum() == len(tokenizer("lovely acting")["input_ids"])


def test_csv_string_and_int_labels(tmp_path, tokenizer):
    (tmp_path / "rev.csv").write_text('text,label\n"great, really great",pos\nawful,neg\nfine film,pos\nmeh,neg\nbad,neg\n')
    data = CalibrationData.load(tmp_path / "rev.csv", tokenizer=tokenizer, seq_len=10)
    assert data.class_names == ["neg", "pos"] and data.labels.tolist() == [1, 0, 1, 0, 0]
    assert data.texts[0] == "great, really great" and data.arrays["input_ids"].shape == (5, 10)
    part = CalibrationData.load(tmp_path / "rev.csv", tokenizer=tokenizer, seq_len=10, n=3, seed=2)
    assert [part.class_names[y] for y in part.labels] == [{"great, really great": "pos", "fine film": "pos"}.get(t, "neg")
                                                          for t in part.texts]
    (tmp_path / "ints.csv").write_text("text,label\none,3\ntwo,1\n")
    ints = CalibrationData.load(tmp_path / "ints.csv", tokenizer=tokenizer, seq_len=8)
    assert ints.labels.tolist() == [3, 1] and ints.class_names is None
    (tmp_path / "bad.csv").write_text("sentence,y\nhi,1\n")
    with pytest.raises(CalibrationError, match="header 'text,label'"):
        CalibrationData.load(tmp_path / "bad.csv", tokenizer=tokenizer)
    (tmp_path / "hole.csv").write_text("text,label\nhi,1\nthere,\n")
    with pytest.raises(CalibrationError, match="line 3: label is empty"):
        CalibrationData.load(tmp_path / "hole.csv", tokenizer=tokenizer)


def test_npz_labels_key_is_labels_not_an_input(tmp_path):
    x = np.arange(50 * 4, dtype=np.float32).reshape(50, 4)
    np.savez(tmp_path / "d.npz", features=x, labels=np.arange(50) % 7)
    data = CalibrationData.load(tmp_path / "d.npz", n=10, seed=3)
    assert data.names == ["features"] and len(data) == 10
    rows = (data.arrays["features"][:, 0] / 4).astype(int)  # which original row each sample is
    assert data.labels.tolist() == (rows % 7).tolist()  # labels sampled together with the inputs
    np.save(tmp_path / "one.npy", x)
    one = CalibrationData.load(tmp_path / "one.npy", n=None, input_names=["x"])
    assert one.names == ["x"] and np.array_equal(one.arrays["x"], x) and one.labels is None


def test_dataloader_labelled(tmp_path):
    x, y = torch.randn(20, 3), torch.arange(20) % 4
    data = CalibrationData.from_iterable(DataLoader(TensorDataset(x, y), batch_size=6), n=None, labelled=True)
    assert data.names == ["input_0"] and len(data) == 20
    assert np.array_equal(data.arrays["input_0"], x.numpy()) and data.labels.tolist() == y.tolist()
    plain = CalibrationData.from_iterable(DataLoader(TensorDataset(x, y), batch_size=6), n=None)
    assert plain.names == ["input_0", "input_1"] and plain.labels is None  # unlabelled: y is just another input
    with pytest.raises(CalibrationError, match=r"\(inputs..., labels\)"):
        CalibrationData.from_iterable([x], labelled=True)


def test_subsets_keep_labels_and_texts():
    data = CalibrationData({"x": np.arange(10, dtype=np.float32)[:, None]}, labels=np.arange(10) % 3,
                           texts=[f"t{i}" for i in range(10)], class_names=["a", "b", "c"])
    part = data[2:5]
    assert part.labels.tolist() == [2, 0, 1] and part.texts == ["t2", "t3", "t4"] and part.class_names == ["a", "b", "c"]
    picked = data[[9, 0]]
    assert picked.arrays["x"][:, 0].tolist() == [9.0, 0.0] and picked.labels.tolist() == [0, 0]
    taken = data.take(4, seed=0)
    assert taken.labels.tolist() == (taken.arrays["x"][:, 0].astype(int) % 3).tolist()
    assert data.head(3).texts == ["t0", "t1", "t2"] and data.head(3).labels.tolist() == [0, 1, 2]
    from edgeprune.data import InputSpec

    bound = data.bind([InputSpec("features", (None, 1), "float32")])
    assert bound.names == ["features"] and bound.labels.tolist() == data.labels.tolist() and bound.texts == data.texts
    with pytest.raises(CalibrationError, match="one per sample"):
        CalibrationData({"x": np.zeros((3, 1))}, labels=[0, 1])


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "Inf")])
def test_non_finite_samples_are_refused_by_sample_and_input(tmp_path, bad, word):
    x = np.zeros((8, 3, 4, 4), np.float32)
    x[5, 1, 2, 2] = bad
    np.savez(tmp_path / "x.npz", ids=np.ones((8, 4), np.int64), image=x)
    with pytest.raises(CalibrationError) as err:
        CalibrationData.load(tmp_path / "x.npz")
    msg = str(err.value)
    assert f"sample 5 of input 'image' holds {word}" in msg and str(tmp_path / "x.npz") in msg
    assert isinstance(err.value, ConfigError) and "\n" not in msg
    with pytest.raises(CalibrationError, match="sample 1 of input 'input_0' holds NaN"):
        as_data(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]))


# -- held out ----------------------------------------------------------------------------------

def test_eval_from_the_same_file_is_refused(tmp_path, tokenizer):
    (tmp_path / "lines.txt").write_text("\n".join(f"sentence number {i}" for i in range(40)))
    calib = CalibrationData.load(tmp_path / "lines.txt", tokenizer=tokenizer, seq_len=8, n=10, seed=0)
    ev = CalibrationData.load(tmp_path / "lines.txt", tokenizer=tokenizer, seq_len=8, n=10, seed=1)
    with pytest.raises(CalibrationError, match=r"eval data .*lines.txt and calib data .*lines.txt are the same file\(s\): "
                                               r"lines.txt \(fix: hold out samples the calibration and recovery never see\)"):
        check_disjoint(ev, calib=calib)


def test_eval_sharing_samples_through_other_files_is_refused(tmp_path):
    for i in range(5):
        _photo(tmp_path / "calib" / f"c{i}.png", (40 * i, 0, 0))
    for i in range(3):  # fresh colors
        _photo(tmp_path / "eval" / f"e{i}.png", (0, 40 * i + 20, 0))
    pre = ImagePreprocess(crop=8)
    calib = CalibrationData.load(tmp_path / "calib", preprocess=pre)
    train = CalibrationData.load(tmp_path / "eval", preprocess=pre)  # read from the eval folder: the same files
    ev = CalibrationData.load(tmp_path / "eval", preprocess=pre)
    check_disjoint(ev, calib=calib)  # disjoint: no error
    for i in (1, 3):  # two calibration photos copied under new names into the eval folder
        shutil.copy(tmp_path / "calib" / f"c{i}.png", tmp_path / "eval" / f"copy{i}.png")
    ev = CalibrationData.load(tmp_path / "eval", preprocess=pre)
    with pytest.raises(CalibrationError, match=r"eval data .*eval/ shares 2 of 5 samples with calib data .*calib/"):
        check_disjoint(ev, calib=calib)
    with pytest.raises(CalibrationError, match=r"and train data .*eval/ are the same file\(s\)"):
        check_disjoint(ev, calib=None, train=train)
    fp = sample_fingerprints(calib)
    assert len(fp) == 5 and len(set(fp)) == 5 and fp == sample_fingerprints(calib[0:5])


# -- as_data -----------------------------------------------------------------------------------

def _ref():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 3, generator=g), torch.randint(0, 9, (12, 5), generator=g)


@pytest.mark.parametrize("form", ["tensor", "tuple", "dict", "list_of_tuples", "list_of_tensors", "dataloader", "numpy"])
def test_as_data_accepts_every_shape(form):
    x, ids = _ref()
    obj = {"tensor": x, "tuple": (x, ids), "dict": {"x": x, "ids": ids},
           "list_of_tuples": [(x[:5], ids[:5]), (x[5:], ids[5:])], "list_of_tensors": [x[:7], x[7:]],
           "dataloader": DataLoader(TensorDataset(x, ids), batch_size=5), "numpy": x.numpy()}[form]
    data = as_data(obj)
    two = form in ("tuple", "dict", "list_of_tuples", "dataloader")
    assert len(data) == 12 and len(data.names) == (2 if two else 1)
    assert data.keyword == (form == "dict")
    batches = data.batches(5, drop_last=False)
    assert [b[0].shape[0] for b in batches] == [5, 5, 2]
    assert torch.equal(torch.cat([b[0] for b in batches]), x)
    if two:
        assert torch.equal(torch.cat([b[1] for b in batches]), ids) and batches[0][1].dtype == torch.int64
    assert len(data.batches(5)) == 2  # drop_last (default): static batch dims only
    args, kwargs = data.calls(5)[0]
    assert (set(kwargs) == {"x", "ids"} and args == ()) if form == "dict" else (kwargs == {} and len(args) == len(data.names))


def test_as_data_paths_none_and_errors(tmp_path):
    x, ids = _ref()
    data = as_data(x)
    assert as_data(data) is data
    assert as_data(x, n=4).arrays["input_0"].shape == (4, 3)
    np.save(tmp_path / "x.npy", x.numpy())
    from_path = as_data(tmp_path / "x.npy", input_names=["feat"])
    assert from_path.names == ["feat"] and np.array_equal(from_path.arrays["feat"], x.numpy())
    torch.save((x, ids), tmp_path / "b.pt")
    pt = as_data(str(tmp_path / "b.pt"))
    assert pt.names == ["input_0", "input_1"] and np.array_equal(pt.arrays["input_1"], ids.numpy())
    example = as_data(None, example_inputs=(x[:2],), input_names=["image"])
    assert example.names == ["image"] and len(example) == 2 and example.source == "example inputs"
    with pytest.raises(CalibrationError, match="no data given"):
        as_data(None)
    with pytest.raises(CalibrationError, match="cannot use int"):
        as_data(42)
    with pytest.raises(CalibrationError, match="str, not a tensor"):
        as_data(["nope"])
    with pytest.raises(CalibrationError, match="cannot be stacked"):
        as_data([torch.zeros(2, 3), torch.zeros(2, 4)])


def test_minibatches_are_deterministic_under_a_seed():
    x = torch.arange(10, dtype=torch.float32)[:, None]
    data = as_data(DataLoader(TensorDataset(x, torch.arange(10) % 2), batch_size=4), labelled=True)

    def order(**kw):
        return [(xb[0][:, 0].int().tolist(), yb.tolist()) for xb, yb in data.minibatches(4, **kw)]

    a, b = order(shuffle=True, seed=3), order(shuffle=True, seed=3)
    assert a == b and len(a) == 2 and all(len(xs) == 4 for xs, _ in a)  # drop_last: 2 full batches of 10
    assert all(ys == [v % 2 for v in xs] for xs, ys in a)  # labels stay with their inputs
    assert a != order(shuffle=True, seed=4)
    assert [v for xs, _ in a for v in xs] != list(range(8))  # shuffled, not the stored order
    assert order(shuffle=False, seed=0) == [([0, 1, 2, 3], [0, 1, 0, 1]), ([4, 5, 6, 7], [0, 1, 0, 1])]
    tail = order(shuffle=False, seed=0, drop_last=False)
    assert tail[-1] == ([8, 9], [0, 1])
    unlabelled = next(as_data(x).minibatches(3, shuffle=False, seed=0))
    assert unlabelled[1] is None and unlabelled[0][0].shape == (3, 1)


def test_from_texts_keeps_model_inputs_in_order(tokenizer):
    data = CalibrationData.from_texts(["good", "bad movie"], tokenizer, labels=[1, 0], seq_len=6, source="reviews",
                                      input_names=["input_ids", "attention_mask"])
    assert data.names == ["input_ids", "attention_mask"] and data.texts == ["good", "bad movie"]
    assert data.labels.tolist() == [1, 0] and data.arrays["attention_mask"].sum(1).tolist() == [3, 4]  # [CLS] .. [SEP]
    with pytest.raises(CalibrationError, match=r"not the model input\(s\) \['pixel_values'\]"):
        CalibrationData.from_texts(["x"], tokenizer, input_names=["pixel_values"])


# -- the CLI reader ----------------------------------------------------------------------------

def test_read_data_binds_text_to_the_model_with_its_tokenizer(tmp_path, minilm):
    from edgeprune.cli.data import ReadOptions, read_data, read_sets

    (tmp_path / "calib.txt").write_text("a fine film\nthe plot is thin\n")
    (tmp_path / "eval.csv").write_text("text,label\nlovely acting,pos\ntoo long by half,neg\n")
    calib = read_data(tmp_path / "calib.txt", minilm)
    assert calib.names == minilm.input_names and calib.texts == ["a fine film", "the plot is thin"]
    assert calib.arrays["input_ids"].shape == (2, minilm.example_inputs[0].shape[1])  # the model's sequence length
    ev = read_data(tmp_path / "eval.csv", minilm, ReadOptions(seq_len=None), role="eval")
    assert ev.class_names == ["neg", "pos"] and ev.labels.tolist() == [1, 0]
    with pytest.raises(CalibrationError, match="eval data not found"):
        read_sets(minilm, calib=tmp_path / "calib.txt", eval_data=tmp_path / "missing.csv")
    (tmp_path / "eval.txt").write_text("the plot is thin\nsomething new\n")  # one calibration line again
    with pytest.raises(CalibrationError, match=r"shares 1 of 2 samples with calib data"):
        read_sets(minilm, calib=tmp_path / "calib.txt", eval_data=tmp_path / "eval.txt")


def test_data_options_and_read_data_options(tmp_path):
    import click
    from click.testing import CliRunner

    from edgeprune.cli.data import data_options, read_data_options
    from edgeprune.models import load_model

    loaded = load_model(f"{Path(__file__).parent}/conftest.py:make_cnn")  # input (N, 3, 32, 32)
    for i in range(5):
        _photo(tmp_path / "calib" / f"{i}.png", (50 * i, 10, 10))
    _photo(tmp_path / "eval" / "a" / "0.png", (10, 200, 10))
    _photo(tmp_path / "eval" / "b" / "0.png", (10, 10, 200))
    seen = {}

    @click.command()
    @data_options
    def cmd(calib, train, eval_data, image_size):
        seen["sets"] = read_data_options(loaded, calib, train, eval_data, image_size)

    result = CliRunner().invoke(cmd, ["--calib", str(tmp_path / "calib"), "--eval-data", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    calib, train, ev = seen["sets"]
    assert train is None and calib.names == ["x"] and calib.arrays["x"].shape == (5, 3, 32, 32)  # the model's H/W
    assert ev.labels.tolist() == [0, 1] and ev.class_names == ["a", "b"]
    result = CliRunner().invoke(cmd, ["--calib", str(tmp_path / "calib"), "--image-size", "24"])
    assert "dim 2 is 24; the model expects x (N, 3, 32, 32)" in str(result.exception)


def test_optimize_binds_a_text_file_to_the_models_input_order(tmp_path):
    """A tokenizer yields (input_ids, token_type_ids, attention_mask); MiniLM's wrapper takes (input_ids,
    attention_mask, token_type_ids). Fed by position the mask was the all-zero token types, every snippet embedded
    alike, and a 1.5x plan scored 100.00 neighbours. resolve_data binds by name."""
    import edgeprune as ep
    from edgeprune.models import builtin_path
    from edgeprune.optimizer import OptimizeConfig
    from edgeprune.optimizer.api import resolve_data

    lm = ep.load_model("minilm")
    lines = [f"snippet number {i} about a film that is {'good' if i % 2 else 'bad'}" for i in range(40)]
    (tmp_path / "c.txt").write_text("\n".join(lines[:20]) + "\n")
    (tmp_path / "e.txt").write_text("\n".join(lines[20:]) + "\n")
    calib, _, held = resolve_data(str(tmp_path / "c.txt"), None, str(tmp_path / "e.txt"), lm.example_inputs,
                                  lm.input_names, OptimizeConfig(), True, lambda m: None, tokenizer=builtin_path("minilm"))
    for d in (calib, held):
        assert list(d.arrays) == lm.input_names == ["input_ids", "attention_mask", "token_type_ids"]
        assert d.arrays["attention_mask"][:, 0].min() == 1 and d.arrays["token_type_ids"].max() == 0
