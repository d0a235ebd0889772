"""``SharedSegment``: named shared memory that other processes open by name, and never leak.

A segment is a file ``/dev/shm/isthmus.<name>``: one header page, then the user area.  The header
holds a table of the processes attached (pid and start time, so a recycled pid is not mistaken for
a live one).  The table is edited under ``flock`` on the file, which the kernel drops if the holder
dies.  Whoever detaches last unlinks the name; if every attached process died, the next
``create``/``open``/``sweep_stale_segments`` in any process removes it.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import mmap
import os
import re
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from ._buffer import Buffer
from ._errors import (
    BufferInUseError,
    IsthmusBufferError,
    SegmentExistsError,
    SegmentNotFoundError,
    SizeError,
)

__all__ = ["SharedSegment", "sweep_stale_segments"]

SHM_DIR = "/dev/shm"
PREFIX = "isthmus."
_MAGIC = b"ISTHSEG1"
_HEADER = mmap.PAGESIZE
# header: magic(8) version u32, nslots u32, user_size u64,
# then nslots x (pid u32, pad u32, start u64)
_HDR = struct.Struct("<8sIIQ")
_ENTRY = struct.Struct("<IIQ")
_TABLE_OFF = 64
_NSLOTS = (_HEADER - _TABLE_OFF) // _ENTRY.size
# Fault every page in at map time, so the first pass over a ring does not pay a page fault per
# message on the latency path.
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")

_open_segments: weakref.WeakSet[SharedSegment] = weakref.WeakSet()
_lock = threading.Lock()


def _start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 if unknown), to tell pids apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0
    # Field 22; the command name (field 2) may contain spaces, so split after its ')'.
    return int(data[data.rindex(b")") + 2 :].split()[19])


def process_alive(pid: int, start: int) -> bool:
    """True if ``pid`` runs and (when ``start`` is known) is the same process that registered."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start:
        now = _start_time(pid)
        if now and now != start:
            return False
        # A zombie has exited: its memory mapping is gone.
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
            if data[data.rindex(b")") + 2 : data.rindex(b")") + 3] in (b"Z", b"X"):
                return False
        except OSError:
            return False
    return True


def _path(name: str) -> str:
    if not _NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(
            f"invalid segment name {name!r}: use 1-200 letters, digits, '_', '-' or '.'"
        )
    return os.path.join(SHM_DIR, PREFIX + name)


def _read_table(mm: Any) -> list[tuple[int, int, int]]:
    out = []
    for i in range(_NSLOTS):
        pid, _, start = _ENTRY.unpack_from(mm, _TABLE_OFF + i * _ENTRY.size)
        if pid:
            out.append((i, pid, start))
    return out


def _live_entries(mm: Any) -> list[tuple[int, int, int]]:
    return [e for e in _read_table(mm) if process_alive(e[1], e[2])]


