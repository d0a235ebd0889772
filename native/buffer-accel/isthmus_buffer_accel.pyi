"""Type stubs for the optional native accelerator used by ``isthmus.buffer``.

Addresses are plain integers (``uintptr_t``). The atomic helpers require naturally
aligned addresses inside memory that stays mapped for the duration of the call.
"""

from typing import Any, Final, Protocol, Self

__version__: Final[str]

class _Releaser(Protocol):
    def _buffer_released(self, token: Any, /) -> object: ...

class BufferCore:
    """Base type a Python class subclasses (``class Buffer(BufferCore): __slots__ = ...``)
    to export the buffer protocol over raw memory.

    It owns the buffer's lifecycle: ``keep`` keeps the memory valid (a ``memoryview`` is
    ``release()``-d with the buffer), ``parent`` is the buffer this one is a slice of (whose
    ``_children`` counts it), and ``releaser._buffer_released(token)`` runs once the buffer is
    released, by :meth:`release` or when it is finalised unreleased (then errors are reported
    through ``sys.unraisablehook``).  The references take part in garbage collection."""

    def __init__(
        self,
        addr: int = 0,
        nbytes: int = 0,
        readonly: bool = False,
        keep: object = None,
        releaser: _Releaser | None = None,
        token: object = None,
    ) -> None:
        """Export ``[addr, addr + nbytes)``, kept valid by ``keep``; see :meth:`_make`."""
    @classmethod
    def _make(
        cls,
        addr: int,
        nbytes: int,
        readonly: bool,
        keep: object = None,
        releaser: _Releaser | None = None,
        token: object = None,
    ) -> Self:
        """Fast constructor: an instance of ``cls`` (``__init__`` is not called)."""
    def release(self) -> None:
        """Mark released, drop ``keep`` and ``parent``, call the releaser (no-op if released).

        Raises the registered in-use error, changing nothing, while slices (``_children``) or
        exports are alive; errors of the releaser callback propagate."""
    def _add_child(self, parent: BufferCore) -> None:
        """Make this buffer a slice of ``parent`` (bumps ``parent._children`` until released)."""
    def _core_set(self, addr: int, nbytes: int, readonly: bool) -> None:
        """Point the exported buffer at ``[addr, addr + nbytes)``; marks it not released."""
    @property
    def _core_addr(self) -> int: ...
    @property
    def _core_nbytes(self) -> int: ...
    @property
    def _core_readonly(self) -> bool: ...
    @property
    def _core_released(self) -> bool: ...
    @property
    def _core_exports(self) -> int:
        """Number of live buffer-protocol exports (memoryviews etc.)."""
    @property
    def _children(self) -> int:
        """Number of live slices made from this buffer."""
    @property
    def _keep(self) -> object:
        """What keeps the memory valid (None once released)."""
    @property
    def _parent(self) -> BufferCore | None:
        """The buffer this one is a slice of (None once released)."""
    @property
    def _releaser(self) -> _Releaser | None:
        """Whose ``_buffer_released(token)`` runs on release (None once released)."""
    @property
    def _token(self) -> object:
        """Token passed to the releaser (None once released)."""
    def _core_release(self) -> None:
        """Mark the buffer released (idempotent) without :meth:`release`'s side effects.

        Raises the registered in-use error while exports are alive."""
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, buffer: memoryview, /) -> None: ...

class AlignedMemory:
    """Zero-filled heap memory with the requested alignment; exports a writable buffer."""

    def __init__(self, nbytes: int, alignment: int = 64) -> None: ...
    @property
    def address(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def alignment(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

def register_errors(
    released: type[BaseException],
    readonly: type[BaseException],
    in_use: type[BaseException],
) -> None:
    """Register the exception classes BufferCore raises.

    Defaults: ValueError, BufferError, BufferError.
    """

def address_of(obj: object, writable: bool = False) -> tuple[int, int, bool]:
    """Return ``(address, nbytes, readonly)`` of a C-contiguous buffer-protocol object."""

def memcopy(dst: int, src: int, nbytes: int) -> None:
    """``memcpy`` between raw addresses; releases the GIL for copies >= 64 KiB."""

def load_u64(addr: int) -> int:
    """Atomic 64-bit load (acquire)."""

def store_u64(addr: int, value: int) -> None:
    """Atomic 64-bit store (release)."""

def load_u32(addr: int) -> int:
    """Atomic 32-bit load (acquire)."""

def store_u32(addr: int, value: int) -> None:
    """Atomic 32-bit store (release)."""

def fetch_add_u32(addr: int, delta: int) -> int:
    """Atomic 32-bit fetch-add (seq_cst, wraps mod 2**32); returns the old value."""

def exchange_u32(addr: int, value: int) -> int:
    """Atomic 32-bit exchange (seq_cst); returns the old value."""

def fence() -> None:
    """Sequentially consistent thread fence."""

def futex_wait(addr: int, expected: int, timeout: float | None = None) -> int:
    """Shared (non-private) FUTEX_WAIT with the GIL released.

    Returns 0 if woken, 1 on timeout, 2 if ``*addr != expected``, 3 if interrupted by a
    signal (after running Python signal handlers; their exceptions propagate)."""

def futex_wake(addr: int, n: int = 1) -> int:
    """Shared FUTEX_WAKE; returns the number of waiters woken."""

def spin_while_equal_u64(addr: int, value: int, max_ns: int) -> int:
    """Busy-wait while ``*addr == value`` for at most ``max_ns``; returns the last value read."""

def ring_wait_u64(
    addr: int,
    value: int,
    seq_addr: int,
    waiting_addr: int,
    spin_ns: int,
    timeout: float | None,
) -> int:
    """Spin up to ``spin_ns``, then futex-wait on ``seq_addr`` until ``*addr != value``.

    Returns the new value, or ``value`` unchanged when ``timeout`` (seconds) expires or when
    ``*seq_addr`` moved without ``*addr`` changing (a notification such as a close)."""

def ring_notify(seq_addr: int, waiting_addr: int) -> bool:
    """Bump ``*seq_addr``; wake its waiters if ``*waiting_addr`` is set. True if it woke."""

def ring_publish(
    len_addr: int, nbytes: int, head_addr: int, head: int, seq_addr: int, waiting_addr: int
) -> bool:
    """Store the record length, then ``head`` (release), then :func:`ring_notify`."""
