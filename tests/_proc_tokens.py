"""Find the processes an example started, by a token in their environment, and check none is left."""

from __future__ import annotations

import time
from pathlib import Path


def tagged(var: str, token: str) -> list[int]:
    """Pids of live processes whose environment carries ``var=token``."""
    needle = f"{var}={token}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def assert_none_left(var: str, token: str, grace: float = 10.0) -> None:
    """Fail unless every process carrying ``var=token`` is gone within ``grace`` seconds."""
    # multiprocessing's resource tracker may take a moment after its parent to notice the EOF.
    deadline = time.monotonic() + grace
    while (left := tagged(var, token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes left behind: {left}"
