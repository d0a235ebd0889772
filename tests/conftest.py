"""Shared fixtures for the workspace tests (tests/ at the repository root)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# tools/ is a folder of scripts, not a package: make tools/layering.py importable as `layering`.
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))


@pytest.fixture(scope="session")
def root() -> Path:
    """The repository root."""
    return ROOT


@pytest.fixture(scope="session")
def libs() -> list[str]:
    """Names of the libraries under libs/."""
    import layering

    return layering.discover_libs(ROOT)
