"""Every relative link and anchor in README.md and docs/ resolves (GitHub's heading anchors)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def outside_code(text: str) -> list[str]:
    lines, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence:
            lines.append(re.sub(r"`[^`]*`", "", line) if not line.startswith("#") else line)
    return lines


def anchors(page: Path) -> set[str]:
    """GitHub's: the heading lower-cased, punctuation but hyphens dropped, spaces as hyphens; repeats get -1, -2."""
    seen: dict[str, int] = {}
    out = set()
    for line in outside_code(page.read_text()):
        m = re.match(r"#{1,6} (.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return out


def links():
    for page in PAGES:
        for line in outside_code(page.read_text()):
            for target in LINK.findall(line):
                if not re.match(r"[a-z]+:", target):
                    yield page, target


def test_anchor_rule_by_hand(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# A (`b/c.py`, 2026)\n## λ chosen, K = 3\n## λ chosen, K = 3\n```\n# not a heading\n```\n")
    assert anchors(page) == {"a-bcpy-2026", "λ-chosen-k--3", "λ-chosen-k--3-1"}


@pytest.mark.parametrize("page,target", list(links()), ids=lambda x: x if isinstance(x, str) else x.name)
def test_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    assert file.exists(), f"{page.name}: {target}: no file {file}"
    if anchor and file.suffix == ".md":
        assert anchor in anchors(file), f"{page.name}: {target}: no heading with anchor #{anchor} in {file.name}"