class SharedSegment:
    """Named shared memory: ``create`` it in one process, ``open`` it by name in others.

    ``segment.buffer`` is a writable :class:`Buffer` over the user area.  ``close()`` detaches;
    the last process to detach removes the name from ``/dev/shm``.  Segments still open at
    interpreter exit are closed then; a process killed with SIGKILL is detected by the others.
    """

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("use SharedSegment.create(name, size) or SharedSegment.open(name)")

    name: str
    size: int
    _fd: int
    _mm: mmap.mmap | None
    _slot: int
    _buffer: Buffer | None
    _pid: int

    @classmethod
    def _new(cls) -> SharedSegment:
        return object.__new__(cls)

    @classmethod
    def create(
        cls, name: str, size: int, *, _init: Callable[[mmap.mmap, int], None] | None = None
    ) -> SharedSegment:
        """Create segment ``name`` with ``size`` usable bytes (zero-filled).

        Raises :class:`SegmentExistsError` if a live segment of that name exists; a stale one
        (every process that used it died) is removed first.
        """
        if not isinstance(size, int) or size <= 0:
            raise SizeError(f"segment size must be a positive int, got {size!r}")
        path = _path(name)
        sweep_stale_segments(only=name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise SegmentExistsError(
                f"shared segment {name!r} already exists and is in use; pick another name "
                f"or open it with SharedSegment.open({name!r})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, _HEADER + size)
            mm = mmap.mmap(fd, _HEADER + size, flags=_MAP_FLAGS)
            if _init is not None:
                _init(mm, _HEADER)  # e.g. a Ring's header, written before anyone can open it
            _HDR.pack_into(mm, 0, _MAGIC, 1, _NSLOTS, size)
        except BaseException:
            os.close(fd)
            _unlink_quiet(path)
            raise
        seg = cls._attach(name, fd, mm, size)
        return seg

    @classmethod
    def open(cls, name: str, timeout: float = 0.0) -> SharedSegment:
        """Attach to the existing segment ``name``.

        Waits up to ``timeout`` seconds for another process to create it, then raises
        :class:`SegmentNotFoundError` (also for a stale segment whose processes all died).
        """
        path = _path(name)
        start = time.monotonic()
        deadline = start + max(timeout, 1.0)  # a segment being initialised gets 1 s at least
        pause = 0.001
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                if time.monotonic() - start >= timeout:
                    raise SegmentNotFoundError(
                        f"no shared segment named {name!r}; create it first with "
                        f"SharedSegment.create({name!r}, size)"
                    ) from None
                # Only while opening: back off from 1 ms to 50 ms between looks.
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                joined = _inspect(name, path, fd)
            except BaseException:
                os.close(fd)  # closing the fd also drops the flock
                raise
            if joined is not None:
                return cls._attach(name, fd, *joined)
            os.close(fd)
            if time.monotonic() > deadline:
                raise IsthmusBufferError(f"shared segment {name!r} is not initialised")
            # The creator is between O_CREAT and taking the lock, or the file we opened was
            # unlinked meanwhile: look again in a moment.
            time.sleep(0.001)

    @classmethod
    def _attach(cls, name: str, fd: int, mm: mmap.mmap, size: int) -> SharedSegment:
        """Register this process in the table (the caller holds the flock)."""
        try:
            pid = os.getpid()
            table = _read_table(mm)
            used = {i for i, _, _ in table}
            # Reuse slots of dead processes.
            for i, p, st in table:
                if not process_alive(p, st):
                    _ENTRY.pack_into(mm, _TABLE_OFF + i * _ENTRY.size, 0, 0, 0)
                    used.discard(i)
            free = next((i for i in range(_NSLOTS) if i not in used), None)
            if free is None:
                raise IsthmusBufferError(
                    f"shared segment {name!r} has {_NSLOTS} processes attached already"
                )
            _ENTRY.pack_into(mm, _TABLE_OFF + free * _ENTRY.size, pid, 0, _start_time(pid))
        except BaseException:
            mm.close()
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        seg = cls._new()
        seg.name = name
        seg.size = size
        seg._fd = fd
        seg._mm = mm
        seg._slot = free
        seg._pid = pid
        mv = memoryview(mm)[_HEADER : _HEADER + size]
        from ._backend import _IMPLS

        addr = _IMPLS.get("native", _IMPLS["python"]).address_of(mv, True)[0]
        seg._buffer = Buffer._make(addr, size, False, mv)
        with _lock:
            _open_segments.add(seg)
        return seg

    # --- use ---------------------------------------------------------------------------------
    @property
    def buffer(self) -> Buffer:
        """The writable user area (released when the segment closes)."""
        if self._buffer is None:
            raise IsthmusBufferError(f"shared segment {self.name!r} is closed")
        return self._buffer

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._mm is None

    @property
    def path(self) -> str:
        """The file backing the segment in /dev/shm."""
        return _path(self.name)

    def _others(self) -> list[tuple[int, bool]]:
        """``(pid, alive)`` of every other process in the table (dead ones included)."""
        if self._mm is None:
            return []
        return [(p, process_alive(p, st)) for i, p, st in _read_table(self._mm) if i != self._slot]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the segment's cross-process lock (flock; the kernel drops it if we die)."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def attached_pids(self) -> list[int]:
        """Pids of the live processes attached to the segment."""
        if self._mm is None:
            return []
        return [p for _, p, _ in _live_entries(self._mm)]

    def close(self) -> None:
        """Detach; unlink the name if no other live process is attached.

        Raises :class:`BufferInUseError` (and stays open) while views of ``buffer`` are alive.
        """
        mm = self._mm
        if mm is None:
            return
        if self._pid != os.getpid():
            # A forked child inherited the object: it never attached, so it must not detach.
            self._mm = None
            return
        buf = self._buffer
        if buf is not None:
            try:
                buf.release()
            except BufferInUseError:
                raise BufferInUseError(
                    f"cannot close shared segment {self.name!r}: views of its buffer are still "
                    "alive; release or delete them first"
                ) from None
        self._buffer = None
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            _ENTRY.pack_into(mm, _TABLE_OFF + self._slot * _ENTRY.size, 0, 0, 0)
            if not _live_entries(mm):
                _unlink_quiet(self.path, self._fd)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._mm = None
            # Views kept past exit: the mapping goes away with the process.
            with contextlib.suppress(BufferError):
                mm.close()
            os.close(self._fd)
        with _lock:
            _open_segments.discard(self)

    def unlink(self) -> None:
        """Remove the name now (processes attached keep their mapping until they close)."""
        _unlink_quiet(self.path)

    def __enter__(self) -> SharedSegment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._mm is not None:
                self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._mm is None else "open"
        return f"<SharedSegment {self.name!r} {self.size} bytes {state}>"


def _inspect(name: str, path: str, fd: int) -> tuple[mmap.mmap, int] | None:
    """Map a segment file we hold the flock of: ``(mapping, user size)`` if it can be joined,
    None if it is not ready (being created) or no longer the file behind the name."""
    st = os.fstat(fd)
    if st.st_nlink == 0 or st.st_size < _HEADER:
        return None
    mm = mmap.mmap(fd, st.st_size, flags=_MAP_FLAGS)
    try:
        magic, _, _, size = _HDR.unpack_from(mm, 0)
        if magic != _MAGIC:
            mm.close()
            return None
        if not _live_entries(mm):
            # Every user died: it is garbage, not a segment to join.
            _unlink_quiet(path, fd)
            raise SegmentNotFoundError(
                f"shared segment {name!r} was abandoned (its processes died); it has been removed"
            )
    except BaseException:
        mm.close()
        raise
    return mm, size


def _unlink_quiet(path: str, fd: int | None = None) -> None:
    """Remove ``path``; with ``fd``, only if the name still refers to that file (the name may
    have been unlinked and created anew by others since ``fd`` was opened)."""
    with contextlib.suppress(FileNotFoundError):
        if fd is not None:
            mine, now = os.fstat(fd), os.stat(path)
            if (mine.st_ino, mine.st_dev) != (now.st_ino, now.st_dev):
                return
        os.unlink(path)


def sweep_stale_segments(only: str | None = None) -> list[str]:
    """Remove isthmus segments whose processes all died; returns the names removed."""
    removed: list[str] = []
    try:
        names = [only] if only is not None else os.listdir(SHM_DIR)
    except OSError:
        return removed
    for entry in names:
        fname = PREFIX + entry if only is not None else entry
        if not fname.startswith(PREFIX):
            continue
        path = os.path.join(SHM_DIR, fname)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            # Don't wait for a busy segment: a holder of the lock is alive.
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue
                raise
            size = os.fstat(fd).st_size
            if size < _HEADER:
                continue  # being created right now
            with mmap.mmap(fd, _HEADER) as mm:
                if mm[:8] != _MAGIC:
                    continue
                if not _live_entries(mm):
                    _unlink_quiet(path, fd)
                    removed.append(fname[len(PREFIX) :])
        finally:
            os.close(fd)
    return removed


@atexit.register
def _close_all() -> None:
    with _lock:
        segs = list(_open_segments)
    for seg in segs:
        try:
            buf = seg._buffer
            if buf is not None and (buf._core_exports or buf._children):
                # Views outlive us anyway at exit: detach without releasing them.
                seg._buffer = None
            seg.close()
        except Exception:
            pass
