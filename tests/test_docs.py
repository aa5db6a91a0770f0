"""The README's shape and the docs' links.

The README is the first screen (the quickstart, a short tour, links); the reference lives in
docs/. These tests keep it that way and keep every relative link and #anchor resolvable. The
sam and agent exit-code tables in docs/exit-codes.md are checked in tests/sam/test_sam.py and
tests/agent/test_tdx_quote.py; the cryptfs table is checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cryptfs import exitcodes
from tests.support import PROJECT

README = PROJECT / "README.md"
DOCS = sorted((PROJECT / "docs").glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: rendered text, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        slug = _slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(path: Path) -> list[str]:
    text = "\n".join(_prose_lines(path.read_text(encoding="utf-8")))
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans hold no links (link text may be code: [] stays)
    return LINK.findall(text)


def test_slug_is_githubs():
    assert _slug("`python -m cryptfs mount CIPHERDIR MOUNTPOINT`") == \
        "python--m-cryptfs-mount-cipherdir-mountpoint"
    assert _slug("Sam packages: `./do_content_packager.sh` and `python -m sam`") == \
        "sam-packages-do_content_packagersh-and-python--m-sam"
    assert _slug("4.2 HKDF-SHA256 subkeys") == "42-hkdf-sha256-subkeys"


def test_readme_starts_with_the_quickstart_block():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "## Quickstart"
    i = 1
    while not lines[i].strip():
        i += 1
    assert lines[i] == "```", "the quickstart's first content is one fenced block"
    end = lines.index("```", i + 1)
    block = lines[i + 1:end]
    assert len(block) == 3 and all(line.strip() and not line.startswith("#") for line in block), block
    assert block[0].startswith("pip install") and block[1] == "python -m agent demo"
    # the README's test command is exactly what CI runs
    ci = (PROJECT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert block[2] in [line.strip() for line in ci]


def test_readme_is_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) < 200


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: str(p.relative_to(PROJECT)))
def test_relative_links_resolve(doc: Path):
    assert DOCS, "docs/*.md missing"
    problems = []
    for target in _links(doc):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue  # http:, https:, mailto:
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.is_relative_to(PROJECT.resolve()):
            problems.append(f"{target}: outside the repository")
        elif not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            problems.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not problems, f"{doc.name}: " + "; ".join(problems)


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: str(p.relative_to(PROJECT)))
def test_no_paths_outside_the_repository(doc: Path):
    text = doc.read_text(encoding="utf-8")
    assert "../shared" not in text and "shared/specs" not in text


def test_docs_link_back_to_the_readme():
    for doc in DOCS:
        head = doc.read_text(encoding="utf-8").split("\n## ", 1)[0]
        if doc.name != "sam-format.md":  # the format spec predates this rule and is linked from sam.md
            assert "](../README.md)" in head, doc.name


def test_exit_codes_doc_lists_the_cryptfs_codes():
    doc = (PROJECT / "docs" / "exit-codes.md").read_text(encoding="utf-8")
    section = doc.split("\n## cryptfs\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.M))
    assert {v: int(k) for k, v in rows.items()} == exitcodes.ALL
    assert len(set(exitcodes.ALL.values())) == len(exitcodes.ALL)
