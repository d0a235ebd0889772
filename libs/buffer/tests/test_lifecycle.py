"""The Buffer lifecycle that lives in the core (native BufferCore or the pure-Python one):
``_make``, ``release``, slices, the releaser callback and finalisation."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from isthmus.buffer import Buffer, BufferInUseError


class Recorder:
    def __init__(self) -> None:
        self.tokens: list[Any] = []

    def _buffer_released(self, token: Any) -> None:
        self.tokens.append(token)


class Failing:
    def __init__(self) -> None:
        self.calls = 0

    def _buffer_released(self, token: Any) -> None:
        self.calls += 1
        raise RuntimeError(f"callback failed for {token!r}")


class Sub(Buffer):
    __slots__ = ()


@pytest.fixture
def mem() -> tuple[bytearray, int]:
    owner = bytearray(64)
    return owner, Buffer(owner).address


@pytest.fixture
def unraisable() -> Iterator[list[Any]]:
    seen: list[Any] = []
    saved = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = saved


def test_make_builds_the_calling_class_with_its_fields(mem: tuple[bytearray, int]) -> None:
    owner, addr = mem
    rec = Recorder()
    buf = Sub._make(addr, 16, True, owner, rec, "tok")
    assert type(buf) is Sub
    assert buf.address == addr and buf.nbytes == 16 and buf.readonly and not buf.released
    assert buf._keep is owner and buf._releaser is rec and buf._token == "tok"
    assert buf._parent is None and buf._children == 0 and buf.owner is owner
    plain = Buffer._make(addr, 0, False)
    assert type(plain) is Buffer and plain._keep is None and plain._releaser is None
    with pytest.raises(ValueError):
        Buffer._make(addr, -1, False)


def test_release_calls_the_releaser_once_and_drops_the_references(
    mem: tuple[bytearray, int],
) -> None:
    owner, addr = mem
    rec = Recorder()
    buf = Buffer._make(addr, 8, False, owner, rec, 42)
    buf.release()
    assert rec.tokens == [42] and buf.released
    assert buf._keep is None and buf._releaser is None and buf._token is None
    buf.release()
    del buf
    gc.collect()
    assert rec.tokens == [42]


def test_dropped_buffer_is_released_exactly_once(mem: tuple[bytearray, int]) -> None:
    owner, addr = mem
    rec = Recorder()
    buf = Buffer._make(addr, 8, False, owner, rec, "a")
    ref = weakref.ref(buf)
    del buf
    assert ref() is None and rec.tokens == ["a"]
    Buffer._make(addr, 8, False, owner, rec, "b")  # dropped at once
    assert rec.tokens == ["a", "b"]


def test_released_and_dropped_buffers_let_go_of_a_memoryview_keep() -> None:
    owner = bytearray(b"abc")
    buf = Buffer(owner)
    with pytest.raises(BufferError):
        owner.extend(b"d")  # the Buffer's memoryview pins the bytearray
    buf.release()
    owner.extend(b"d")
    buf = Buffer(owner)
    del buf
    owner.extend(b"e")
    assert owner == b"abcde"


def test_callback_error_propagates_from_release(mem: tuple[bytearray, int]) -> None:
    _, addr = mem
    bad = Failing()
    buf = Buffer._make(addr, 8, False, None, bad, "x")
    with pytest.raises(RuntimeError, match="callback failed for 'x'"):
        buf.release()
    assert buf.released and bad.calls == 1
    buf.release()
    assert bad.calls == 1


def test_callback_error_during_finalisation_is_reported_not_raised(
    mem: tuple[bytearray, int], unraisable: list[Any]
) -> None:
    _, addr = mem
    bad = Failing()
    buf = Buffer._make(addr, 8, False, None, bad, "y")
    del buf  # must not raise here
    assert bad.calls == 1
    assert len(unraisable) == 1
    assert isinstance(unraisable[0].exc_value, RuntimeError)
    assert "callback failed for 'y'" in str(unraisable[0].exc_value)


def test_finalisation_keeps_a_pending_exception(mem: tuple[bytearray, int]) -> None:
    owner, addr = mem
    rec = Recorder()
    try:
        buf = Buffer._make(addr, 8, False, owner, rec, "z")
        try:
            raise KeyError("pending")
        finally:
            del buf  # finalised while KeyError propagates
    except KeyError as e:
        assert e.args == ("pending",)
    assert rec.tokens == ["z"]


def test_reference_cycle_through_keep_is_collected(mem: tuple[bytearray, int]) -> None:
    _, addr = mem

    class Holder:
        buf: Buffer

    rec = Recorder()
    holder = Holder()
    holder.buf = Buffer._make(addr, 8, False, holder, rec, "cycle")
    href, bref = weakref.ref(holder), weakref.ref(holder.buf)
    del holder
    gc.collect()
    assert href() is None and bref() is None
    assert rec.tokens == ["cycle"]


def test_reference_cycle_through_releaser_and_token_is_collected(
    mem: tuple[bytearray, int],
) -> None:
    _, addr = mem
    released: list[Any] = []

    class Owner:
        buf: Buffer

        def _buffer_released(self, token: Any) -> None:
            released.append(token)

    owner = Owner()
    box: list[Any] = []
    owner.buf = Buffer._make(addr, 8, False, None, owner, box)
    box.append(owner.buf)
    oref = weakref.ref(owner)
    del owner, box
    gc.collect()
    assert oref() is None
    assert len(released) == 1


def test_slices_count_against_their_parent() -> None:
    rec = Recorder()
    owner = bytearray(32)
    parent = Buffer._make(Buffer(owner).address, 32, False, owner, rec, "parent")
    child = parent[4:8]
    grandchild = child[1:2]
    assert child._parent is parent and parent._children == 1 and child._children == 1
    assert child.owner is parent
    with pytest.raises(BufferInUseError, match="1 slice"):
        parent.release()
    with pytest.raises(BufferInUseError, match="1 slice"):
        child.release()
    grandchild.release()
    assert child._children == 0 and grandchild._parent is None
    del child
    gc.collect()
    assert parent._children == 0
    parent.release()
    assert rec.tokens == ["parent"]


def test_view_error_names_the_count(mem: tuple[bytearray, int]) -> None:
    owner, addr = mem
    buf = Buffer._make(addr, 8, False, owner)
    views = [memoryview(buf), memoryview(buf)]
    with pytest.raises(BufferInUseError, match="2 view"):
        buf.release()
    for v in views:
        v.release()
    buf.release()


def test_buffer_of_buffer_counts_as_a_slice() -> None:
    outer = Buffer(bytearray(8))
    inner = Buffer(outer)
    assert inner._parent is outer and outer._children == 1
    del inner
    gc.collect()
    assert outer._children == 0
    outer.release()


def test_release_documents_itself() -> None:
    assert Buffer.release.__doc__ is not None
    assert "Releasing twice is harmless" in Buffer.release.__doc__
