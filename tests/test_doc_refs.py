"""Every `HARDWARE.md §X` / `METHODS.md §X` cited in the code points at a heading that exists in docs/.

The scan walks edgeprune/, backends/ and benchmarks/ recursively (every .py file, wherever modules move), reads
each citation and checks, against docs/<NAME>.md:
  (a) the file exists;
  (b) each cited section X is a heading: a markdown line starting with '#' whose text begins with X followed by
      '.', ' ', ')' or the end of the line. X is compared whole and case-insensitively, so §1 needs "## 1. ...",
      §1c needs "### 1c. ...", §9.2 needs "### 9.2 ..." (a "## 1." heading does not satisfy §1c, nor "## 9."
      §9.2);
  (c) each source tag cited with it ([S16], [S1,S4], [U5]) is defined in the doc's Sources section: a list item
      starting with that tag under a heading whose text contains "Sources".

Citation forms read: "HARDWARE.md §3", "docs/METHODS.md §9.2", "/work/shared/HARDWARE.md" (file only),
"METHODS §1" (name without .md, only when a § follows), lists such as "§3, §6, §8", "§1a-§1c" (both ends),
"§7 step 5, the §6 greedy", and tags after them ("§3 [S16]"). A § or tag belongs to the nearest doc name before
it on the same line (or at the end of the line before, for a citation wrapped after the name); a § with no doc
name before it ("(§7: ...)") is not a citation of a doc and is skipped.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCAN_DIRS = ("edgeprune", "backends", "benchmarks")
DOCS = ROOT / "docs"

# a doc name: "HARDWARE.md" anywhere (also inside a path), or the bare name when a § follows ("METHODS §1")
DOC = re.compile(r"\b(HARDWARE|METHODS)(?:\.md\b|(?=\s*§))")
SECTION = re.compile(r"§\s*(\d+[a-z]?(?:\.\d+)*)", re.IGNORECASE)
TAGS = re.compile(r"\[\s*([SU]\d+(?:\s*,\s*[SU]\d+)*)\s*\]")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HEADING_ID = re.compile(r"^(\d+[a-z]?(?:\.\d+)*)(?=[.\s)]|$)", re.IGNORECASE)
SOURCE_ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.)\s+\[([SU]\d+)\]")


@dataclasses.dataclass(frozen=True)
class Citation:
    where: str  # "path:line", relative to the repository root
    doc: str  # "HARDWARE.md" | "METHODS.md"
    section: str | None  # "3", "1c", "9.2"; None for a bare mention of the file
    tags: tuple[str, ...] = ()
    text: str = ""

    def __str__(self) -> str:
        sec = f" §{self.section}" if self.section else ""
        tags = f" [{','.join(self.tags)}]" if self.tags else ""
        return f"{self.where}: {self.doc}{sec}{tags}  ({self.text.strip()[:100]})"


def parse_line(line: str, where: str, carried_doc: str | None = None) -> list[Citation]:
    """The citations on one line. `carried_doc`: the doc named at the very end of the previous line."""
    events: list[tuple[int, str, str]] = []  # (position, kind, value), kind: doc | sec | tags
    events += [(m.start(), "doc", m.group(1).upper() + ".md") for m in DOC.finditer(line)]
    events += [(m.start(), "sec", m.group(1).lower()) for m in SECTION.finditer(line)]
    events += [(m.start(), "tags", m.group(1)) for m in TAGS.finditer(line)]
    events.sort()
    out: list[Citation] = []
    current: str | None = None  # the doc the next § or tag belongs to
    cited = False  # whether `current` got a § or tag (else it is recorded as a bare mention of the file)
    last: int | None = None  # index in `out` of current's last § citation: tags attach to it
    if carried_doc and events and events[0][1] == "sec" and line[:events[0][0]].strip(" \t#*\"'(") == "":
        current, cited = carried_doc, True  # "... (HARDWARE.md\n    §3)": the citation wrapped after the name
    for _, kind, value in events:
        if kind == "doc":
            if current and not cited:
                out.append(Citation(where, current, None, (), line))
            current, cited, last = value, False, None
        elif current is None:
            continue  # a § or tag with no doc name before it: not a doc citation
        elif kind == "sec":
            out.append(Citation(where, current, value, (), line))
            cited, last = True, len(out) - 1
        else:
            tags = tuple(t.strip() for t in value.split(","))
            if last is None:
                out.append(Citation(where, current, None, tags, line))
                last = len(out) - 1
            else:
                out[last] = dataclasses.replace(out[last], tags=out[last].tags + tags)
            cited = True
    if current and not cited:
        out.append(Citation(where, current, None, (), line))
    return out


def scan_text(text: str, where_prefix: str) -> list[Citation]:
    out: list[Citation] = []
    carried: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        out += parse_line(line, f"{where_prefix}:{n}", carried)
        tail = re.search(r"\b(HARDWARE|METHODS)\.md\W*$", line)
        carried = tail.group(1).upper() + ".md" if tail else None
    return out


def scan_tree(root: Path = ROOT) -> tuple[list[Citation], list[Path]]:
    files = sorted(p for d in SCAN_DIRS if (root / d).is_dir() for p in (root / d).rglob("*.py")
                   if "__pycache__" not in p.parts and p.is_file())
    cites: list[Citation] = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        cites += scan_text(text, path.relative_to(root).as_posix())
    return cites, files


def headings(md: str) -> list[tuple[int, str]]:
    """(level, text) of every markdown heading outside fenced code blocks."""
    out, fenced = [], False
    for line in md.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            out.append((len(m.group(1)), m.group(2)))
    return out


def section_ids(md: str) -> set[str]:
    return {m.group(1).lower() for _, text in headings(md) if (m := HEADING_ID.match(text))}


def source_tags(md: str) -> set[str]:
    """Tags defined as list items in the doc's Sources section(s)."""
    tags: set[str] = set()
    level: int | None = None
    fenced = False
    for line in md.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            lvl, text = len(m.group(1)), m.group(2)
            if level is not None and lvl <= level:
                level = None  # the Sources section ended
            if level is None and "sources" in text.lower():
                level = lvl
            continue
        if level is not None and (item := SOURCE_ITEM.match(line)):
            tags.add(item.group(1))
    return tags


