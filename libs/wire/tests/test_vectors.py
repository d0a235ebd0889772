"""The golden vectors (tests/vectors) decode to exactly what their JSON says, and are current.

The same files are decoded by the JavaScript decoder (js/test/vectors.test.mjs).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from isthmus.wire import FrameDecoder, MessageType, ProtocolError

VECTORS = Path(__file__).resolve().parent / "vectors"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("wire_vectors_generate", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


GEN = _generator()
NAMES = sorted(p.stem for p in VECTORS.glob("*.json"))


def test_there_are_vectors_for_both_decoders() -> None:
    metas = [json.loads((VECTORS / f"{n}.json").read_text()) for n in NAMES]
    assert len([m for m in metas if "js" in m["decoders"]]) >= 20
    assert any(m["error"] is None and m["messages"] for m in metas)
    assert len({m["error"]["code"] for m in metas if m["error"]}) >= 10


def test_vectors_are_current() -> None:
    """Editing the generator or the encoder without regenerating fails here."""
    assert GEN.main(["--check"]) == 0, "run: python libs/wire/tests/vectors/generate.py"


def _as_expected(header: Any, message: Any) -> dict[str, Any]:
    type_name = MessageType(header.type).name.lower()
    if header.type >= 64:
        body, encoding = GEN.packet_json(message), "binary"
    else:
        body = msgspec.to_builtins(message)
        encoding = "msgpack" if header.flags & 1 else "json"
    return {
        "type": type_name,
        "stream": header.stream,
        "seq": header.seq,
        "timestamp_ns": str(header.timestamp_ns),
        "encoding": encoding,
        "body": body,
    }


@pytest.mark.parametrize("name", NAMES)
def test_vector_decodes(name: str) -> None:
    meta = json.loads((VECTORS / f"{name}.json").read_text())
    data = (VECTORS / f"{name}.bin").read_bytes()
    decoder = FrameDecoder(**meta["limits"])
    if meta["feed"] == "bytewise":
        for i in range(len(data)):
            decoder.feed(data[i : i + 1])
    else:
        decoder.feed(data)
    decoder.feed(b"")  # end of stream
    got: list[dict[str, Any]] = []
    error: ProtocolError | None = None
    while True:
        try:
            item = decoder.next()
        except ProtocolError as exc:
            error = exc
            break
        if item is None:
            break
        header, message, _ = item
        if header.type == 0:  # ConnectionClosed
            continue
        got.append(json.loads(json.dumps(_as_expected(header, message))))
    assert got == meta["messages"]
    if meta["error"] is None:
        assert error is None
    else:
        assert error is not None
        assert (error.code.value, error.offset) == (meta["error"]["code"], meta["error"]["offset"])
