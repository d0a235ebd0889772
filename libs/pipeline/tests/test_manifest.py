"""Manifests: the seed's format, node.port addressing, round trips, errors with lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from isthmus.pipeline import (
    AudioChunk,
    GraphError,
    ManifestError,
    NegotiationError,
    Node,
    Pipeline,
    Port,
    dump,
    load,
    run,
    to_manifest,
    validate_manifest,
)

HERE = Path(__file__).parent / "manifests"


class Doubler(Node):
    """A test node type that is deliberately not registered: manifests name it module:qualname."""

    inputs = {"in": Port("audio")}
    outputs = {"out": Port("audio", behaviour="passthrough")}

    def __init__(self, *, factor: float = 2.0) -> None:
        self.factor = factor

    def process(self, item: AudioChunk, port: str) -> AudioChunk:
        return AudioChunk(item.samples * np.float32(self.factor), item.sample_rate, item.pts)


def shape(p: Pipeline) -> tuple[list[Any], list[Any]]:
    """What a round trip must preserve: nodes with their params, executor, options and unknown
    fields; connections with their ports and options."""
    nodes = [
        (s.id, s.type.name, s.params, s.executor, s.options, s.extra) for s in p.nodes.values()
    ]
    conns = [(c.src, c.src_port, c.dst, c.dst_port, dict(c.options)) for c in p.connections]
    return nodes, conns


# --- the seed's format -------------------------------------------------------------------------
def test_the_seed_format_loads_and_keeps_unknown_fields() -> None:
    p = load(HERE / "seed.yaml")
    assert p.name == "seed-voice" and p.description == "the seed's format, as it is"
    assert list(p.nodes) == ["mic", "resample", "vad", "segments"]
    assert p.nodes["resample"].params == {"sample_rate": 16000}
    assert p.nodes["resample"].extra == {"is_streaming": True}
    c = p.connections[-1]
    assert (c.src, c.src_port, c.dst, c.dst_port) == ("vad", "segments", "segments", "in")
    assert (c.maxsize, c.overflow) == (8, "drop_oldest")
    m = to_manifest(p)
    assert m["nodes"][1] == {
        "id": "resample",
        "node_type": "resample",
        "params": {"sample_rate": 16000},
        "is_streaming": True,
    }


def test_every_seed_field_survives_a_round_trip_unchanged() -> None:
    text = (HERE / "seed_full.yaml").read_text()
    p = load(text)
    assert to_manifest(p) == yaml.safe_load(text)
    # The seed's metadata.auto_negotiate is this library's negotiation.auto_convert.
    assert p.negotiation == {"auto_convert": True}
    vad = p.nodes["vad"]
    assert vad.executor == "thread"
    assert vad.options == {"on_error": "isolate", "retry": {"attempts": 2}}
    assert vad.extra == {
        "is_output_node": True,
        "capabilities": {"cpu": {"cores": 1}, "memory_gb": 0.5},
    }
    assert p.nodes["resample"].extra["execution"] == {
        "placement": "local",
        "reason": "requires_native_libs",
    }


def test_seed_manifests_with_null_params_and_no_connections_load() -> None:
    p = load(
        {
            "version": "v1",
            "metadata": {"name": "one"},
            "nodes": [{"id": "tone", "node_type": "array_source", "params": None}],
        }
    )
    assert p.nodes["tone"].params == {} and p.connections == []
    assert p.name == "one"


# --- node.port addressing ----------------------------------------------------------------------
def test_node_port_addressing_and_default_ports() -> None:
    p = load(
        """
nodes:
  - {id: mic, node_type: input, params: {caps: "audio(sample_rate=16000, channels=1, format=f32, frame_ms=20)"}}
  - {id: split, node_type: tee}
  - {id: level, node_type: level_meter}
  - {id: both, node_type: merge}
  - {id: levels, node_type: output}
  - {id: audio, node_type: output}
connections:
  - {from: mic, to: split}
  - {from: split.out0, to: level}
  - {from: level.levels, to: levels}
  - {from: level, to: both.in0}
  - {from: split.out1, to: both.in1}
  - {from: both, to: audio}
"""
    )
    assert [str(c) for c in p.connections] == [
        "mic.out -> split.in",
        "split.out0 -> level.in",
        "level.levels -> levels.in",
        "level.out -> both.in0",  # "level" alone is its default output, "out"
        "split.out1 -> both.in1",
        "both.out -> audio.in",
    ]
    m = to_manifest(p)
    # Short form only for a node's only port, so the written manifest is explicit elsewhere.
    assert m["connections"][0] == {"from": "mic", "to": "split"}
    assert m["connections"][3] == {"from": "level.out", "to": "both.in0"}
    assert shape(load(m)) == shape(p)


def test_a_node_with_several_ports_and_no_default_needs_the_port_named() -> None:
    text = """nodes:
  - {id: mic, node_type: input}
  - {id: split, node_type: tee}
  - {id: out, node_type: output}