@pytest.fixture(scope="module")
def scanned() -> tuple[list[Citation], list[Path]]:
    return scan_tree()


def _doc_text(name: str) -> str | None:
    path = DOCS / name
    return path.read_text(encoding="utf-8") if path.is_file() else None


def test_scanner_reads_the_citation_forms():
    """The parser itself, on the forms the code uses: a broken regex must fail here, not pass silently."""
    def secs(line: str, carried: str | None = None) -> list[tuple[str, str | None, tuple[str, ...]]]:
        return [(c.doc, c.section, c.tags) for c in parse_line(line, "x.py:1", carried)]

    assert secs('"""Rules follow HARDWARE.md §3, §6, §8 and our own GPU measurement') == [
        ("HARDWARE.md", "3", ()), ("HARDWARE.md", "6", ()), ("HARDWARE.md", "8", ())]
    assert secs('"source": f"{src}: amx flags; HARDWARE.md §3 [S16]", "confidence": "D"}') == [
        ("HARDWARE.md", "3", ("S16",))]
    assert secs('"HARDWARE.md §1c [S4]").items()') == [("HARDWARE.md", "1c", ("S4",))]
    assert secs("source: HARDWARE.md §1c, §7 [S11,S4]") == [("HARDWARE.md", "1c", ()),
                                                          ("HARDWARE.md", "7", ("S11", "S4"))]
    assert secs("lr: float = 1e-4  # end-to-end distillation (METHODS.md §9.3)") == [("METHODS.md", "9.3", ())]
    assert secs("The method, with its sources, is docs/METHODS.md §9.") == [("METHODS.md", "9", ())]
    assert secs('"""Per-layer density (METHODS.md §7 step 5, the §6 greedy by Δerror / Δdensity).') == [
        ("METHODS.md", "7", ()), ("METHODS.md", "6", ())]
    assert secs('"""Unit importance scores (larger = more important), METHODS §1.') == [("METHODS.md", "1", ())]
    assert secs("Facts come from /work/shared/HARDWARE.md; its confidence marks travel") == [
        ("HARDWARE.md", None, ())]
    assert secs("Facts: HARDWARE.md §1a-§1c, §6, §7.") == [("HARDWARE.md", s, ()) for s in ("1a", "1c", "6", "7")]
    assert secs("    if gpu:  # widths must suit the tensor cores (§7: FP16 x8, INT8 x16-32, TF32 x4)") == []
    assert secs("(METHODS.md §7) and (HARDWARE.md §2 [S4])") == [("METHODS.md", "7", ()),
                                                                ("HARDWARE.md", "2", ("S4",))]
    assert secs("    §3 [S16]) and more", carried="HARDWARE.md") == [("HARDWARE.md", "3", ("S16",))]
    assert [(c.where, c.section) for c in scan_text("a (HARDWARE.md\n  §4) b\nc §5", "m.py")] == [
        ("m.py:1", None), ("m.py:2", "4")]

    md = "# T\n## 1. A\n### 1c. B\n## 3 C\n### 9.2 D\n```\n## 4. fenced\n```\n## 10) E\n## 5xy no\n## Sources\n" \
         "- [S1] one\n* [S16] two\n- text [S2] not a definition\n## 11. After\n- [S3] not in Sources\n"
    assert section_ids(md) == {"1", "1c", "3", "9.2", "10", "11"}
    assert source_tags(md) == {"S1", "S16"}


