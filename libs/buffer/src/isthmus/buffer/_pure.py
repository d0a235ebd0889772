"""Pure-Python (stdlib ctypes) versions of the primitives the native core provides.

The ring protocol lives in :mod:`._ring` and calls these through :mod:`._backend`; this module only
knows about addresses, 32/64-bit words and the Linux futex syscall.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, Self

from ._errors import BufferInUseError, BufferReleasedError, ReadOnlyBufferError

__all__ = ["PurePrimitives", "PyBufferCoreBase", "py_address_of"]

_api = ctypes.pythonapi


# CPython's Py_buffer, as laid out in Include/pybuffer.h (stable since 3.0).
class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_PyBUF_WRITABLE = 0x0001
_PyBUF_C_CONTIGUOUS = 0x0038

_api.PyObject_GetBuffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_api.PyObject_GetBuffer.restype = ctypes.c_int
_api.PyBuffer_Release.argtypes = [ctypes.POINTER(_PyBuffer)]
_api.PyBuffer_Release.restype = None
_api.PyBuffer_FillInfo.argtypes = [
    ctypes.c_void_p,
    ctypes.py_object,
    ctypes.c_void_p,
    ctypes.c_ssize_t,
    ctypes.c_int,
    ctypes.c_int,
]
_api.PyBuffer_FillInfo.restype = ctypes.c_int


def py_address_of(obj: object, writable: bool = False) -> tuple[int, int, bool]:
    """Return ``(address, nbytes, readonly)`` of a C-contiguous buffer-protocol object."""
    view = _PyBuffer()
    flags = _PyBUF_C_CONTIGUOUS | (_PyBUF_WRITABLE if writable else 0)
    _api.PyObject_GetBuffer(obj, ctypes.byref(view), flags)  # raises the exporter's error
    try:
        return (view.buf or 0), view.len, bool(view.readonly)
    finally:
        _api.PyBuffer_Release(ctypes.byref(view))


# --- the buffer-protocol base class -------------------------------------------------------------
# Python 3.12 lets a class define __buffer__; on 3.11 a class can only export memory if its type has
# a C-level bf_getbuffer slot.  Without a compiler we build such a type at import time with
# PyType_FromSpec and ctypes callbacks.  Limitation: a ctypes callback cannot leave a Python
# exception set, so on 3.11 *without* the native core memoryview() of a released buffer (or a
# writable request on a read-only one) raises SystemError instead of the typed error.


class _Slot(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_int), ("pfunc", ctypes.c_void_p)]


class _Spec(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("basicsize", ctypes.c_int),
        ("itemsize", ctypes.c_int),
        ("flags", ctypes.c_uint),
        ("slots", ctypes.POINTER(_Slot)),
    ]


_Py_bf_getbuffer = 1
_Py_TPFLAGS_BASETYPE = 1 << 10
_Py_TPFLAGS_HAVE_VERSION_TAG = 1 << 18

_GETBUF = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_void_p, ctypes.c_int)


class _Export:
    """Stands in as ``view.obj`` of each export made through the ctypes slot.

    CPython calls bf_releasebuffer while an exception may be pending, and a ctypes callback
    cannot run then; an ordinary object whose finaliser counts the export down can.
    """

    __slots__ = ("buf",)

    def __init__(self, buf: Any) -> None:
        self.buf = buf

    def __del__(self) -> None:
        self.buf._core_exports -= 1


def _getbuffer(self: Any, view: int, flags: int) -> int:
    if self._core_released or (flags & _PyBUF_WRITABLE and self._core_readonly):
        return -1
    _api.PyBuffer_FillInfo(
        view, _Export(self), self._core_addr, self._core_nbytes, int(self._core_readonly), flags
    )
    self._core_exports += 1
    return 0


def _make_ctypes_base() -> type:
    getbuf = _GETBUF(_getbuffer)
    slots = (_Slot * 2)(
        _Slot(_Py_bf_getbuffer, ctypes.cast(getbuf, ctypes.c_void_p)),
        _Slot(0, None),
    )
    name = b"isthmus.buffer._CtypesBufferBase"
    spec = _Spec(
        name,
        ctypes.sizeof(ctypes.c_ssize_t) * 2,  # sizeof(PyObject)
        0,
        _Py_TPFLAGS_BASETYPE | _Py_TPFLAGS_HAVE_VERSION_TAG,
        slots,
    )
    _api.PyType_FromSpec.argtypes = [ctypes.POINTER(_Spec)]
    _api.PyType_FromSpec.restype = ctypes.py_object
    base: type = _api.PyType_FromSpec(ctypes.byref(spec))
    # The type keeps raw pointers to the callbacks and the name: keep them alive with the type.
    _KEEP.extend([getbuf, slots, name, spec])
    return base


_KEEP: list[object] = []


class _Releaser(Protocol):
    def _buffer_released(self, token: Any) -> None: ...


class _CoreMethods:
    """Fields and methods shared by both pure-Python exporters (mirrors the native BufferCore).

    Besides the exported memory it holds the buffer's lifecycle: ``_keep`` keeps the memory
    valid (a memoryview is released with the buffer), ``_parent`` is the buffer this one is a
    slice of (whose ``_children`` counts it), and ``_releaser._buffer_released(_token)`` runs
    once the buffer is released, explicitly or by the finaliser.
    """

    __slots__ = (
        "_children",
        "_core_addr",
        "_core_exports",
        "_core_nbytes",
        "_core_readonly",
        "_core_released",
        "_keep",
        "_parent",
        "_releaser",
        "_token",
    )
    _core_addr: int
    _core_nbytes: int
    _core_readonly: bool
    _core_released: bool
    _core_exports: int
    _keep: object
    _parent: _CoreMethods | None
    _releaser: _Releaser | None
    _token: Any
    _children: int

    def __init__(
        self,
        addr: int = 0,
        nbytes: int = 0,
        readonly: bool = False,
        keep: object = None,
        releaser: _Releaser | None = None,
        token: Any = None,
    ) -> None:
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        self._core_addr = addr
        self._core_nbytes = nbytes
        self._core_readonly = readonly
        self._core_released = False
        self._core_exports = 0
        self._keep = keep
        self._parent = None
        self._releaser = releaser
        self._token = token
        self._children = 0

    @classmethod
    def _make(
        cls,
        addr: int,
        nbytes: int,
        readonly: bool,
        keep: object = None,
        releaser: _Releaser | None = None,
        token: Any = None,
    ) -> Self:
        """Internal fast constructor: an instance of ``cls`` over ``[addr, addr + nbytes)``."""
        b: Self = _new(cls)
        # The core's own __init__, not the subclass's (Buffer.__init__ wraps an object).
        _CoreMethods.__init__(b, addr, nbytes, readonly, keep, releaser, token)
        return b

    def _core_set(self, addr: int, nbytes: int, readonly: bool) -> None:
        self._core_addr = addr
        self._core_nbytes = nbytes
        self._core_readonly = readonly
        self._core_released = False

    def _core_release(self) -> None:
        if self._core_exports > 0:
            raise BufferInUseError(
                f"cannot release: {self._core_exports} view(s) of this buffer are still alive; "
                "release or delete them first"
            )
        self._core_released = True

    def _add_child(self, parent: _CoreMethods) -> None:
        """Make this buffer a slice of ``parent``: it counts us until we are released."""
        if self._parent is not None:
            raise ValueError("this buffer already has a parent")
        if parent is self:
            raise ValueError("a buffer cannot be its own slice")
        if self._core_released or parent._core_released:
            raise BufferReleasedError(
                "buffer has been released; it no longer refers to valid memory"
            )
        parent._children += 1
        self._parent = parent

    def release(self) -> None:
        """Give the memory back to its owner; further use raises :class:`BufferReleasedError`.

        Raises :class:`BufferInUseError` (and changes nothing) while slices or views made from
        this buffer are alive.  Releasing twice is harmless.
        """
        if self._core_released:
            return
        if self._children:
            raise BufferInUseError(
                f"cannot release: {self._children} slice(s) of this buffer are still alive; "
                "release or delete them first"
            )
        if self._core_exports > 0:
            raise BufferInUseError(
                f"cannot release: {self._core_exports} view(s) of this buffer are still alive; "
                "release or delete them first"
            )
        self._core_released = True
        self._finish()

    def _finish(self) -> None:
        keep, self._keep = self._keep, None
        parent, self._parent = self._parent, None
        releaser, self._releaser = self._releaser, None
        token, self._token = self._token, None
        try:
            if isinstance(keep, memoryview):
                keep.release()
        finally:
            del keep
            if parent is not None:
                parent._children -= 1
            if releaser is not None:
                releaser._buffer_released(token)

    def __del__(self) -> None:
        # Views and slices keep the buffer alive, so when it dies nothing can still reach its
        # memory; errors of the callback are reported (as for any __del__), not raised.
        try:
            if self._core_released or self._core_exports or self._children:
                return
        except AttributeError:  # never initialised
            return
        self._core_released = True
        self._finish()


_new: Callable[[type[Any]], Any] = object.__new__  # what cls.__new__(cls) resolves to


if sys.version_info >= (3, 12):

    class PyBufferCoreBase(_CoreMethods):
        """Exporter that uses PEP 688's ``__buffer__`` (Python 3.12+)."""

        __slots__ = ()

        def __buffer__(self, flags: int) -> memoryview:
            if self._core_released:
                raise BufferReleasedError(
                    "buffer has been released; it no longer refers to valid memory"
                )
            if flags & _PyBUF_WRITABLE and self._core_readonly:
                raise ReadOnlyBufferError("buffer is read-only")
            n = self._core_nbytes
            raw = (ctypes.c_char * n).from_address(self._core_addr) if n else bytearray()
            mv = memoryview(raw).cast("B")
            self._core_exports += 1
            return mv.toreadonly() if self._core_readonly else mv

        def __release_buffer__(self, view: memoryview) -> None:
            self._core_exports -= 1

