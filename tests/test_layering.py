"""The star rule checker (tools/layering.py) on the real tree and on planted violations.

A temporary copy of the tree is built for each planted test: libs/buffer (src + pyproject) plus a
fake second library ``libs/alpha`` that depends on isthmus-buffer and imports isthmus.buffer.
The clean copy must pass; each planted violation must fail and name its culprit.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import layering

needs_importlinter = pytest.mark.skipif(
    importlib.util.find_spec("importlinter") is None or layering.find_lint_imports() is None,
    reason="import-linter is not installed (nox -s layering installs it)",
)

ALPHA_PYPROJECT = """\
[project]
name = "isthmus-alpha"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = [{deps}]
"""


def _write_lib(
    root: Path, lib: str, deps: str = '"isthmus-buffer>=0.1"', code: str = "import isthmus.buffer\n"
) -> Path:
    folder = root / "libs" / lib
    pkg = folder / "src" / "isthmus" / lib
    pkg.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        ALPHA_PYPROJECT.replace("isthmus-alpha", f"isthmus-{lib}").format(deps=deps)
    )
    (pkg / "__init__.py").write_text(code)
    return pkg / "__init__.py"


@pytest.fixture
def tree(tmp_path: Path, root: Path) -> Path:
    """A clean copy: libs/buffer (src + pyproject) and a well-behaved fake lib, libs/alpha."""
    buffer = tmp_path / "libs" / "buffer"
    shutil.copytree(
        root / "libs" / "buffer" / "src",
        buffer / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.so"),
    )
    shutil.copy2(root / "libs" / "buffer" / "pyproject.toml", buffer / "pyproject.toml")
    _write_lib(tmp_path, "alpha")
    return tmp_path


def _buffer_module(tree: Path) -> tuple[str, Path]:
    """A real module of the buffer copy to plant imports in (name, path)."""
    pkg = tree / "libs" / "buffer" / "src" / "isthmus" / "buffer"
    candidates = sorted(
        p for p in pkg.glob("*.py") if p.name not in {"__init__.py", "_version.py"}
    ) or [pkg / "_version.py"]
    path = candidates[0]
    return f"isthmus.buffer.{path.stem}", path


def _plant(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}  # planted\n")


def _cli(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(Path(layering.__file__)), "--root", str(tree), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _add_to_dependencies(pyproject: Path, requirement: str, extra: str | None = None) -> None:
    """Add ``requirement`` to [project] dependencies, or to optional extra ``extra``."""
    text = pyproject.read_text()
    if extra is None:
        key = "dependencies = ["
    else:
        key = f"{extra} = ["
        if extra not in tomllib.loads(text)["project"].get("optional-dependencies", {}):
            header = "[project.optional-dependencies]\n"
            if header not in text:
                text += "\n" + header
            text = text.replace(header, f"{header}{key}]\n", 1)
    assert key in text
    text = text.replace(key, f'{key}"{requirement}", ', 1)
    pyproject.write_text(text)
    tomllib.loads(text)  # still valid TOML


# --- the real tree --------------------------------------------------------------------------


def test_real_tree_static_checks_pass(root: Path, libs: list[str]) -> None:
    assert "buffer" in libs
    assert layering.check_namespace(root) == []
    assert layering.check_pyprojects(root) == []
    assert layering.check_ast(root) == []


@needs_importlinter
def test_real_tree_import_linter_passes(root: Path) -> None:
    assert layering.check_importlinter(root) == []


@needs_importlinter
def test_real_tree_cli_passes(root: Path) -> None:
    proc = _cli(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "layering: OK" in proc.stdout


def test_root_pyproject_contracts_in_step(root: Path, libs: list[str]) -> None:
    """[tool.importlinter] in the root pyproject is what tools/layering.py generates."""
    data = tomllib.loads((root / "pyproject.toml").read_text())
    assert data["tool"]["importlinter"] == layering.importlinter_config(libs), (
        "regenerate with: python tools/layering.py --print-contracts"
    )


# --- the clean copy -------------------------------------------------------------------------


def test_clean_copy_passes_static(tree: Path) -> None:
    assert layering.discover_libs(tree) == ["alpha", "buffer"]
    assert layering.run_checks(tree, import_linter=False) == []


@needs_importlinter
def test_clean_copy_passes_import_linter(tree: Path) -> None:
    assert layering.check_importlinter(tree) == []
    proc = _cli(tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- planted imports ------------------------------------------------------------------------


@needs_importlinter
def test_planted_sibling_import_fails_both_checks(tree: Path) -> None:
    module, path = _buffer_module(tree)
    _plant(path, "import isthmus.alpha")

    ast_hits = layering.check_ast(tree)
    assert [v.where.split()[0] for v in ast_hits] == [module]
    assert "isthmus.alpha" in ast_hits[0].message

    linter_hits = layering.check_importlinter(tree)
    assert linter_hits, "import-linter missed the planted import"
    assert {v.where for v in linter_hits} == {module}
    assert all("isthmus.alpha" in v.message for v in linter_hits)

    proc = _cli(tree)
    assert proc.returncode == 1
    assert module in proc.stdout
    assert "[ast]" in proc.stdout
    assert "[import-linter]" in proc.stdout


@pytest.mark.parametrize(
    "statement",
    [
        "import isthmus.alpha",
        "import isthmus.alpha.deep as deep",
        "from isthmus import alpha",
        "from isthmus.alpha import thing",
        "from .. import alpha",
        "from ..alpha.deep import thing",
        "import importlib; importlib.import_module('isthmus.alpha')",
        "if False:\n    import isthmus.alpha",
    ],
)
def test_planted_import_forms_fail_ast(tree: Path, statement: str) -> None:
    module, path = _buffer_module(tree)
    _plant(path, statement)
    hits = layering.check_ast(tree)
    assert len(hits) == 1, hits
    assert hits[0].where.startswith(module + " ")
    assert "isthmus.alpha" in hits[0].message


def test_sibling_import_between_upper_libs_fails(tree: Path) -> None:
    _write_lib(tree, "beta", code="from isthmus.alpha import x\n")
    hits = layering.check_ast(tree)
    assert [v.where.split()[0] for v in hits] == ["isthmus.beta"]


def test_library_importing_examples_fails(tree: Path) -> None:
    _, path = _buffer_module(tree)
    _plant(path, "from examples.showcase import main")
    hits = layering.check_ast(tree)
    assert len(hits) == 1
    assert "examples" in hits[0].message


def test_wire_is_sans_io(tree: Path) -> None:
    init = _write_lib(tree, "wire", code="import isthmus.buffer\n")
    assert layering.check_ast(tree) == []
    init.write_text("import isthmus.buffer\nimport asyncio\nfrom socket import socket\n")
    hits = layering.check_ast(tree)
    assert len(hits) == 2
    assert all(v.where.startswith("isthmus.wire ") for v in hits)


@needs_importlinter
def test_wire_is_sans_io_import_linter(tree: Path) -> None:
    init = _write_lib(tree, "wire", code="import isthmus.buffer\n")
    # isthmus.buffer itself may use asyncio/trio; that does not make wire do I/O.
    assert layering.check_importlinter(tree) == []
    init.write_text("import isthmus.buffer\nimport selectors\n")
    hits = layering.check_importlinter(tree)
    assert [v.where for v in hits] == ["isthmus.wire"]
    assert "selectors" in hits[0].message


def test_namespace_init_fails(tree: Path) -> None:
    (tree / "libs" / "alpha" / "src" / "isthmus" / "__init__.py").write_text("")
    hits = layering.run_checks(tree, import_linter=False)
    assert [v.check for v in hits] == ["namespace"]


# --- planted dependencies -------------------------------------------------------------------


@pytest.mark.parametrize("extra", [None, "accel", "everything"])
def test_planted_sibling_dependency_fails(tree: Path, extra: str | None) -> None:
    pyproject = tree / "libs" / "buffer" / "pyproject.toml"
    _add_to_dependencies(pyproject, "isthmus-alpha>=0.1", extra)
    hits = layering.check_pyprojects(tree)
    assert len(hits) == 1, hits
    assert hits[0].where == "libs/buffer/pyproject.toml"
    assert "isthmus-alpha" in hits[0].message
    proc = _cli(tree, "--no-import-linter")
    assert proc.returncode == 1
    assert "libs/buffer/pyproject.toml" in proc.stdout


def test_lib_missing_buffer_dependency_fails(tree: Path) -> None:
    pyproject = tree / "libs" / "alpha" / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"isthmus-buffer>=0.1"', '"numpy"'))
    hits = layering.check_pyprojects(tree)
    assert len(hits) == 1
    assert hits[0].where == "libs/alpha/pyproject.toml"
    assert "must depend on isthmus-buffer" in hits[0].message


def test_buffer_only_in_an_extra_is_not_enough(tree: Path) -> None:
    pyproject = tree / "libs" / "alpha" / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('"isthmus-buffer>=0.1"', "")
        + '\n[project.optional-dependencies]\nfast = ["isthmus-buffer[accel]"]\n'
    )
    hits = layering.check_pyprojects(tree)
    assert [h.where for h in hits] == ["libs/alpha/pyproject.toml"]


def test_upper_lib_sibling_dependency_fails(tree: Path) -> None:
    _write_lib(tree, "beta", deps='"isthmus-buffer", "isthmus_Alpha[x]>=1"')
    hits = layering.check_pyprojects(tree)
    assert [h.where for h in hits] == ["libs/beta/pyproject.toml"]
    assert "isthmus_Alpha" in hits[0].message


def test_accel_only_through_buffer(tree: Path) -> None:
    _write_lib(tree, "beta", deps='"isthmus-buffer", "isthmus-buffer-accel"')
    hits = layering.check_pyprojects(tree)
    assert [h.where for h in hits] == ["libs/beta/pyproject.toml"]
    assert "isthmus-buffer[accel]" in hits[0].message


def test_buffer_may_name_its_accel_and_itself(tree: Path) -> None:
    pyproject = tree / "libs" / "buffer" / "pyproject.toml"
    _add_to_dependencies(pyproject, "isthmus-buffer[accel,trio]", "all")
    assert layering.check_pyprojects(tree) == []


def test_requirement_name_parsing() -> None:
    assert layering.requirement_name("isthmus_Buffer[accel] >=0.1; python_version>'3'") == (
        "isthmus-buffer"
    )
    assert layering.requirement_name("isthmus.buffer") == "isthmus-buffer"
