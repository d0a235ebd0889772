"""The Python examples in each library's README run as written (against the installed libs)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [
    pytest.param(readme.parent.name, code, id=f"{readme.parent.name}-{index}")
    for readme in sorted((ROOT / "libs").glob("*/README.md"))
    for index, code in enumerate(
        re.findall(r"^```python\n(.*?)^```", readme.read_text(encoding="utf-8"), re.S | re.M)
    )
]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


@pytest.mark.parametrize(("lib", "code"), EXAMPLES)
def test_readme_example_runs(lib: str, code: str, tmp_path: Path) -> None:
    if not _importable(f"isthmus.{lib}"):
        pytest.skip(f"isthmus.{lib} is not installed here (nox -s tests installs it)")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"libs/{lib}/README.md example failed:\n{proc.stderr}"
