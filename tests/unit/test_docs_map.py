"""docs/testing.md maps every section of the pages that make promises to tests that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTING_PAGE = REPO / "docs" / "testing.md"
MAP_HEADING = "## What proves each promise"


def promise_map() -> dict[str, dict[str, str]]:
    """{page: {section: the table cell naming its tests}}, from docs/testing.md."""
    text = TESTING_PAGE.read_text()
    assert MAP_HEADING in text, f"{TESTING_PAGE} has no {MAP_HEADING!r} section"
    mapping: dict[str, dict[str, str]] = {}
    page = None
    for line in text.split(MAP_HEADING, 1)[1].splitlines():
        if line.startswith("## "):
            break
        if line.startswith("### "):
            page = line[4:].strip()
            mapping[page] = {}
        elif page and line.startswith("| ") and not line.startswith(("| Section", "|---")):
            section, cell = (part.strip() for part in line.strip().strip("|").split("|", 1))
            mapping[page][section] = cell
    return mapping


MAP = promise_map()


def sections(page: str) -> list[str]:
    """The page's ``##`` headings, outside code blocks."""
    found, fenced = [], False
    for line in (REPO / "docs" / page).read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            found.append(line[3:].strip())
    return found


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test_")
    }


def test_the_map_covers_the_pages_that_make_promises():
    assert set(MAP) == {
        "consuming.md",
        "errors.md",
        "flow-control.md",
        "migrating-fedora-messaging.md",
        "observability.md",
        "publishing.md",
        "reliability.md",
        "testing-consumers.md",
    }


@pytest.mark.parametrize("page", sorted(MAP))
def test_every_section_of_the_page_is_mapped_and_nothing_else(page):
    """A section added to the page fails here until docs/testing.md names its tests."""
    assert list(MAP[page]) == sections(page)


@pytest.mark.parametrize("page", sorted(MAP))
def test_every_mapped_test_exists_and_every_section_names_one(page):
    for section, cell in MAP[page].items():
        named = re.findall(r"`([^`]+::[^`]+)`", cell)
        if not named:
            assert cell.startswith("guidance"), (page, section, cell)
            continue
        for each in named:
            path, name = each.split("::")
            assert name in defined_tests(REPO / path), f"{page}, {section!r}: no test {each}"