def test_citations_are_found(scanned):
    cites, files = scanned
    assert any((ROOT / d).is_dir() for d in SCAN_DIRS), f"none of {SCAN_DIRS} under {ROOT}"
    assert files, f"no .py files under {SCAN_DIRS} of {ROOT}"
    with_section = [c for c in cites if c.section]
    assert with_section, f"no '(HARDWARE|METHODS).md §X' citation found in {len(files)} files: the scan is broken"


def test_cited_docs_exist(scanned):
    cites, _ = scanned
    missing = [f"{c}: docs/{c.doc} does not exist" for c in cites if not (DOCS / c.doc).is_file()]
    assert not missing, "\n".join(missing)


def _parsed(cache: dict, doc: str, parse) -> set[str] | None:
    """parse(docs/<doc> text), read once per doc; None when the doc does not exist."""
    if doc not in cache:
        text = _doc_text(doc)
        cache[doc] = parse(text) if text is not None else None
    return cache[doc]


def test_cited_sections_are_headings(scanned):
    cites, _ = scanned
    problems = []
    ids_by_doc: dict[str, set[str] | None] = {}
    for c in cites:
        if not c.section:
            continue
        ids = _parsed(ids_by_doc, c.doc, section_ids)
        if ids is None:
            problems.append(f"{c}: docs/{c.doc} does not exist")
        elif c.section not in ids:
            problems.append(f"{c}: no heading for §{c.section} in docs/{c.doc} "
                            f"(a '#' line starting '{c.section}.' or '{c.section} ')")
    assert not problems, "cited sections missing:\n" + "\n".join(problems)


def test_cited_source_tags_are_listed(scanned):
    cites, _ = scanned
    problems = []
    tags_by_doc: dict[str, set[str] | None] = {}
    for c in cites:
        if not c.tags:
            continue
        listed = _parsed(tags_by_doc, c.doc, source_tags)
        if listed is None:
            problems.append(f"{c}: docs/{c.doc} does not exist")
            continue
        for tag in c.tags:
            if tag not in listed:
                problems.append(f"{c}: [{tag}] is not defined in the Sources list of docs/{c.doc}")
    assert not problems, "cited source tags missing:\n" + "\n".join(problems)
