"""Manifests: the seed's format, node.port addressing, round trips, errors with lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isthmus.pipeline import (
    GraphError,
    ManifestError,
    NegotiationError,
    Pipeline,
    dump,
    load,
    to_manifest,
    validate_manifest,
)

HERE = Path(__file__).parent / "manifests"


def test_the_seed_format_loads_and_keeps_unknown_fields() -> None:
    p = load(HERE / "seed.yaml")
    assert p.name == "seed-voice" and list(p.nodes) == ["mic", "resample", "vad", "segments"]
    assert p.nodes["resample"].params == {"sample_rate": 16000}
    assert p.nodes["resample"].extra == {"is_streaming": True}
    c = p.connections[-1]
    assert (c.src, c.src_port, c.dst, c.dst_port, c.maxsize, c.overflow) == (
        "vad",
        "segments",
        "segments",
        "in",
        8,
        "drop_oldest",
    )
    m = to_manifest(p)
    assert m["nodes"][1] == {
        "id": "resample",
        "node_type": "resample",
        "params": {"sample_rate": 16000},
        "is_streaming": True,
    }


def test_round_trip_through_yaml_and_json() -> None:
    p = load(HERE / "seed.yaml")
    for fmt in ("yaml", "json"):
        q = load(dump(p, format=fmt))
        assert to_manifest(q) == to_manifest(p)
        assert [str(c) for c in q.connections] == [str(c) for c in p.connections]


def test_code_built_pipelines_round_trip_too() -> None:
    p = Pipeline("built")
    p.add("mic", "input", caps="audio(sample_rate=16000, channels=1, format=f32, frame_ms=20)")
    p.add("vad", "webrtcvad", executor="thread", options={"on_error": "skip"}, aggressiveness=3)
    p.add("out", "output")
    p.connect("mic", "vad")
    p.connect("vad.segments", "out", maxsize=4)
    q = load(to_manifest(p))
    assert q.nodes["vad"].executor == "thread" and q.nodes["vad"].options == {"on_error": "skip"}
    assert to_manifest(q) == to_manifest(p)


def test_errors_name_the_file_line_node_and_port(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as ei:
        load(HERE / "broken.yaml")
    e = ei.value
    assert e.node == "rs" and e.line == 5 and "broken.yaml:5" in str(e)
    assert "unknown node type 'resampel' (did you mean 'resample'?)" in str(e)


def test_validate_collects_every_problem() -> None:
    errors = validate_manifest(HERE / "broken.yaml")
    text = [str(e) for e in errors]
    assert len(errors) == 3, text
    assert any("broken.yaml:5" in t and "resampel" in t for t in text)
    assert any("broken.yaml:7" in t and "unknown parameter 'agressiveness'" in t for t in text)
    assert any("broken.yaml:14" in t and "no input port 'nope'" in t for t in text)
    port_err = next(e for e in errors if "nope" in str(e))
    assert (
        isinstance(port_err, ManifestError) and port_err.port == "nope" and port_err.node == "out"
    )


def test_json_manifests_have_lines_and_negotiation_errors_have_suggestions() -> None:
    errors = validate_manifest(HERE / "mismatch.json")
    assert len(errors) == 1 and isinstance(errors[0], NegotiationError)
    assert errors[0].suggestions == [
        "insert a resampler between 'mic' and 'vad' to convert 44100 Hz to 48000 Hz"
    ]
    assert validate_manifest(HERE / "mismatch.json", auto_convert=True) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nodes: 3", "'nodes' must be a non-empty list"),
        ("nodes:\n  - {node_type: input}", "line 2: nodes[0] needs a string 'id'"),
        (
            "nodes:\n  - {id: a, node_type: input}\n  - {id: a, node_type: output}",
            "duplicate node id 'a'",
        ),
        ("nodes:\n  - {id: a, node_type: input, executor: gpu}", "unknown executor 'gpu'"),
        ("nodes: [ {id: a", "not valid YAML/JSON"),
        ("nodes:\n  - {id: a, node_type: output}", "input port 'in' of node 'a' is not connected"),
        (
            "nodes:\n  - {id: a, node_type: tee}\n  - {id: b, node_type: tee}\nconnections:\n  - {from: a.out0, to: b}\n  - {from: b.out0, to: a}",
            "cycle",
        ),
        (
            "nodes:\n  - {id: a, node_type: input}\nconnections:\n  - {from: a}",
            "must be a mapping with string 'from' and 'to'",
        ),
    ],
)
def test_malformed_manifests(text: str, message: str) -> None:
    with pytest.raises(
        (ManifestError, GraphError), match=message.replace("[", r"\[").replace("(", r"\(")
    ):
        load(text)


def test_missing_file_and_negotiation_section(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such manifest file"):
        load(tmp_path / "nope.yaml")
    m = json.loads((HERE / "mismatch.json").read_text())
    m["negotiation"] = {"auto_convert": True}
    p = load(m)
    assert p.negotiation == {"auto_convert": True}
    assert validate_manifest(m) == []
