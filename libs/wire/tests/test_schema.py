"""The JSON Schema of the control messages: the committed copy is current, it is a valid 2020-12
schema, and it accepts the bodies the encoder writes and rejects wrongly typed ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from isthmus.wire import (
    CONTROL_MESSAGES,
    Ack,
    Error,
    Goodbye,
    Hello,
    Key,
    MessageType,
    Ping,
    Pointer,
    Pong,
    RequestKeyframe,
    StatePatch,
    Stats,
    StreamSpec,
    Welcome,
    Wheel,
    __version__,
    json_schema,
)
from isthmus.wire.__main__ import main

LIB = Path(__file__).resolve().parents[1]
SCHEMA_FILE = LIB / "schema" / "isthmus-wire.schema.json"
# nox's lib-wire session runs a copy of tests/ outside the source tree, without schema/.
IN_TREE = (LIB / "pyproject.toml").is_file()
REGENERATE = "python -m isthmus.wire schema -o libs/wire/schema/isthmus-wire.schema.json"

SAMPLES: list[Any] = [
    Hello(),
    Hello(protocol=3, name="viewer", encodings=["json"], codecs=["h264"], credits=1, token="t"),
    Welcome(),
    Welcome(
        session="s",
        encoding="json",
        codecs=["av1"],
        streams=[StreamSpec(id=7, name="thumbs", kind="video", credits=2, chunk_size=1024)],
    ),
    Goodbye(),
    Goodbye(code=1002, reason="bad_magic at offset 0"),
    Error(code="sequence"),
    Error(code="truncated", message="m", offset=2**40),
    Ping(nonce=-1, time_ns=2**62),
    Pong(nonce=5),
    Ack(stream=2, seq=10),
    RequestKeyframe(),
    RequestKeyframe(stream=9),
    Stats(),
    Stats(stream=2, fps=59.9, kbps=1e4, frames=10, dropped=1, rtt_ms=3.5, extra={"q": 0.5}),
    Pointer(x=1.5, y=-2.0),
    Pointer(kind="down", x=0.0, y=0.0, button=2, buttons=4, modifiers=15, pointer_id=3),
    Wheel(dx=1.0, dy=-3.0, mode="line", modifiers=1),
    Key(key="Enter"),
    Key(kind="up", key="a", code="KeyA", modifiers=2, repeat=True),
    StatePatch(path="/camera/zoom", value=2.5),
    StatePatch(path="/layers", op="merge", value={"a": [1, None, "x"]}, rev=7),
    StatePatch(path="/x", op="delete"),
]

WRONG: list[tuple[type[Any], dict[str, Any]]] = [
    (Pointer, {"x": "left", "y": 1.0}),
    (Pointer, {"y": 1.0}),  # x is required
    (Pointer, {"x": 1.0, "y": 1.0, "kind": "hover"}),
    (Key, {"key": 65}),
    (Key, {"key": "a", "repeat": "yes"}),
    (Ack, {"stream": 2}),
    (Ack, {"stream": 2, "seq": 1.5}),
    (Stats, {"fps": "fast"}),
    (Hello, {"encodings": "json"}),
    (Welcome, {"streams": [{"id": 1, "name": "s", "kind": "bogus"}]}),
    (StatePatch, {"path": "/a", "op": "replace"}),
    (Error, {"message": "no code"}),
    (Goodbye, {"code": "1000"}),
]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json_schema()


def validator_for(schema: dict[str, Any], cls: type[Any]) -> Any:
    return jsonschema.Draft202012Validator(
        {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{cls.__name__}"}
    )


@pytest.mark.skipif(not IN_TREE, reason="the committed schema lives in the source tree")
def test_committed_schema_is_current(schema: dict[str, Any]) -> None:
    assert SCHEMA_FILE.is_file(), f"missing; run: {REGENERATE}"
    text = SCHEMA_FILE.read_text(encoding="utf-8")
    assert json.loads(text) == schema, f"out of date; run: {REGENERATE}"
    assert text == json.dumps(schema, indent=2, sort_keys=True) + "\n", f"run: {REGENERATE}"


def test_cli_prints_and_writes_the_schema(
    schema: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema
    out = tmp_path / "s.json"
    assert main(["schema", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == json.dumps(schema, indent=2, sort_keys=True) + "\n"


def test_schema_is_valid_2020_12(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert __version__ in schema["$id"]


def test_type_codes(schema: dict[str, Any]) -> None:
    types = schema["x-isthmus-types"]
    assert types == {t.name.lower(): int(t) for t in MessageType}
    # every control type code names a definition (snake_case -> CamelCase)
    for cls in CONTROL_MESSAGES:
        name = cls.TYPE.name.lower()
        camel = "".join(part.title() for part in name.split("_"))
        assert camel == cls.__name__ and camel in schema["$defs"]
        assert types[name] == int(cls.TYPE)


def test_every_field_is_described(schema: dict[str, Any]) -> None:
    for cls in CONTROL_MESSAGES:
        definition = schema["$defs"][cls.__name__]
        assert set(definition["properties"]) == set(cls.__struct_fields__)
        info = msgspec.inspect.type_info(cls)
        required = {f.name for f in info.fields if f.required}
        assert set(definition.get("required", [])) == required


def test_samples_cover_every_message() -> None:
    assert {type(m) for m in SAMPLES} == set(CONTROL_MESSAGES)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_encoded_bodies_validate(schema: dict[str, Any], message: Any) -> None:
    validator = validator_for(schema, type(message))
    validator.validate(msgspec.to_builtins(message))
    validator.validate(json.loads(msgspec.json.encode(message)))  # the JSON body itself


@pytest.mark.parametrize(("cls", "body"), WRONG, ids=lambda v: getattr(v, "__name__", ""))
def test_wrong_bodies_are_rejected(
    schema: dict[str, Any], cls: type[Any], body: dict[str, Any]
) -> None:
    assert not validator_for(schema, cls).is_valid(body)
    with pytest.raises(msgspec.ValidationError):  # and the decoder agrees
        msgspec.json.decode(json.dumps(body), type=cls)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_the_whole_document_accepts_every_body(schema: dict[str, Any], message: Any) -> None:
    """A client that does not look at the frame type can validate against the document."""
    jsonschema.Draft202012Validator(schema).validate(msgspec.to_builtins(message))


def test_the_whole_document_rejects_what_no_message_is(schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    assert not validator.is_valid([1, 2])
    # wrong types for a field of every message whose fields are all optional
    assert not validator.is_valid(
        {"code": 1.5, "nonce": "x", "stream": "x", "x": "s", "protocol": "x"}
    )
