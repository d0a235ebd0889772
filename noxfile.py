"""Nox sessions for the Isthmus monorepo.

``nox`` runs the default sessions, which are what CI runs (``bash .ci/run``)::

    lint  layering  typecheck  tests  lib-<name> (one per libs/* folder)  docs

On demand::

    nox -s bench -- buffer       # python bench/run.py buffer
    nox -s fuzz                  # a million random and mutated inputs into isthmus-wire
    nox -s ucx                   # isthmus-transport's UCX backend, with ucxx-cu12 installed
    nox -s ray                   # isthmus-pipeline's Ray executor against a local Ray
    nox -s demo                  # python examples/showcase/showcase.py

The native core (``native/buffer-accel``) is compiled once into ``.nox/_wheels`` and that
wheel is installed wherever it is wanted; it is rebuilt only when its sources change.
"""

from __future__ import annotations

import hashlib
import shutil
import tomllib
import zipfile
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent
LIBS_DIR = ROOT / "libs"
NATIVE_DIR = ROOT / "native" / "buffer-accel"
WHEELHOUSE = ROOT / ".nox" / "_wheels"

# Tool versions are pinned so that a new release cannot turn CI red on its own.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"
WORKSPACE_TEST_DEPS = (
    "pytest>=8",
    "pytest-timeout",
    "import-linter>=2.1",
    "nox",
    "rich>=13",
    "websockets>=13",
)
DOCS_DEPS = ("sphinx>=7", "myst-parser>=3", "furo")


def discover_libs() -> list[str]:
    """Every ``libs/<name>`` folder holding a ``pyproject.toml``."""
    if not LIBS_DIR.is_dir():
        return []
    return sorted(
        p.name for p in LIBS_DIR.iterdir() if p.is_dir() and (p / "pyproject.toml").is_file()
    )


