"""Tour: the same ring, paced like real-time audio, to show the latency a waiting consumer sees.

The ``buffer`` tour runs flat out, so its latency is mostly time spent queued in a full ring. Here
the producer sends 1,000 messages a second and the consumer spins 1.5 ms before sleeping, so every
message finds the consumer waiting: the figure is the ring's own one-way latency.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import buffer

TITLE = "buffer: one-way latency, paced at 1,000 msgs/s with a 1.5 ms spin"
RATE = 1000.0
SPIN_US = 1500.0


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """Shares the buffer tour's options (--size, --capacity); --rate and --spin override ours."""


def run(opts: argparse.Namespace, console: Any) -> dict[str, Any]:
    paced = argparse.Namespace(**vars(opts))
    paced.rate = opts.rate or RATE
    paced.spin = opts.spin or SPIN_US
    return buffer.run(paced, console)
