"""Sphinx configuration for fedmq's documentation.

Pages are Markdown (MyST); the API reference is generated from the
docstrings, which are Google style. Build with ``make docs``, which treats
every warning as an error, as CI does.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.writers.manpage import ManualPageTranslator

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Document the checkout these docs sit in, even if another fedmq is installed.
sys.path.insert(0, str(ROOT))

import fedmq  # noqa: E402 - needs the path above

project = "fedmq"
author = "the fedmq authors"
copyright = "the fedmq authors"
release = fedmq.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# "Heading text" anchors, so pages can link to [a key](configuration.md#qos).
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"members": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections become field lists: dataclass fields are also class
# attributes, and documenting them twice is a duplicate-object warning.
napoleon_use_ivar = True

html_theme = "alabaster"
html_title = f"fedmq {release}"

# `sphinx-build -b man docs docs/_build/man` writes fedmq.1, the command
# (from cli.md), and fedmq.7, the library.
man_pages = [
    ("cli", "fedmq", "run and feed fedmq consumers on RabbitMQ", [author], 1),
    ("man/fedmq", "fedmq", "run message consumers on RabbitMQ from Python", [author], 7),
]

# The changelog page shows CHANGELOG.md once towncrier has written one at a
# release; until then it explains where the unreleased entries are.
CHANGELOG = ROOT / "CHANGELOG.md"


def _include_changelog(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname == "changelog" and CHANGELOG.exists():
        source[0] = "# Changelog\n\n```{include} ../CHANGELOG.md\n```\n"


class _ManPageTranslator(ManualPageTranslator):
    """Links to other pages show only their words in a manual page.

    docutils would write "words <>" for a link within the documentation. It
    binds its reference handlers per instance, so they are replaced here.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._visit_external_reference = self.visit_reference
        self.visit_reference = self._visit_any_reference  # type: ignore[method-assign]

    def _visit_any_reference(self, node: nodes.reference) -> None:
        if node.get("refuri", "").startswith(("http:", "https:", "mailto:", "ftp:")):
            self._visit_external_reference(node)
            return
        self.visit_Text(node)  # type: ignore[arg-type]
        raise nodes.SkipNode


def setup(app: Sphinx) -> None:
    app.set_translator("man", _ManPageTranslator)
    app.connect("source-read", _include_changelog)
    # Rebuild the changelog page when CHANGELOG.md appears or changes.
    if CHANGELOG.exists():
        app.connect("env-get-outdated", lambda *_: ["changelog"])