connections:
  - {from: mic, to: split}
  - {from: split, to: out}
"""
    with pytest.raises(ManifestError) as ei:
        load(text)
    e = ei.value
    assert (e.node, e.line) == ("split", 7)
    assert "several output ports (out0, out1): name one" in str(e)


# --- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_round_trip_through_text(fmt: str) -> None:
    p = load(HERE / "seed_full.yaml")
    text = dump(p, format=fmt)
    if fmt == "json":
        assert json.loads(text)["metadata"]["name"] == "seed-full"
    q = load(text)
    assert shape(q) == shape(p)
    assert (q.name, q.description, q.negotiation, q.metadata) == (
        p.name,
        p.description,
        p.negotiation,
        p.metadata,
    )
    assert to_manifest(q) == to_manifest(p)


def test_dump_writes_files_that_load_reads_back(tmp_path: Path) -> None:
    p = load(HERE / "seed.yaml")
    for name, fmt in (("m.yaml", "yaml"), ("m.json", "json")):
        text = dump(p, tmp_path / name, format=fmt)
        assert (tmp_path / name).read_text() == text
        assert shape(load(tmp_path / name)) == shape(p)  # a Path
        assert shape(load(str(tmp_path / name))) == shape(p)  # a str path
    with pytest.raises(ValueError, match="'yaml' or 'json'"):
        dump(p, format="toml")


def test_code_built_pipelines_round_trip_with_executors_options_and_edges() -> None:
    p = Pipeline("built", description="built in code")
    p.add("mic", "input", caps="audio(sample_rate=16000, channels=1, format=f32, frame_ms=20)")
    p.add("vad", "webrtcvad", executor="thread", options={"on_error": "skip"}, aggressiveness=3)
    p.add("out", "output")
    p.connect("mic", "vad")
    p.connect("vad.segments", "out", maxsize=4, overflow="latest")
    p.negotiation = {"auto_convert": True}
    q = load(to_manifest(p))
    assert shape(q) == shape(p)
    assert q.negotiation == {"auto_convert": True} and q.description == "built in code"
    assert to_manifest(q) == to_manifest(p)


def test_unregistered_node_classes_are_written_as_module_and_qualname() -> None:
    p = Pipeline("doubling")
    p.add("mic", "input", caps="audio(sample_rate=8000, channels=1, format=f32)")
    p.add("x2", Doubler, factor=3.0)
    p.add("out", "output")
    p.chain("mic", "x2", "out")
    m = to_manifest(p)
    assert m["nodes"][1]["node_type"] == f"{__name__}:Doubler"
    q = load(m)
    assert shape(q) == shape(p)
    chunk = AudioChunk(np.full((80, 1), 0.25, np.float32), 8000)
    got = run(q, inputs={"mic": [chunk]})
    assert np.allclose(got["out"][0].samples, 0.75)


# --- errors: each kind names the line, the node and the port -----------------------------------
ERRORS = [
    pytest.param(
        "nodes:\n  - id: rs\n    node_type: resampel\n",
        (3, "rs", None),
        "unknown node type 'resampel' (did you mean 'resample'?)",
        id="unknown-node-type",
    ),
    pytest.param(
        "nodes:\n  - {id: a, node_type: input}\n  - {id: a, node_type: output}\n",
        (3, "a", None),
        "duplicate node id 'a' (first declared on line 2)",
        id="duplicate-id",
    ),
    pytest.param(
        "nodes:\n  - id: rs\n    node_type: resample\n    params:\n      sample_rte: 16000\n",
        (5, "rs", None),
        "unknown parameter 'sample_rte' (did you mean 'sample_rate'?); resample takes: "
        "sample_rate=16000, quality='HQ'",
        id="unknown-param",
    ),
    pytest.param(
        "nodes:\n  - id: f\n    node_type: audio_file_source\n",
        (2, "f", None),
        "missing required parameter 'path'; audio_file_source takes: path, ",
        id="missing-param",
    ),
    pytest.param(
        "nodes:\n  - id: rs\n    node_type: resample\n    params: {sample_rate: 16k}\n",
        (4, "rs", None),
        "parameter 'sample_rate' must be int, not str '16k'",
        id="param-type",
    ),
    pytest.param(
        "nodes:\n  - id: rs\n    node_type: resample\n    params: {sample_rate: -8000}\n",
        (4, "rs", None),
        "bad params for resample: sample_rate must be positive",
        id="param-refused-by-the-node",
    ),
    pytest.param(
        "nodes:\n  - {id: mic, node_type: input}\n  - {id: out, node_type: output}\n"
        "connections:\n  - from: mic\n    to: out.nope\n",
        (6, "out", "nope"),
        "no input port 'nope' (it has: in)",
        id="unknown-input-port",
    ),
    pytest.param(
        "nodes:\n  - {id: mic, node_type: input}\n  - {id: out, node_type: output}\n"
        "connections:\n  - from: mic.audio\n    to: out\n",
        (5, "mic", "audio"),
        "no output port 'audio' (it has: out)",
        id="unknown-output-port",
    ),
    pytest.param(
        "nodes:\n  - {id: mic, node_type: input}\n  - {id: out, node_type: output}\n"
        "connections:\n  - {from: mik, to: out}\n",
        (5, "mik", None),
        "'from' names an unknown node 'mik' (did you mean 'mic'?)",
        id="unknown-node-in-connection",
    ),
    pytest.param(
        "nodes:\n  - {id: mic, node_type: input}\n  - {id: out, node_type: output}\n"
        "connections:\n  - {from: mic, to: out..in}\n",
        (5, "out", None),
        "'to: out..in' is not 'node' or 'node.port'",
        id="connection-syntax",
    ),
    pytest.param(
        "nodes:\n  - {id: mic, node_type: input}\nconnections:\n  - {from: mic}\n",
        (4, None, None),
        "connections[0]: 'to' is missing",
        id="connection-without-to",
    ),
    pytest.param(
        "nodes:\n  - {id: mic, node_type: input}\n  - {id: out, node_type: output}\n"
        "connections:\n  - from: mic\n    to: out\n    maxsize: 0\n",
        (7, "out", None),
        "'maxsize' of mic -> out must be a whole number >= 1, not 0",
        id="maxsize",
    ),
    pytest.param(
        "nodes:\n  - {id: mic, node_type: input}\n  - {id: out, node_type: output}\n"
        "connections:\n  - {from: mic, to: out, overflow: explode}\n",
        (5, "out", None),
        "'overflow' of mic -> out must be one of block, drop_oldest",
        id="overflow",
    ),
    pytest.param(
        "nodes:\n  - {id: a, node_type: tee}\n  - {id: b, node_type: tee}\n"
        "connections:\n  - {from: a.out0, to: b}\n  - {from: b.out0, to: a}\n",
        (2, "a", None),
        "the pipeline has a cycle: a -> b -> a",
        id="cycle",
    ),
    pytest.param(
        "nodes:\n  - {id: mic, node_type: input}\n  - {id: out, node_type: output}\n",
        (3, "out", "in"),
        "input port 'in' is not connected",
        id="unconnected-input",
    ),
    pytest.param(
        "nodes:\n  - id: rs\n    node_type: resample\n    params: [16000]\n",
        (4, "rs", None),
        "'params' must be a mapping",
        id="params-not-a-mapping",
    ),
    pytest.param(
        "nodes:\n  - {id: a, node_type: input, executor: gpu}\n",
        (2, "a", None),
        "unknown executor 'gpu' (one of: asyncio, direct, task, thread, process, ray)",
        id="executor",
    ),
    pytest.param(
        "nodes:\n  - id: a\n    node_type: input\n    options:\n      on_error: explode\n",
        (5, "a", None),
        "option 'on_error': 'explode' is not one of stop, skip, isolate",
        id="on-error-option",
    ),
    pytest.param(
        "nodes:\n  - id: a\n    node_type: input\n    options: {retry: {attempts: 0}}\n",
        (4, "a", None),
        "option 'retry': retry attempts must be at least 1",
        id="retry-option",
    ),
    pytest.param(
        "nodes:\n  - {id: 7, node_type: input}\n",
        (2, None, None),
        "nodes[0] needs a string 'id'",
        id="id-type",
    ),
    pytest.param(
        "nodes:\n  - {id: a.b, node_type: input}\n",
        (2, "a.b", None),
        "invalid node id 'a.b'",
        id="id-with-a-dot",
    ),
    pytest.param("nodes: 3\n", (1, None, None), "'nodes' must be a non-empty list", id="nodes"),
    pytest.param(
        "nodes:\n  - {id: a, node_type: input}\nconnections: {from: a}\n",
        (3, None, None),
        "'connections' must be a list",
        id="connections",
    ),
    pytest.param(
        "negotiation: {auto_convert: maybe}\nnodes:\n  - {id: a, node_type: input}\n",
        (1, None, None),
        "'negotiation.auto_convert' must be true or false",
        id="negotiation",
    ),
    pytest.param(
        "nodes:\n  - id: a\n    node_type: input\n    node_type: output\n",
        (4, None, None),
        "duplicate key 'node_type'",
        id="duplicate-yaml-key",
    ),
    pytest.param("nodes: [ {id: a\n", (2, None, None), "not valid YAML/JSON", id="yaml-syntax"),
]


@pytest.mark.parametrize(("text", "where", "message"), ERRORS)
def test_each_error_names_its_line_node_and_port(
    text: str, where: tuple[int, str | None, str | None], message: str
) -> None:
    line, node, port = where
    with pytest.raises(ManifestError) as ei:
        load(text)
    e = ei.value
    assert message in e.reason, str(e)
    assert (e.line, e.node, e.port) == (line, node, port), str(e)
    prefix = f"line {line}" + (f", node {node!r}" if node else "")
    prefix += f" port {port!r}" if port else ""
    assert str(e).startswith(prefix + ": "), str(e)
    assert isinstance(e, GraphError)  # one except clause catches graph and manifest errors


def test_errors_from_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as ei:
        load(HERE / "broken.yaml")
    e = ei.value
    assert (e.node, e.line, e.source) == ("rs", 6, str(HERE / "broken.yaml"))
    assert str(e).startswith(f"{HERE / 'broken.yaml'}:6, node 'rs': unknown node type 'resampel'")
    with pytest.raises(ManifestError, match="no such manifest file"):
        load(tmp_path / "nope.yaml")


def test_json_manifests_have_line_numbers_even_when_indented_with_tabs(tmp_path: Path) -> None:
    path = tmp_path / "tabs.json"
    path.write_text(
        '{\n\t"nodes": [\n\t\t{"id": "mic", "node_type": "input"},\n'
        '\t\t{"id": "vad", "node_type": "webrtcvad", "params": {"aggresiveness": 1}}\n\t]\n}\n'
    )
    with pytest.raises(ManifestError) as ei:
        load(path)
    assert (ei.value.line, ei.value.node) == (4, "vad")
    assert "did you mean 'aggressiveness'?" in str(ei.value)


# --- validate_manifest -------------------------------------------------------------------------
def test_validate_collects_every_problem_in_file_order() -> None:
    errors = validate_manifest(HERE / "broken.yaml")
    assert [(e.line, e.node) for e in errors if isinstance(e, ManifestError)] == [
        (6, "rs"),
        (10, "vad"),
        (15, "out"),
    ]
    assert "unknown parameter 'agressiveness' (did you mean 'aggressiveness'?)" in str(errors[1])
    assert errors[2].port == "nope"  # type: ignore[union-attr]
    # The broken connection into "out" is reported once: not again as "in is not connected".
    assert len(errors) == 3


def test_validate_reports_problems_of_every_kind_at_once() -> None:
    text = """nodes:
  - {id: mic, node_type: input}
  - {id: rs, node_type: resample, params: {sample_rate: fast}}
  - {id: mic, node_type: output}
  - {id: out, node_type: output}
  - {id: lonely, node_type: output}
