"""The README stays a front door, and the documentation's links lead somewhere.

The README is short and points to one page per topic under ``docs/``; those pages point
at each other, at headings of each other, at images and example files. A page or heading
that moves breaks such links silently, so every relative link of the README and of every
page under ``docs/`` is checked: the file (or folder) must exist and, for a link into a
markdown page, the heading its ``#anchor`` names must be there. Links are read with
markdown-it (the parser ``rich`` brings), so a link shown inside a code block is not
taken for one. Anchors are made from headings as GitHub makes them.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
INDEX = DOCS / "README.md"
MAX_README_LINES = 260

PAGES = [README, *sorted(DOCS.rglob("*.md"))]
PAGE_IDS = [str(page.relative_to(ROOT)) for page in PAGES]


def _inline_text(token: Token) -> str:
    """The text a reader sees in an inline token (code spans included, markup dropped)."""
    return "".join(
        child.content for child in token.children or [] if child.type in {"text", "code_inline"}
    )


def slug(text: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@cache
def tokens(page: Path) -> list[Token]:
    """The page parsed as CommonMark with tables (a flat token stream)."""
    return MarkdownIt("commonmark").enable("table").parse(page.read_text(encoding="utf-8"))


@cache
def anchors(page: Path) -> frozenset[str]:
    """Every heading anchor of ``page``; a repeated heading gets ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    stream = tokens(page)
    for opening, inline in zip(stream, stream[1:], strict=False):
        if opening.type != "heading_open":
            continue
        base = slug(_inline_text(inline))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(page: Path) -> list[str]:
    """Every link and image target of ``page``, in order."""
    found: list[str] = []
    for token in tokens(page):
        for child in token.children or []:
            if child.type == "link_open":
                found.append(str(child.attrs.get("href", "")))
            elif child.type == "image":
                found.append(str(child.attrs.get("src", "")))
    return found


def relative_links(page: Path) -> list[tuple[str, Path, str]]:
    """``(link, target, anchor)`` for every link of ``page`` into this repository."""
    found: list[tuple[str, Path, str]] = []
    for link in links(page):
        parts = urlsplit(link)
        if parts.scheme or parts.netloc:
            continue
        target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        found.append((link, target, unquote(parts.fragment)))
    return found


def test_readme_is_a_front_door_of_at_most_260_lines() -> None:
    """The README stays short: the detail lives in docs/, one page per topic."""
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (at most {MAX_README_LINES}): move detail to a page "
        "under docs/ and link it from the README and docs/README.md"
    )


def test_the_pages_have_links_to_check() -> None:
    """The link checks below see the README's links (a parser that found none would pass)."""
    targets = {target for _, target, _ in relative_links(README)}
    assert INDEX in targets
    assert DOCS / "how-it-works.md" in targets


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_relative_link_reaches_a_file_of_the_repository(page: Path) -> None:
    """Each relative link of a page names a file or folder that exists, inside the repository."""
    broken = [
        link
        for link, target, _ in relative_links(page)
        if not target.is_relative_to(ROOT) or not target.exists()
    ]
    assert broken == [], f"{page.relative_to(ROOT)}: links to nothing: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_anchor_names_a_heading_of_its_page(page: Path) -> None:
    """Each ``#anchor`` into a markdown page names one of that page's headings."""
    broken = [
        link
        for link, target, anchor in relative_links(page)
        if anchor and target.suffix == ".md" and target.exists() and anchor not in anchors(target)
    ]
    assert broken == [], f"{page.relative_to(ROOT)}: anchors that name no heading: {broken}"


def test_every_page_under_docs_is_in_the_index() -> None:
    """docs/README.md lists every page directly under docs/, so none is left unreachable."""
    listed = {target for _, target, _ in relative_links(INDEX)}
    pages = {page.resolve() for page in DOCS.glob("*.md")} - {INDEX.resolve()}
    missing = sorted(str(page.relative_to(ROOT)) for page in pages - listed)
    assert missing == [], f"pages missing from docs/README.md: {missing}"
