"""Every results file says where, with what and when it was measured: machine, versions, commit and date."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
FILES = sorted(RESULTS.glob("*.md"))


def test_there_are_results_files():
    assert len(FILES) >= 10


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_results_file_is_stamped(path):
    text = path.read_text(encoding="utf-8")
    assert re.search(r"AMD|Intel|NVIDIA|Arm|cpu |CPU", text), "no machine"
    assert re.search(r"torch \d+\.\d+", text), "no torch version"
    assert re.search(r"20\d\d-\d\d-\d\d", text), "no date"
    assert re.search(r"commit [0-9a-f]{7}|[Cc]ommit: .*[0-9a-f]{7}| [0-9a-f]{7}(\+dirty)? \|", text), "no commit"
