"""Helpers for tests that need a program installed (espeak-ng, Graphviz's dot)."""

from __future__ import annotations

import os
import shutil

import pytest


def need_tool(name: str) -> None:
    """Skip without the program ``name``; CI sets ISTHMUS_REQUIRE_TOOLS=1 to make that a failure."""
    if shutil.which(name) is None:
        if os.environ.get("ISTHMUS_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{name} is required (ISTHMUS_REQUIRE_TOOLS=1) but not installed")
        pytest.skip(f"{name} is not installed")
