"""Every relative link in the Markdown docs points at a file that exists and, with a
``#fragment``, at a heading of that file (GitHub's anchor rule)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [
    ROOT / "README.md",
    ROOT / "hls" / "README.md",
    ROOT / "overlay" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file: lower case, punctuation dropped,
    spaces to hyphens, ``-1``, ``-2`` ... for repeats; code blocks skipped."""
    out: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#+\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            out.add(slug if n == 0 else f"{slug}-{n}")
            seen[slug] = n + 1
    return out


def test_anchor_rule_on_a_heading_with_code_and_punctuation(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("# A\n## 3.1 The gap (`scripts/b_t.py`)\n```\n# not a heading\n```\n## A\n")
    assert anchors(md) == {"a", "31-the-gap-scriptsb_tpy", "a-1"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    text = doc.read_text(encoding="utf-8")
    bad = []
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        rel, _, frag = target.partition("#")
        path = (doc.parent / rel).resolve() if rel else doc
        line = text.count("\n", 0, m.start()) + 1
        if not path.exists():
            bad.append(f"line {line}: {target}: no such file")
        elif frag and path.suffix == ".md" and frag not in anchors(path):
            bad.append(f"line {line}: {target}: no heading with that anchor")
    assert not bad, "\n".join(bad)