LIBS = discover_libs()

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_external_run = True
nox.options.sessions = [
    "lint",
    "layering",
    "typecheck",
    "tests",
    *(f"lib-{lib}" for lib in LIBS),
    "docs",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _lib_project(lib: str) -> dict[str, object]:
    data = tomllib.loads((LIBS_DIR / lib / "pyproject.toml").read_text(encoding="utf-8"))
    project = data.get("project", {})
    assert isinstance(project, dict)
    return project


def _editable_libs(extra: str | None = None) -> list[str]:
    """pip arguments installing every lib editable, with ``extra`` where the lib defines it."""
    args: list[str] = []
    for lib in LIBS:
        extras = _lib_project(lib).get("optional-dependencies", {})
        assert isinstance(extras, dict)
        suffix = f"[{extra}]" if extra and extra in extras else ""
        args += ["-e", f"./{_rel(LIBS_DIR / lib)}{suffix}"]
    return args


def _native_digest() -> str:
    """Hash of the native sources, so the cached wheel is rebuilt only when they change."""
    skip = {"build", "dist", "_skbuild", "__pycache__", ".pytest_cache"}
    digest = hashlib.sha256()
    for path in sorted(NATIVE_DIR.rglob("*")):
        rel = path.relative_to(NATIVE_DIR)
        if not path.is_file() or any(p in skip or p.endswith(".egg-info") for p in rel.parts):
            continue
        digest.update(rel.as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def accel_wheel(session: nox.Session) -> Path:
    """The isthmus-buffer-accel wheel for this session's Python, built once and cached."""
    if not (NATIVE_DIR / "pyproject.toml").is_file():
        session.error(f"{_rel(NATIVE_DIR)} is missing: cannot build isthmus-buffer-accel")
    tag = session.run(
        "python",
        "-c",
        "import sys; print(f'{sys.implementation.cache_tag}')",
        silent=True,
    )
    assert isinstance(tag, str)
    out = WHEELHOUSE / f"buffer-accel-{tag.strip()}-{_native_digest()}"
    wheels = sorted(out.glob("isthmus_buffer_accel-*.whl"))
    if wheels:
        session.log(f"reusing {_rel(wheels[-1])}")
        return wheels[-1]
    for old in WHEELHOUSE.glob(f"buffer-accel-{tag.strip()}-*"):
        shutil.rmtree(old, ignore_errors=True)  # builds of older sources, or an interrupted one
    staging = out.with_name(out.name + ".partial")
    session.log("building isthmus-buffer-accel (C++, about a minute)")
    session.run(
        "python", "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(staging), str(NATIVE_DIR)
    )
    staging.rename(out)
    return sorted(out.glob("isthmus_buffer_accel-*.whl"))[-1]


def install_accel(session: nox.Session) -> None:
    """Install the cached native wheel; forced, as a rebuild keeps the same version number."""
    session.install("--force-reinstall", "--no-deps", str(accel_wheel(session)))


def _requirements(folder: Path, fallback: tuple[str, ...]) -> list[str]:
    """pip arguments for ``folder/requirements.txt`` if it exists, else ``fallback``."""
    requirements = folder / "requirements.txt"
    return ["-r", _rel(requirements)] if requirements.is_file() else list(fallback)


# --------------------------------------------------------------------------------------------
# default sessions (CI)
# --------------------------------------------------------------------------------------------


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repository."""
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def layering(session: nox.Session) -> None:
    """The star rule: tools/layering.py (pyproject, AST, import-linter) and its tests."""
    session.install("import-linter>=2.1", "pytest>=8", "pytest-timeout")
    session.run("python", "tools/layering.py")
    session.run("pytest", "tests/test_layering.py", *session.posargs)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over every library's src/ and the repository tooling."""
    session.install(MYPY, "nox", *_editable_libs("test"))
    srcs = [_rel(LIBS_DIR / lib / "src") for lib in LIBS]
    session.run("mypy", *srcs, "tools/layering.py", "noxfile.py", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Every lib's tests and tests/, once with the native core and once pure Python."""
    install_accel(session)
    session.install(*_editable_libs("test"), *WORKSPACE_TEST_DEPS)
    missing = [lib for lib in LIBS if not (LIBS_DIR / lib / "tests").is_dir()]
    if missing:
        session.error(f"every library must have tests; no tests/ folder in: {', '.join(missing)}")
    runs = (
        ("native", {"ISTHMUS_PUREPYTHON": "0"}),
        ("python", {"ISTHMUS_PUREPYTHON": "1"}),
    )
    for implementation, env in runs:
        session.run(
            "python",
            "-c",
            "import sys, isthmus.buffer as b; print('isthmus.buffer.IMPLEMENTATION =', "
            "b.IMPLEMENTATION); sys.exit(b.IMPLEMENTATION != sys.argv[1])",
            implementation,
            env=env,
        )
        # One pytest per lib: each is a separate distribution with its own conftest.
        # pytest's exit code 5 (no tests collected) fails the session like any other.
        for lib in LIBS:
            session.run("pytest", _rel(LIBS_DIR / lib / "tests"), *session.posargs, env=env)
        session.run("pytest", "tests", *session.posargs, env=env)
    # The browser-side decoder of isthmus-wire, against the same golden vectors.
    # Files, not folders: node 18 and 22 read a folder argument differently.
    js_tests = [_rel(t) for t in sorted(LIBS_DIR.glob("*/js/test/*.test.mjs"))]
    if js_tests:
        if shutil.which("node") is None:
            session.error("node is needed for the JavaScript tests (libs/*/js)")
        session.run("node", "--test", *js_tests, external=True)


def _isolated_lib_tests(session: nox.Session, lib: str) -> None:
    """Build ``lib`` alone, install the wheel with only its declared dependencies and run
    its tests from a temporary folder, so nothing from the source tree is importable."""
    tmp = Path(session.create_tmp()).resolve()
    dist = tmp / "dist"
    workdir = tmp / "run"
    for folder in (dist, workdir):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    # Sibling dependencies can only be isthmus-buffer (the star rule); build it locally too,
    # so the isolated install never fetches a same-named distribution from an index.
    local = {canonicalize_name(f"isthmus-{name}"): name for name in LIBS}
    requires = _lib_project(lib).get("dependencies", [])
    assert isinstance(requires, list)
    names = {canonicalize_name(Requirement(str(req)).name) for req in requires}
    deps = sorted({local[n] for n in names if n in local} - {lib})
    wheels: dict[str, Path] = {}
    for name in [*deps, lib]:
        session.run(
            "python", "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(LIBS_DIR / name)
        )
        (wheels[name],) = dist.glob(f"isthmus_{name}-*.whl")
    with zipfile.ZipFile(wheels[lib]) as zf:
        members = set(zf.namelist())
    if "isthmus/__init__.py" in members:
        session.error(f"{wheels[lib].name} ships isthmus/__init__.py: isthmus must stay PEP 420")
    if f"isthmus/{lib}/py.typed" not in members:
        session.error(f"{wheels[lib].name} lacks isthmus/{lib}/py.typed")

    # --force-reinstall: a reused venv may hold an older build of the same version.
    session.install("--force-reinstall", "--no-deps", *(str(w) for w in wheels.values()))
    extras = _lib_project(lib).get("optional-dependencies", {})
    assert isinstance(extras, dict)
    target = f"{wheels[lib]}[test]" if "test" in extras else str(wheels[lib])
    session.install(*(str(wheels[d]) for d in deps), target)

    shutil.copytree(LIBS_DIR / lib / "tests", workdir / "tests")
    env = {"PYTHONPATH": ""}
    with session.chdir(workdir):
        session.run(
            "python",
            "-c",
            f"import sys, isthmus.{lib} as m; print('testing', m.__file__); "
            "sys.exit('site-packages' not in m.__file__)",
            env=env,
        )
        session.run(
            "pytest",
            "-c",
            str(ROOT / "pyproject.toml"),  # markers, timeout and strictness of the workspace
            "--rootdir",
            str(workdir),
            "-p",
            "no:cacheprovider",
            "tests",
            *session.posargs,
            env=env,
        )


def _make_lib_session(lib: str) -> None:
    def lib_session(session: nox.Session) -> None:
        _isolated_lib_tests(session, lib)

    lib_session.__doc__ = (
        f"isthmus-{lib} alone: wheel, installed with only its declared deps, tests run outside "
        "the tree."
    )
    lib_session.__name__ = f"lib_{lib}"
    nox.session(name=f"lib-{lib}")(lib_session)


for _lib in LIBS:
    _make_lib_session(_lib)


@nox.session
def docs(session: nox.Session) -> None:
    """Sphinx (MyST) with warnings as errors: docs/ -> docs/_build/html."""
    session.install(*DOCS_DEPS, *_editable_libs())
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )


# --------------------------------------------------------------------------------------------
# on-demand sessions
# --------------------------------------------------------------------------------------------


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks: `nox -s bench -- buffer` runs `python bench/run.py buffer`."""
    install_accel(session)
    session.install(
        *_editable_libs(),
        *_requirements(ROOT / "bench", ("iceoryx2", "pyzmq", "rich")),
    )
    session.run("python", "bench/run.py", *(session.posargs or ["buffer"]))


@nox.session(default=False)
def fuzz(session: nox.Session) -> None:
    """Fuzz isthmus-wire's decoder: `nox -s fuzz -- --iterations 1000000 --seed 1`."""
    session.install(*_editable_libs(), "rich>=13")
    args = session.posargs or ["--iterations", "1000000", "--seed", "1"]
    session.run("python", "libs/wire/tests/fuzz_wire.py", *args)


@nox.session(default=False)
def ucx(session: nox.Session) -> None:
    """isthmus-transport over UCX (ucxx-cu12): `pytest -m ucx`, where a missing UCX fails.

    ISTHMUS_REQUIRE_UCX=1 turns the tests' skip-without-ucxx into a failure."""
    session.install(
        "-e",
        f"./{_rel(LIBS_DIR / 'buffer')}",
        "-e",
        f"./{_rel(LIBS_DIR / 'transport')}[ucx,test]",
    )
    session.run(
        "pytest",
        _rel(LIBS_DIR / "transport" / "tests"),
        "-m",
        "ucx",
        *session.posargs,
        env={"ISTHMUS_REQUIRE_UCX": "1"},
    )


@nox.session(default=False)
def ray(session: nox.Session) -> None:
    """isthmus-pipeline's Ray executor against a local Ray: `pytest test_ray.py`.

    ISTHMUS_REQUIRE_RAY=1 turns the tests' skip-without-ray into a failure."""
    session.install(
        "-e",
        f"./{_rel(LIBS_DIR / 'buffer')}",
        "-e",
        f"./{_rel(LIBS_DIR / 'pipeline')}[ray,test]",
    )
    session.run(
        "pytest",
        _rel(LIBS_DIR / "pipeline" / "tests" / "test_ray.py"),
        *session.posargs,
        env={"ISTHMUS_REQUIRE_RAY": "1"},
    )


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """The showcase: every library plus the native core, then examples/showcase/showcase.py."""
    script = ROOT / "examples" / "showcase" / "showcase.py"
    if not script.is_file():
        session.error(f"{_rel(script)} is missing")
    install_accel(session)
    session.install(
        *_editable_libs(),
        *_requirements(ROOT / "examples" / "showcase", ("rich",)),
    )
    session.run("python", _rel(script), *session.posargs)


if __name__ == "__main__":
    nox.main()
