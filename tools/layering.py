#!/usr/bin/env python3
"""Enforce Isthmus's star rule.

Every library under ``libs/<lib>`` is a separate distribution ``isthmus-<lib>`` importing as
``isthmus.<lib>``. The rule:

* every library depends on ``isthmus-buffer`` and on no sibling library;
* ``isthmus.buffer`` depends on, and imports, no sibling (its native companion
  ``isthmus-buffer-accel`` is the only other ``isthmus-*`` distribution it may name);
* ``isthmus.wire`` additionally imports no ``socket``, ``asyncio``, ``trio``, ``selectors``,
  ``threading``, ``multiprocessing`` or ``concurrent`` (it is sans-IO);
* libraries never import the examples or the benchmarks.

Three checks, each reporting every violation it finds:

``pyproject``
    the declared dependencies (required and optional) of each ``libs/*/pyproject.toml``;
``ast``
    a fast, dependency-free scan of ``import`` statements under ``libs/*/src``;
``import-linter``
    contracts generated for the libraries present, run with ``lint-imports`` (needs the
    ``import-linter`` distribution; skip with ``--no-import-linter``).

Usage::

    python tools/layering.py [--root DIR] [--no-import-linter] [--print-contracts]

Exit status: 0 when the tree keeps the rule, 1 on a violation, 2 when a check could not run.
The module is importable too (``tests/test_layering.py`` drives it on planted trees).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_LIB = "buffer"
NAMESPACE = "isthmus"
# isthmus-buffer's optional native core: a companion of the base library, not a sibling.
BASE_COMPANIONS = frozenset({"isthmus-buffer-accel"})
# Libraries that must stay sans-IO, and the modules that would make them do I/O.
SANS_IO: dict[str, tuple[str, ...]] = {
    "wire": ("asyncio", "concurrent", "multiprocessing", "selectors", "socket", "threading", "trio")
}
# Top-level packages of the repository that no library may import.
NOT_FOR_LIBRARIES = ("bench", "examples")

DEFAULT_ROOT = Path(__file__).resolve().parent.parent


class LayeringToolError(RuntimeError):
    """A check could not run (as opposed to finding a violation)."""


@dataclass(frozen=True, order=True)
class Violation:
    """One broken rule: which check found it, where, and what is wrong."""

    check: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.where}: {self.message}"


# --------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------


def discover_libs(root: Path) -> list[str]:
    """Names of the libraries under ``root/libs`` (folders holding a ``pyproject.toml``)."""
    libs_dir = root / "libs"
    if not libs_dir.is_dir():
        return []
    return sorted(
        p.name for p in libs_dir.iterdir() if p.is_dir() and (p / "pyproject.toml").is_file()
    )


def src_dirs(root: Path, libs: Iterable[str]) -> list[Path]:
    return [root / "libs" / lib / "src" for lib in libs]


def dist_name(lib: str) -> str:
    return f"{NAMESPACE}-{lib}"


def _normalize(name: str) -> str:
    """PEP 503 normalisation of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def requirement_name(requirement: str) -> str:
    """Distribution name of a PEP 508 requirement string (normalised)."""
    match = _REQ_NAME.match(requirement)
    if match is None:
        raise LayeringToolError(f"cannot parse requirement {requirement!r}")
    return _normalize(match.group(1))


# --------------------------------------------------------------------------------------------
# check 1: declared dependencies
# --------------------------------------------------------------------------------------------


