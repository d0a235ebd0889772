"""The showcase's tours: one per Isthmus library.

Add a tour by writing ``tours/<name>.py`` with ``TITLE``, ``add_arguments(group)`` and
``run(opts, console) -> dict`` (see ``tours/buffer.py``), then listing it here.  ``showcase.py``
with no argument runs every tour in this order.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: tour name -> module (relative to this package)
TOURS: dict[str, str] = {
    "buffer": ".buffer",
    "buffer-latency": ".buffer_latency",
    "wire": ".wire",
    "transport": ".transport",
    "frames": ".frames",
    "chat": ".chat",
    "pipeline": ".pipeline",
}


def load(name: str) -> ModuleType:
    return importlib.import_module(TOURS[name], __name__)
