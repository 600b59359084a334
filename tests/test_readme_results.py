"""Every number in the README's "Measured results" bullets occurs in the results file(s) that bullet links to.

A README figure may round the file's (89.58 -> 89.6, 0.9809 -> 0.981); anything else is a figure no results file
holds, which is how numbers drift from their measurement.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")


def _bullets() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Measured results"):]
    section = section.split("\n## ", 1)[0]
    return [b for b in re.split(r"\n- ", section)[1:]]


def _numbers(text: str) -> list[str]:
    body = re.sub(r"\[[^\]]*\]\([^)]*\)", "", text)  # the link itself names files, not figures
    body = re.sub(r"`[^`]*`", "", body)              # code: option names, values the user types
    return NUMBER.findall(body.replace(",", ""))


def _held(figure: str, values: set[str]) -> bool:
    """Whether a number of the file equals `figure` at the figure's precision."""
    decimals = len(figure.split(".")[1]) if "." in figure else 0
    target = float(figure)
    return any(abs(round(float(v), decimals) - target) < 1e-9 for v in values)


def test_there_are_results_bullets_with_links():
    bullets = _bullets()
    assert len(bullets) >= 8
    assert all(re.search(r"\]\((benchmarks/results/[^)]+)\)", b) for b in bullets)


@pytest.mark.parametrize("bullet", _bullets(), ids=lambda b: re.search(r"\[([^\]]+)\]", b).group(1))
def test_each_readme_figure_is_in_the_results_file_it_links(bullet):
    links = re.findall(r"\]\((benchmarks/results/[^)]+)\)", bullet)
    files = [ROOT / link for link in links]
    assert all(f.is_file() for f in files), f"missing results file among {links}"
    values = set(NUMBER.findall("".join(f.read_text(encoding="utf-8") for f in files).replace(",", "")))
    missing = [n for n in _numbers(bullet) if not _held(n, values)]
    assert not missing, f"README figures not in {links}: {missing}"


# Prose outside "Measured results" that quotes results files: (first words, words after it ends, its files, and
# the method constants it names, which are definitions rather than measurements).
SECTIONS = [
    ("**Why.**", "So edgeprune measures every claim", ["gpu_semi_structured.md"], set()),
    ("How the latency model is built", "`report.json` records the correction", ["optimize.md"], {"95"}),
]


@pytest.mark.parametrize("start, end, files, constants", SECTIONS, ids=[s[0] for s in SECTIONS])
def test_prose_figures_are_in_their_results_files(start, end, files, constants):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(start): text.index(end, text.index(start))]
    values = set(NUMBER.findall("".join((ROOT / "benchmarks" / "results" / f).read_text(encoding="utf-8")
                                        for f in files).replace(",", "")))
    # list markers ("1." at a line start) number the steps, they are not figures
    body = re.sub(r"(?m)^\d+\. ", "", section)
    missing = [n for n in _numbers(body) if n not in constants and not _held(n, values)]
    assert not missing, f"README figures not in {files}: {missing}"