def check_pyprojects(root: Path, libs: Sequence[str] | None = None) -> list[Violation]:
    """Each lib names isthmus-buffer (unless it is buffer) and no other isthmus-* sibling."""
    libs = discover_libs(root) if libs is None else list(libs)
    violations: list[Violation] = []
    base = dist_name(BASE_LIB)
    for lib in libs:
        path = root / "libs" / lib / "pyproject.toml"
        where = path.relative_to(root).as_posix()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            violations.append(Violation("pyproject", where, f"unreadable: {exc}"))
            continue
        project: dict[str, Any] = data.get("project", {})
        own = dist_name(lib)
        if _normalize(str(project.get("name", ""))) != own:
            violations.append(
                Violation(
                    "pyproject",
                    where,
                    f"project name is {project.get('name')!r}, expected {own!r}",
                )
            )
        if "dependencies" in project.get("dynamic", []):
            violations.append(
                Violation("pyproject", where, "dependencies must be static, not dynamic")
            )
        if "optional-dependencies" in project.get("dynamic", []):
            violations.append(
                Violation("pyproject", where, "optional-dependencies must be static, not dynamic")
            )

        declared: list[tuple[str, str]] = [
            ("dependencies", req) for req in project.get("dependencies", [])
        ]
        for extra, reqs in sorted(project.get("optional-dependencies", {}).items()):
            declared.extend((f"optional-dependencies.{extra}", req) for req in reqs)

        required_names = {requirement_name(req) for req in project.get("dependencies", [])}
        if lib != BASE_LIB and base not in required_names:
            violations.append(
                Violation(
                    "pyproject",
                    where,
                    f"{own} must depend on {base} (in [project] dependencies)",
                )
            )

        for section, req in declared:
            name = requirement_name(req)
            if not name.startswith(f"{NAMESPACE}-") or name == own:
                continue  # not an Isthmus distribution, or a self-reference like own[extra]
            if lib == BASE_LIB:
                if name in BASE_COMPANIONS:
                    continue
                violations.append(
                    Violation(
                        "pyproject",
                        where,
                        f"{own} may depend on no sibling library, but {section} names {req!r}",
                    )
                )
            elif name == base:
                continue
            elif name in BASE_COMPANIONS:
                violations.append(
                    Violation(
                        "pyproject",
                        where,
                        f"{section} names {req!r}: depend on {base}[accel] instead",
                    )
                )
            else:
                violations.append(
                    Violation(
                        "pyproject",
                        where,
                        f"{own} may depend on {base} only, but {section} names sibling {req!r}",
                    )
                )
    return violations


# --------------------------------------------------------------------------------------------
# check 2: AST scan of imports
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportSite:
    module: str  # importing module, e.g. isthmus.buffer.ring
    path: Path
    line: int
    target: str  # imported module, absolute, e.g. isthmus.alpha.x


def _module_name(src: Path, path: Path) -> tuple[str, bool]:
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(package):
        base: list[str] = []  # beyond the top: an ImportError at run time; keep what we can
    else:
        base = package[: len(package) - (level - 1)]
    if target:
        base = [*base, *target.split(".")]
    return ".".join(base)


