"""``Buffer``: a zero-copy, sliceable view over memory that something else owns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ._backend import _IMPLS as _IMPLS
from ._backend import CoreBase, current
from ._errors import BufferReleasedError, ReadOnlyBufferError, SizeError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["KDL_CPU", "Buffer"]

KDL_CPU = 1  # DLPack device type of host memory

# Addresses are resolved once with the fastest implementation importable here; the result does
# not depend on which implementation a ring or pool uses.
_address_of = _IMPLS.get("native", _IMPLS["python"]).address_of


class _Releaser(Protocol):
    def _buffer_released(self, token: Any) -> None: ...


class Buffer(CoreBase):  # type: ignore[misc]
    """A zero-copy view of bytes owned by another object.

    ``Buffer(obj)`` wraps any C-contiguous object that supports the buffer protocol (bytes,
    bytearray, numpy arrays, mmap, memoryview ...) and keeps it alive.  ``memoryview(buf)`` and
    ``numpy.asarray(buf)`` share its memory, slicing returns another ``Buffer`` over the same
    memory, and :meth:`release` invalidates it (after which every use raises
    :class:`BufferReleasedError`).  Pools and rings hand out ``Buffer`` objects whose memory goes
    back to them when the buffer is released or its last view dies.
    """

    # The lifecycle lives in the core (native BufferCore or the pure-Python _CoreMethods):
    # _make(), release(), the finaliser, slices (_add_child) and the fields read below.
    __slots__ = ("__weakref__",)

    if TYPE_CHECKING:
        _keep: object
        _parent: Buffer | None
        _releaser: _Releaser | None
        _token: Any
        _children: int

        @classmethod
        def _make(
            cls,
            addr: int,
            nbytes: int,
            readonly: bool,
            keep: object = None,
            releaser: _Releaser | None = None,
            token: Any = None,
        ) -> Buffer:
            """Internal fast constructor over raw memory kept alive by ``keep``."""

        def _add_child(self, parent: Buffer) -> None: ...

    def __init__(self, obj: object, *, readonly: bool | None = None) -> None:
        if isinstance(obj, Buffer):
            obj._check()
            if readonly is False and obj._core_readonly:
                raise ReadOnlyBufferError("cannot make a writable Buffer over a read-only one")
            super().__init__(obj._core_addr, obj._core_nbytes, obj._core_readonly or bool(readonly))
            self._add_child(obj)
            return
        try:
            mv = memoryview(obj)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"Buffer() needs an object that supports the buffer protocol, "
                f"not {type(obj).__name__}"
            ) from None
        if not mv.c_contiguous:
            mv.release()
            raise SizeError("Buffer() needs C-contiguous memory; copy the array first")
        if readonly is False and mv.readonly:
            mv.release()
            raise ReadOnlyBufferError(
                f"{type(obj).__name__} is read-only; wrap a bytearray or writable array instead"
            )
        addr, nbytes, ro = _address_of(mv)
        super().__init__(addr, nbytes, ro or bool(readonly), mv)

    # --- state -------------------------------------------------------------------------------
    def _check(self) -> None:
        if self._core_released:
            raise BufferReleasedError(
                "buffer has been released; it no longer refers to valid memory"
            )

    @property
    def nbytes(self) -> int:
        """Size in bytes."""
        self._check()
        return int(self._core_nbytes)

    def __len__(self) -> int:
        return self.nbytes

    @property
    def readonly(self) -> bool:
        """True if writes through this buffer are refused."""
        return bool(self._core_readonly)

    @property
    def released(self) -> bool:
        """True once :meth:`release` ran (or the owner reclaimed the memory)."""
        return bool(self._core_released)

    @property
    def address(self) -> int:
        """Address of the first byte, for native code that takes raw pointers."""
        self._check()
        return int(self._core_addr)

    @property
    def device(self) -> tuple[int, int]:
        """``(DLPack device type, device id)``: ``(1, 0)`` for host memory."""
        return (KDL_CPU, 0)

    @property
    def owner(self) -> object:
        """The object whose memory this buffer views (a parent ``Buffer`` for slices)."""
        if self._parent is not None:
            return self._parent
        keep = self._keep
        return keep.obj if isinstance(keep, memoryview) else keep

    # --- release -----------------------------------------------------------------------------
    if TYPE_CHECKING:

        def release(self) -> None:
            """Give the memory back to its owner; further use raises :class:`BufferReleasedError`.

            Raises :class:`BufferInUseError` (and changes nothing) while slices or views made
            from this buffer are alive.  Releasing twice is harmless.
            """

    else:
        # The core's release(), with the docstring above; listed here so autodoc shows it.
        release = CoreBase.release

    def __enter__(self) -> Buffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # --- access ------------------------------------------------------------------------------
    def __getitem__(self, key: int | slice) -> Any:
        self._check()
        if isinstance(key, slice):
            start, stop, step = key.indices(self._core_nbytes)
            if step != 1:
                raise SizeError("only contiguous slices (step 1) are zero-copy views")
            child = Buffer._make(self._core_addr + start, max(stop - start, 0), self._core_readonly)
            child._add_child(self)
            return child
        with memoryview(self) as mv:
            return mv[key]

    def __setitem__(self, key: int | slice, value: Any) -> None:
        self._check()
        if self._core_readonly:
            raise ReadOnlyBufferError("buffer is read-only")
        with memoryview(self) as mv:
            mv[key] = value

    def tobytes(self) -> bytes:
        """A copy of the contents as ``bytes``."""
        self._check()
        with memoryview(self) as mv:
            return mv.tobytes()

    def __bytes__(self) -> bytes:
        return self.tobytes()

    def asarray(
        self, dtype: npt.DTypeLike = "uint8", shape: int | tuple[int, ...] | None = None
    ) -> np.ndarray[Any, Any]:
        """A numpy array over the same memory (no copy), optionally typed and reshaped."""
        import numpy as np

        self._check()
        arr = np.frombuffer(self, dtype=dtype)
        return arr if shape is None else arr.reshape(shape)

    def copy_from(self, src: object, offset: int = 0) -> int:
        """Copy ``src`` (any buffer) into this buffer at ``offset``; returns the bytes copied.

        Large copies release the GIL with the native core.
        """
        self._check()
        if self._core_readonly:
            raise ReadOnlyBufferError("cannot copy into a read-only buffer")
        if isinstance(src, Buffer):
            src._check()  # the typed error, before memoryview() would raise its own
        # Both sides stay exported while the copy runs without the GIL, so another thread cannot
        # release or unmap either of them mid-copy (release() refuses while views are alive).
        with memoryview(self) as _pin, memoryview(src) as smv:  # type: ignore[arg-type]
            saddr, n, _ = _address_of(smv)
            return self._copy_in(saddr, n, offset, smv)

    def _copy_in(self, saddr: int, n: int, offset: int, keep: object) -> int:
        if offset < 0 or offset + n > self._core_nbytes:
            raise SizeError(
                f"{n} bytes at offset {offset} do not fit in a {self._core_nbytes}-byte buffer"
            )
        if n:
            current().memcopy(self._core_addr + offset, saddr, n)
        return n

    # --- DLPack ------------------------------------------------------------------------------
    def __dlpack__(self, **kwargs: Any) -> Any:
        """Export as a DLPack capsule (uint8, 1-D) through numpy; the capsule keeps us alive."""
        import numpy as np

        self._check()
        arr = np.frombuffer(self, dtype=np.uint8)
        return arr.__dlpack__(**{k: v for k, v in kwargs.items() if v is not None})

    def __dlpack_device__(self) -> tuple[int, int]:
        return (KDL_CPU, 0)

    def __repr__(self) -> str:
        if self._core_released:
            return "<Buffer released>"
        mode = "ro" if self._core_readonly else "rw"
        return f"<Buffer {self._core_nbytes} bytes {mode} at 0x{self._core_addr:x}>"
