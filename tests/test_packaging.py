"""Every library is packaged the same way, and the workspace tooling covers every library."""

from __future__ import annotations

import configparser
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBS = sorted(p.parent.name for p in (ROOT / "libs").glob("*/pyproject.toml"))
SKIP_DIRS = {".git", ".nox", ".tox", ".venv", "venv", "build", "dist", "node_modules"}


def _toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _version(lib: str) -> str:
    text = (ROOT / "libs" / lib / "src" / "isthmus" / lib / "_version.py").read_text()
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.MULTILINE)
    assert match, f'libs/{lib}: _version.py must set __version__ = "X.Y.Z"'
    return match.group(1)


def test_there_are_libraries() -> None:
    assert "buffer" in LIBS


# --- tox ------------------------------------------------------------------------------------


def _tox() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini", encoding="utf-8")
    return parser


def test_tox_env_list_is_the_libs() -> None:
    env_list = re.split(r"[\s,]+", _tox()["tox"]["env_list"].strip())
    assert sorted(env_list) == LIBS


@pytest.mark.parametrize("lib", LIBS)
def test_tox_env_builds_the_lib_alone(lib: str) -> None:
    tox = _tox()
    env = tox[f"testenv:{lib}"]
    package = env.get("package", tox["testenv"].get("package"))
    assert package == "wheel"
    pkg_env = env["package_env"]
    assert tox[f"testenv:{pkg_env}"]["package_root"].endswith(f"libs/{lib}")
    assert f"libs/{lib}/tests" in env["commands"]
    assert "test" in env.get("extras", tox["testenv"].get("extras", ""))


# --- nox ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nox_sessions() -> dict[str, bool]:
    """Sessions `nox -l` lists, mapped to whether a bare `nox` runs them."""
    if importlib.util.find_spec("nox") is None:
        pytest.skip("nox is not installed in this environment")
    proc = subprocess.run(
        [sys.executable, "-m", "nox", "-l", "-f", str(ROOT / "noxfile.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    sessions = {}
    for line in proc.stdout.splitlines():
        match = re.match(r"^([*-]) (\S+)", line)
        if match:
            sessions[match.group(2)] = match.group(1) == "*"
    return sessions


def test_nox_default_sessions(nox_sessions: dict[str, bool]) -> None:
    for name in ("tests", "layering", "typecheck", "lint", "docs"):
        assert nox_sessions.get(name) is True, f"{name} must be a default nox session"
    for name in ("bench", "demo"):
        assert nox_sessions.get(name) is False, f"{name} must exist and not run by default"


def test_nox_has_an_isolated_session_per_lib(nox_sessions: dict[str, bool]) -> None:
    lib_sessions = sorted(name for name in nox_sessions if name.startswith("lib-"))
    assert lib_sessions == [f"lib-{lib}" for lib in LIBS]
    assert all(nox_sessions[name] for name in lib_sessions), "lib-* sessions run by default"


# --- per-library layout ---------------------------------------------------------------------


@pytest.mark.parametrize("lib", LIBS)
def test_lib_layout(lib: str) -> None:
    folder = ROOT / "libs" / lib
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md"):
        assert (folder / name).is_file(), f"libs/{lib}/{name} is missing"
    pkg = folder / "src" / "isthmus" / lib
    assert (pkg / "__init__.py").is_file()
    assert (pkg / "_version.py").is_file()
    assert (pkg / "py.typed").is_file()
    assert not (folder / "src" / "isthmus" / "__init__.py").exists(), (
        "isthmus is a PEP 420 namespace: no src/isthmus/__init__.py"
    )
    assert (folder / "tests").is_dir(), f"libs/{lib} needs tests/"


@pytest.mark.parametrize("lib", LIBS)
def test_lib_pyproject(lib: str) -> None:
    data = _toml(ROOT / "libs" / lib / "pyproject.toml")
    project = data["project"]
    assert project["name"] == f"isthmus-{lib}"
    assert project["requires-python"] == ">=3.11"
    assert project["dynamic"] == ["version"]
    assert data["tool"]["hatch"]["version"]["path"] == f"src/isthmus/{lib}/_version.py"
    assert data["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/isthmus"]
    assert data["build-system"]["build-backend"] == "hatchling.build"
    assert "test" in project.get("optional-dependencies", {}), "every lib has a `test` extra"
    assert project.get("readme") == "README.md"


@pytest.mark.parametrize("lib", LIBS)
def test_lib_readme_has_install_line(lib: str) -> None:
    readme = (ROOT / "libs" / lib / "README.md").read_text(encoding="utf-8")
    assert f"pip install isthmus-{lib}" in readme


@pytest.mark.parametrize("lib", LIBS)
def test_changelog_has_current_version(lib: str) -> None:
    version = _version(lib)
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", version), version
    changelog = (ROOT / "libs" / lib / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## \[?{re.escape(version)}\]?", changelog, re.MULTILINE), (
        f"libs/{lib}/CHANGELOG.md has no entry for {version}"
    )


def test_no_namespace_init_anywhere() -> None:
    offenders = []
    for path in ROOT.rglob("isthmus/__init__.py"):
        rel = path.relative_to(ROOT)
        if not SKIP_DIRS.intersection(rel.parts):
            offenders.append(rel.as_posix())
    assert offenders == []


# --- workspace ------------------------------------------------------------------------------


def test_root_is_an_unpublished_uv_workspace() -> None:
    data = _toml(ROOT / "pyproject.toml")
    assert data["project"]["name"] == "isthmus-workspace"
    assert data["tool"]["uv"]["package"] is False
    assert data["tool"]["uv"]["workspace"]["members"] == ["libs/*"]
    sources = data["tool"]["uv"]["sources"]
    for lib in LIBS:
        assert sources[f"isthmus-{lib}"] == {"workspace": True}
        assert f"isthmus-{lib}" in data["project"]["dependencies"]


def test_mypy_path_covers_every_lib() -> None:
    mypy = _toml(ROOT / "pyproject.toml")["tool"]["mypy"]
    assert mypy["strict"] is True
    for lib in LIBS:
        assert f"$MYPY_CONFIG_FILE_DIR/libs/{lib}/src" in mypy["mypy_path"]


def _code_blocks(markdown: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"```[a-z]*\n(.*?)```", markdown, re.DOTALL)]


def test_readme_set_up_commands() -> None:
    blocks = _code_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "python -m pip install nox && nox -s demo" in blocks
    assert "python -m pip install nox && nox" in blocks


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    match = re.search(r"^TEST_CMD='([^']+)'$", ci, re.MULTILINE)
    assert match, ".ci/run must define TEST_CMD='...'"
    blocks = _code_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert match.group(1) in blocks
    assert ci.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in ci