else:
    _Base = _make_ctypes_base()

    class PyBufferCoreBase(_CoreMethods, _Base):  # type: ignore[misc,valid-type]
        """Exporter whose C-level bf_getbuffer is a ctypes callback (Python 3.11)."""

        __slots__ = ()


# --- futex and word access ----------------------------------------------------------------------

_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}.get(
    platform.machine().lower(), 202
)
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_u64 = ctypes.c_uint64.from_address
_u32 = ctypes.c_uint32.from_address


class PurePrimitives:
    """The native core's primitives written with ctypes (Linux only for the futex calls)."""

    name = "python"

    address_of = staticmethod(py_address_of)

    @staticmethod
    def memcopy(dst: int, src: int, nbytes: int) -> None:
        ctypes.memmove(dst, src, nbytes)  # ctypes drops the GIL around foreign calls

    @staticmethod
    def alloc(nbytes: int, alignment: int) -> object:
        # Anonymous mappings are page aligned, which covers every alignment up to a page.
        if alignment > mmap.PAGESIZE:
            raise ValueError(f"alignment {alignment} exceeds the page size {mmap.PAGESIZE}")
        return mmap.mmap(-1, max(nbytes, 1))

    @staticmethod
    def load_u64(addr: int) -> int:
        return int(_u64(addr).value)

    @staticmethod
    def store_u64(addr: int, value: int) -> None:
        _u64(addr).value = value

    @staticmethod
    def load_u32(addr: int) -> int:
        return int(_u32(addr).value)

    @staticmethod
    def store_u32(addr: int, value: int) -> None:
        _u32(addr).value = value

    @staticmethod
    def futex_wait(addr: int, expected: int, timeout: float | None = None) -> int:
        ts = None
        if timeout is not None:
            timeout = max(timeout, 0.0)
            sec = int(timeout)
            ts = ctypes.byref(_Timespec(sec, int((timeout - sec) * 1e9)))
        r = _syscall(
            _SYS_FUTEX, ctypes.c_void_p(addr), _FUTEX_WAIT, ctypes.c_uint32(expected), ts, None, 0
        )
        if r == 0:
            return 0
        err = ctypes.get_errno()
        if err == 110:  # ETIMEDOUT
            return 1
        if err == 11:  # EAGAIN: the word no longer holds `expected`
            return 2
        if err == 4:  # EINTR
            return 3
        raise OSError(err, os.strerror(err))

    @staticmethod
    def futex_wake(addr: int, n: int = 1) -> int:
        r = _syscall(_SYS_FUTEX, ctypes.c_void_p(addr), _FUTEX_WAKE, n, None, None, 0)
        if r < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return int(r)

    @staticmethod
    def ring_notify(seq_addr: int, waiting_addr: int) -> bool:
        # Only one side ever bumps a given seq word, so a plain store is race-free.
        seq = _u32(seq_addr)
        seq.value = (seq.value + 1) & 0xFFFFFFFF
        if _u32(waiting_addr).value:
            PurePrimitives.futex_wake(seq_addr, 0x7FFFFFFF)
            return True
        return False

    @staticmethod
    def ring_publish(
        len_addr: int, nbytes: int, head_addr: int, head: int, seq_addr: int, waiting_addr: int
    ) -> bool:
        _u64(len_addr).value = nbytes
        _u64(head_addr).value = head
        return PurePrimitives.ring_notify(seq_addr, waiting_addr)

    @staticmethod
    def ring_wait_u64(
        addr: int,
        value: int,
        seq_addr: int,
        waiting_addr: int,
        spin_ns: int,
        timeout: float | None,
    ) -> int:
        word = _u64(addr)
        if spin_ns > 0:
            end = time.perf_counter_ns() + spin_ns
            while True:
                v = word.value
                if v != value:
                    return int(v)
                if time.perf_counter_ns() >= end:
                    break
        deadline = None if timeout is None else time.monotonic() + timeout
        seq = _u32(seq_addr)
        waiting = _u32(waiting_addr)
        while True:
            s = seq.value
            waiting.value = 1
            v = word.value
            if v != value:
                waiting.value = 0
                return int(v)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                waiting.value = 0
                return value
            PurePrimitives.futex_wait(seq_addr, s, remaining)
            waiting.value = 0
            v = word.value
            if v != value:
                return int(v)
            if seq.value != s:  # the doorbell rang without news: e.g. the peer closed
                return value
