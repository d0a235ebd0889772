"""The fuzzer (fuzz_wire.py) in-process: 20000 random and mutated inputs with a fixed seed raise
nothing but ProtocolError and reach every error code; the command line reports and fails the
way ``nox -s fuzz`` relies on."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from isthmus.wire import ErrorCode, FrameDecoder

HERE = Path(__file__).resolve().parent
ITERATIONS = 20_000
SEED = 1


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("fuzz_wire", HERE / "fuzz_wire.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fuzz_wire = _load()


@pytest.fixture(scope="module")
def stats() -> Any:
    return fuzz_wire.run(ITERATIONS, SEED)


def test_fuzz_raises_nothing_but_protocol_errors(stats: Any) -> None:
    assert stats.iterations == ITERATIONS
    assert not stats.failures, "\n\n".join(f.report() for f in stats.failures)


def test_fuzz_reaches_every_error_code_and_every_target(stats: Any) -> None:
    assert set(stats.codes) == {c.value for c in ErrorCode}
    assert set(stats.targets) == {"decoder", "server", "client"}
    assert stats.clean > 0 and stats.events > stats.iterations  # valid inputs decode too


def test_the_same_seed_gives_the_same_run() -> None:
    a = fuzz_wire.run(600, 7)
    b = fuzz_wire.run(600, 7)
    assert (a.codes, a.clean, a.events) == (b.codes, b.clean, b.events)


def test_command_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "fuzz_wire.py"),
            "--iterations",
            "400",
            "--seed",
            "2",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "400 iterations in" in result.stdout
    assert "iterations/second" in result.stdout
    assert "inputs per error code:" in result.stdout


def test_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rich")
    assert fuzz_wire.main(["--iterations", "1000", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "fuzzing isthmus-wire" in out and "iterations/second" in out


class _Exploding(FrameDecoder):
    """A decoder with a planted bug: any ping frame makes feed() raise."""

    def feed(self, data: Any, *, volatile: bool = False) -> None:
        if b"IW\x01\x05" in bytes(data):
            raise RuntimeError("planted")
        super().feed(data, volatile=volatile)


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(fuzz_wire, "FrameDecoder", _Exploding)
    yield


@pytest.mark.usefixtures("planted")
def test_an_unexpected_exception_fails_with_a_reproducer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert fuzz_wire.main(["--iterations", "300", "--seed", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: planted" in err
    assert "target:    decoder" in err
    hexdump = err.split("hex):\n", 1)[1].split()[0]
    data = bytes.fromhex(hexdump)
    assert b"IW\x01\x05" in data  # the reproducer holds the input
    stats = fuzz_wire.run(300, 1)
    first = stats.failures[0]
    with pytest.raises(RuntimeError, match="planted"):
        fuzz_wire.replay(1, first.iteration)


def test_a_hang_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def spin(*args: Any) -> Any:
        while True:
            pass

    monkeypatch.setattr(fuzz_wire, "run_one", spin)
    stats = fuzz_wire.run(3, 1, watchdog=0.05, max_failures=2)
    assert [f.error.split(":")[0] for f in stats.failures] == ["Hang", "Hang"]
