"""Held-out checks: evaluation data must share no file and no sample with the calibration or training data.

A score measured on samples the model was calibrated or trained on flatters it. Two checks:
1. files: the resolved source paths (image files, the .txt/.csv/.npz read) of the two sets intersect;
2. samples: a SHA-1 per sample over the bytes of all its inputs (dtype, shape and values) matches one of
   the other set, which catches the same photos or lines copied into different files.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from edgeprune.data.core import CalibrationData
from edgeprune.data.errors import HOLD_OUT_HINT, CalibrationError


def sample_fingerprints(data: CalibrationData) -> list[str]:
    """One hex digest per sample: SHA-1 over each input's dtype, per-sample shape and bytes, in input order.
    Equal samples give equal digests whatever file (or in-memory source) they came from."""
    digests = []
    for i in range(len(data)):
        h = hashlib.sha1()
        for arr in data.arrays.values():
            row = np.ascontiguousarray(arr[i])
            h.update(f"{row.dtype.str}{row.shape}".encode())
            h.update(row.tobytes())
        digests.append(h.hexdigest())
    return digests


def describe(data: CalibrationData) -> str:
    """Where data came from, short: its single file, the folder all its files share (with a trailing /), or the source."""
    if len(data.files) == 1:
        return next(iter(data.files))
    if data.files:
        return os.path.commonpath(sorted(data.files)) + os.sep
    return data.source


def check_disjoint(eval_data: CalibrationData | None, **others: CalibrationData | None) -> None:
    """Raise CalibrationError when `eval_data` shares a source file or a sample with any of `others`
    (keyword = its role: check_disjoint(ev, calib=c, train=t)); None entries are skipped."""
    if eval_data is None:
        return
    eval_prints = None
    for role, other in others.items():
        if other is None:
            continue
        same = sorted(eval_data.files & other.files)
        if same:
            names = ", ".join(Path(f).name for f in same[:3]) + (f" and {len(same) - 3} more" if len(same) > 3 else "")
            raise CalibrationError(f"eval data {describe(eval_data)} and {role} data {describe(other)} are the same "
                                   f"file(s): {names}", hint=HOLD_OUT_HINT)
        eval_prints = eval_prints if eval_prints is not None else sample_fingerprints(eval_data)
        seen = set(sample_fingerprints(other))
        shared = sum(fp in seen for fp in eval_prints)
        if shared:
            raise CalibrationError(f"eval data {describe(eval_data)} shares {shared} of {len(eval_data)} samples with "
                                   f"{role} data {describe(other)}", hint=HOLD_OUT_HINT)


__all__ = ["sample_fingerprints", "check_disjoint", "describe"]
