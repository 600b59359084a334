"""Data for the whole project: one CalibrationData path for calibration, training and evaluation samples.

What lives here:
    core.py     CalibrationData (named arrays with a leading sample dim, optional int64 labels, class names,
                source files, raw texts) and its views: batches, calls, minibatches, feeds, bind, take, head
    sources.py  readers: .txt (one sample a line), .csv (text,label), .npy/.npz ('labels' key = labels),
                torch.save'd .pt, Python iterables / DataLoaders (labelled=True: last tuple element = labels)
    images.py   ImagePreprocess and image readers: a flat folder, or one subfolder per class (labelled)
    specs.py    InputSpec: a model's inputs (from ONNX or torch example inputs) and the bind check
    adapt.py    as_data(obj, example_inputs, n, input_names): the one adapter every consumer calls
    overlap.py  check_disjoint(eval, calib=..., train=...): evaluation shares no file and no sample
    cli.py      read_data(path, model, options): what --calib / --train / --eval-data read

    data = as_data(calib, example_inputs)                      # tensor, tuple, dict, DataLoader, path, ...
    for batch in data.batches(32, drop_last=False): model(*batch)
    calib = CalibrationData.load("photos/", preprocess=ImagePreprocess(crop=224))
    check_disjoint(eval_data, calib=calib, train=train)        # CalibrationError when they overlap

Sampling is deterministic: the first `n` of a seeded permutation of the sorted sources, so the same files
give the same samples on every machine. Bad input raises CalibrationError (a ConfigError: one line, exit 2).
"""
from edgeprune.data.adapt import as_data, trim_padding
from edgeprune.data.core import DEFAULT_SAMPLES, CalibrationData, check_finite, sample_indices
from edgeprune.data.errors import CalibrationError
from edgeprune.data.images import ImagePreprocess
from edgeprune.data.overlap import check_disjoint, sample_fingerprints
from edgeprune.data.sources import load_tokenizer
from edgeprune.data.specs import InputSpec, as_specs, onnx_input_specs, torch_input_specs

__all__ = ["CalibrationData", "CalibrationError", "ImagePreprocess", "InputSpec", "as_data", "check_disjoint",
           "sample_fingerprints", "onnx_input_specs", "torch_input_specs", "as_specs", "sample_indices", "check_finite",
           "load_tokenizer", "DEFAULT_SAMPLES"]
