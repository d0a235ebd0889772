"""Sphinx configuration for the Isthmus documentation (MyST Markdown)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

project = "Isthmus"
author = "The Isthmus developers"
copyright = "the Isthmus developers"
_version_file = ROOT / "libs" / "buffer" / "src" / "isthmus" / "buffer" / "_version.py"
_match = re.search(r'__version__\s*=\s*"([^"]+)"', _version_file.read_text())
release = version = _match.group(1) if _match else "0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# The API pages document the installed isthmus.buffer (nox -s docs installs every lib).
# No intersphinx: the docs build must not need the network.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True

html_theme = "furo" if importlib.util.find_spec("furo") else "alabaster"
html_title = f"Isthmus {release}"
