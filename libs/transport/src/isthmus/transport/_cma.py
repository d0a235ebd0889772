"""Cross Memory Attach: ``process_vm_readv`` through ctypes (which releases the GIL).

One copy, straight from the sender's buffer into the posted receive buffer, as UCX's CMA transport
does.  Whether the kernel permits it between two given processes (Yama ``ptrace_scope``, pid
namespaces, seccomp) is found out per connection by reading a probe cookie from the peer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Sequence

__all__ = ["IOV_MAX", "CmaError", "available", "read"]

IOV_MAX = 1024


class CmaError(OSError):
    """``process_vm_readv`` failed; ``errno`` says why (ESRCH: the peer is gone)."""


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _load() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if os.environ.get("ISTHMUS_TRANSPORT_NO_CMA") == "1":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.process_vm_readv
    except (OSError, AttributeError):
        return None
    fn.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(_IoVec),
        ctypes.c_ulong,
        ctypes.POINTER(_IoVec),
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    fn.restype = ctypes.c_ssize_t
    return fn


_readv = _load()


def available() -> bool:
    """True when this libc has ``process_vm_readv`` (Linux) and it was not disabled by env."""
    return _readv is not None


def read(pid: int, local: int, nbytes: int, remote: Sequence[tuple[int, int]], offset: int) -> None:
    """Copy ``nbytes`` from the peer's segments ``remote``, ``offset`` bytes in, to ``local``.

    Loops over short reads, which the kernel returns at page faults and segment boundaries.
    """
    if _readv is None:
        raise CmaError(errno.ENOSYS, "process_vm_readv is not available")
    done = 0
    while done < nbytes:
        # Remote iovecs covering [offset + done, offset + nbytes).
        want = nbytes - done
        skip = offset + done
        riov: list[tuple[int, int]] = []
        for addr, length in remote:
            if skip >= length:
                skip -= length
                continue
            take = min(length - skip, want)
            riov.append((addr + skip, take))
            want -= take
            skip = 0
            if not want or len(riov) == IOV_MAX:
                break
        count = sum(n for _, n in riov)
        rarr = (_IoVec * len(riov))(*(_IoVec(a, n) for a, n in riov))
        larr = (_IoVec * 1)(_IoVec(local + done, count))
        got = _readv(pid, larr, 1, rarr, len(riov), 0)
        if got < 0:
            err = ctypes.get_errno()
            raise CmaError(err, f"process_vm_readv from pid {pid}: {os.strerror(err)}")
        if got == 0:
            raise CmaError(errno.EFAULT, f"process_vm_readv from pid {pid} read nothing")
        done += got