connections:
  - {from: mic, to: rs}
  - {from: mic, to: out, maxsize: -1}
  - {from: ghost, to: out}
"""
    errors = validate_manifest(text)
    got = [(e.line, e.node, e.port) for e in errors if isinstance(e, ManifestError)]
    assert got == [
        (3, "rs", None),  # sample_rate must be int
        (4, "mic", None),  # duplicate id
        (6, "lonely", "in"),  # unconnected input
        (9, "out", None),  # maxsize
        (10, "ghost", None),  # unknown node
    ], [str(e) for e in errors]


def test_negotiation_failures_have_suggestions_and_auto_convert_fixes_them() -> None:
    errors = validate_manifest(HERE / "mismatch.json")
    assert len(errors) == 1 and isinstance(errors[0], NegotiationError)
    assert errors[0].suggestions == [
        "insert a resampler between 'mic' and 'vad' to convert 44100 Hz to 48000 Hz"
    ]
    assert validate_manifest(HERE / "mismatch.json", auto_convert=True) == []
    m = json.loads((HERE / "mismatch.json").read_text())
    m["negotiation"] = {"auto_convert": True}
    assert load(m).negotiation == {"auto_convert": True}
    assert validate_manifest(m) == []
    assert len(validate_manifest(m, auto_convert=False)) == 1


def test_unknown_options_are_kept_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="isthmus.pipeline"):
        p = load("nodes:\n  - {id: a, node_type: input, options: {on_eror: skip}}\n")
    assert p.nodes["a"].options == {"on_eror": "skip"}
    assert "option 'on_eror' is not used by isthmus.pipeline (did you mean 'on_error'?)" in (
        caplog.text
    )


def test_a_manifest_must_be_a_mapping_path_or_text() -> None:
    with pytest.raises(ManifestError, match="a manifest is a mapping"):
        load("- just\n- a list\n")
    with pytest.raises(ManifestError, match="not int"):
        load(42)  # type: ignore[arg-type]