def _string_import_target(node: ast.Call) -> str | None:
    """``importlib.import_module("x")`` / ``__import__("x")`` with a literal name."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in {"import_module", "__import__"} or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


def iter_imports(src: Path) -> Iterator[ImportSite]:
    """Every import made by the modules under ``src`` (a ``libs/<lib>/src`` folder)."""
    for path in sorted(src.rglob("*.py*")):
        if path.suffix not in {".py", ".pyi"} or "__pycache__" in path.parts:
            continue
        module, is_package = _module_name(src, path)
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except SyntaxError as exc:
            raise LayeringToolError(f"cannot parse {path}: {exc}") from exc
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield ImportSite(module, path, node.lineno, alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = _resolve_relative(module, is_package, node.level, node.module)
                else:
                    base = node.module or ""
                # `from isthmus import alpha` imports the module isthmus.alpha.
                for alias in node.names:
                    if alias.name == "*":
                        yield ImportSite(module, path, node.lineno, base)
                    else:
                        yield ImportSite(module, path, node.lineno, f"{base}.{alias.name}")
            elif isinstance(node, ast.Call):
                target = _string_import_target(node)
                if target is not None:
                    yield ImportSite(module, path, node.lineno, target)


def _forbidden_reason(lib: str, target: str) -> str | None:
    parts = target.split(".")
    if parts[0] == NAMESPACE and len(parts) >= 2:
        other = parts[1]
        if other in (lib, BASE_LIB):
            return None
        if lib == BASE_LIB:
            return f"isthmus.{BASE_LIB} may import no sibling library, but imports {target}"
        return (
            f"isthmus.{lib} may import isthmus.{BASE_LIB} and itself only, "
            f"but imports sibling {target}"
        )
    if parts[0] in NOT_FOR_LIBRARIES:
        return f"libraries never import {parts[0]}/, but imports {target}"
    if parts[0] in SANS_IO.get(lib, ()):
        return f"isthmus.{lib} is sans-IO and may not import {parts[0]}, but imports {target}"
    return None


def check_ast(root: Path, libs: Sequence[str] | None = None) -> list[Violation]:
    """Static scan of libs/*/src for forbidden imports (direct imports only)."""
    libs = discover_libs(root) if libs is None else list(libs)
    violations: list[Violation] = []
    for lib in libs:
        src = root / "libs" / lib / "src"
        if not src.is_dir():
            continue
        for site in iter_imports(src):
            reason = _forbidden_reason(lib, site.target)
            if reason is not None:
                where = f"{site.module} ({site.path.relative_to(root).as_posix()}:{site.line})"
                violations.append(Violation("ast", where, reason))
    return violations


def check_namespace(root: Path, libs: Sequence[str] | None = None) -> list[Violation]:
    """``isthmus`` is a PEP 420 namespace: no lib may ship ``src/isthmus/__init__.py``."""
    libs = discover_libs(root) if libs is None else list(libs)
    violations = []
    for lib in libs:
        for name in ("__init__.py", "__init__.pyi"):
            init = root / "libs" / lib / "src" / NAMESPACE / name
            if init.exists():
                violations.append(
                    Violation(
                        "namespace",
                        init.relative_to(root).as_posix(),
                        "isthmus is a PEP 420 namespace package: delete this file",
                    )
                )
    return violations


# --------------------------------------------------------------------------------------------
# check 3: import-linter
# --------------------------------------------------------------------------------------------


def importlinter_config(libs: Sequence[str]) -> dict[str, Any]:
    """The import-linter configuration (as ``[tool.importlinter]`` data) for ``libs``."""
    libs = sorted(libs)
    packages = [f"{NAMESPACE}.{lib}" for lib in libs]
    contracts: list[dict[str, Any]] = []
    for lib in libs:
        siblings = [f"{NAMESPACE}.{o}" for o in libs if o not in (lib, BASE_LIB)]
        if not siblings:
            continue
        allowed = "no sibling" if lib == BASE_LIB else f"no sibling but {NAMESPACE}.{BASE_LIB}"
        contracts.append(
            {
                "id": f"{lib}-imports-no-sibling",
                "name": f"{NAMESPACE}.{lib} imports {allowed}",
                "type": "forbidden",
                "source_modules": [f"{NAMESPACE}.{lib}"],
                "forbidden_modules": siblings,
            }
        )
    for lib in libs:
        if lib in SANS_IO:
            contracts.append(
                {
                    "id": f"{lib}-sans-io",
                    "name": f"{NAMESPACE}.{lib} is sans-IO",
                    "type": "forbidden",
                    "source_modules": [f"{NAMESPACE}.{lib}"],
                    "forbidden_modules": list(SANS_IO[lib]),
                    # What isthmus.buffer imports is not the wire code's doing.
                    "allow_indirect_imports": True,
                }
            )
    if packages:
        contracts.append(
            {
                "id": "libraries-import-no-examples",
                "name": "libraries never import examples or benchmarks",
                "type": "forbidden",
                "source_modules": packages,
                "forbidden_modules": list(NOT_FOR_LIBRARIES),
            }
        )
    return {
        # The portions of the `isthmus` namespace are the root packages.
        "root_packages": packages,
        "include_external_packages": True,
        "contracts": contracts,
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def importlinter_toml(libs: Sequence[str]) -> str:
    """``importlinter_config`` as the TOML text of a ``[tool.importlinter]`` table."""
    config = importlinter_config(libs)
    lines = ["[tool.importlinter]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in config.items() if k != "contracts"]
    for contract in config["contracts"]:
        lines += ["", "[[tool.importlinter.contracts]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in contract.items()]
    return "\n".join(lines) + "\n"


def find_lint_imports() -> str | None:
    """Path of the ``lint-imports`` script beside this interpreter, or on PATH."""
    scripts = Path(sys.executable).parent
    for candidate in (scripts / "lint-imports", scripts / "lint-imports.exe"):
        if candidate.is_file():
            return str(candidate)
    return shutil.which("lint-imports")


_NOT_ALLOWED = re.compile(r"^(\S+) is not allowed to import (\S+):$")
_CHAIN_LINK = re.compile(r"^(-?)\s*(\S+) -> (\S+) \(([^)]*)\)$")


def parse_broken_chains(output: str) -> list[Violation]:
    """Turn lint-imports' report of broken contracts into violations, one per import chain."""
    violations: list[Violation] = []
    rule = ""
    chain: list[tuple[str, str, str]] = []

    def flush() -> None:
        if chain:
            first = chain[0][0]
            path = " -> ".join([first, *(f"{imported} ({lines})" for _, imported, lines in chain)])
            violations.append(Violation("import-linter", first, f"{rule}: {path}"))
            chain.clear()

    for raw in output.splitlines():
        line = raw.strip()
        header = _NOT_ALLOWED.match(line)
        if header:
            flush()
            rule = f"{header.group(1)} is not allowed to import {header.group(2)}"
            continue
        link = _CHAIN_LINK.match(line)
        if link:
            starts_chain, importer, imported, lines = link.groups()
            if starts_chain:
                flush()
            chain.append((importer, imported, lines))
    flush()
    return violations


def check_importlinter(root: Path, libs: Sequence[str] | None = None) -> list[Violation]:
    """Run the generated contracts through ``lint-imports``."""
    libs = discover_libs(root) if libs is None else list(libs)
    if not libs:
        return []
    exe = find_lint_imports()
    if exe is None:
        raise LayeringToolError(
            "lint-imports not found: `pip install import-linter`, or pass --no-import-linter"
        )
    env = dict(os.environ)
    paths = [str(p) for p in src_dirs(root, libs)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    # lint-imports prints through rich: a wide, colourless console keeps one import per line.
    env.update({"COLUMNS": "1000", "NO_COLOR": "1", "TERM": "dumb"})
    with tempfile.TemporaryDirectory(prefix="isthmus-layering-") as tmp:
        config = Path(tmp) / "importlinter.toml"
        config.write_text(importlinter_toml(libs), encoding="utf-8")
        proc = subprocess.run(
            [exe, "--config", str(config), "--no-cache", "--no-logo"],
            cwd=tmp,  # keep the repository itself off sys.path
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode == 0:
        return []
    chains = parse_broken_chains(output)
    if not chains:
        raise LayeringToolError(f"lint-imports failed (exit {proc.returncode}):\n{output}")
    return chains


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------


def run_checks(root: Path, *, import_linter: bool = True) -> list[Violation]:
    libs = discover_libs(root)
    violations = [
        *check_namespace(root, libs),
        *check_pyprojects(root, libs),
        *check_ast(root, libs),
    ]
    if import_linter:
        violations += check_importlinter(root, libs)
    return violations


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check Isthmus's star rule (see module doc).")
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help="repository root (default: this repo)"
    )
    parser.add_argument(
        "--no-import-linter",
        dest="import_linter",
        action="store_false",
        help="skip the import-linter contracts (pyproject and AST checks only)",
    )
    parser.add_argument(
        "--print-contracts",
        action="store_true",
        help="print the [tool.importlinter] table for the libraries present and exit",
    )
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    libs = discover_libs(root)
    if args.print_contracts:
        sys.stdout.write(importlinter_toml(libs))
        return 0
    if not libs:
        print(f"layering: no libraries under {root / 'libs'}", file=sys.stderr)
        return 2
    try:
        violations = run_checks(root, import_linter=args.import_linter)
    except LayeringToolError as exc:
        print(f"layering: cannot check: {exc}", file=sys.stderr)
        return 2
    checks = "namespace, pyproject, ast" + (", import-linter" if args.import_linter else "")
    if violations:
        print(f"layering: the star rule is broken ({len(violations)} violation(s)):")
        for violation in sorted(violations):
            print(f"  {violation}")
        print(
            "Every isthmus library may depend on isthmus-buffer only; isthmus.buffer depends on "
            "no sibling; isthmus.wire imports no socket/asyncio/trio/selectors/threads. "
            "See docs/architecture.md."
        )
        return 1
    print(f"layering: OK ({len(libs)} libraries: {', '.join(libs)}; checks: {checks})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
