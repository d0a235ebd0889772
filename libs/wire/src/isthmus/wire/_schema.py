"""JSON Schema of the control messages, for clients in other languages."""

from __future__ import annotations

from typing import Any

import msgspec

from ._header import MessageType
from ._messages import CONTROL_MESSAGES
from ._version import __version__

__all__ = ["json_schema"]


def json_schema() -> dict[str, Any]:
    """A JSON Schema (2020-12) document: one definition per control message, and the frame
    type codes in ``x-isthmus-types``."""
    schemas, components = msgspec.json.schema_components(
        CONTROL_MESSAGES, ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://isthmus.dev/schemas/wire/{__version__}/control.json",
        "title": "isthmus-wire control messages",
        "description": "Bodies of isthmus-wire control frames, by message type.",
        "anyOf": list(schemas),
        "$defs": components,
        "x-isthmus-types": {m.name.lower(): int(m) for m in MessageType},
    }
