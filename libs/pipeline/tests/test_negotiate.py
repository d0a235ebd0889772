"""Caps negotiation: matches, mismatch suggestions, converter insertion, behaviours,
frame constraints, runtime caps and renegotiation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from isthmus.pipeline import (
    Caps,
    FrameConstraint,
    NegotiationError,
    Node,
    Pipeline,
    Port,
    renegotiate,
)

MIC48 = "audio(sample_rate=48000, channels=1, format=f32, frame_ms=20)"


class Sink16k(Node):
    node_type = "n_sink16k"
    inputs = {"in": Port("audio(sample_rate=16000, channels=1, format=f32)")}
    outputs: dict[str, Port] = {}

    def process(self, item: Any, port: str) -> None:
        return None


class Meter(Node):
    """An adaptive node: takes a range, gives what it got."""

    node_type = "n_meter"
    inputs = {"in": Port("audio(sample_rate=8000..48000)", behaviour="adaptive")}
    outputs = {"out": Port("audio", behaviour="passthrough")}

    def process(self, item: Any, port: str) -> Any:
        return item


class FileLike(Node):
    """A runtime-discovered source."""

    node_type = "n_file"
    inputs: dict[str, Port] = {}
    outputs = {"out": Port("audio", behaviour="runtime")}

    def generate(self) -> Any:
        return iter(())


class Adaptive48(Node):
    """A source that can produce any rate in a range (the sink should choose)."""

    node_type = "n_adaptive_src"
    inputs: dict[str, Port] = {}
    outputs = {"out": Port("audio(sample_rate=8000..48000, channels=1, format=f32, frame_ms=20)")}

    def generate(self) -> Any:
        return iter(())


class Needs512(Node):
    node_type = "n_needs512"
    inputs = {
        "in": Port(
            "audio(sample_rate=16000, channels=1, format=f32)",
            frame=FrameConstraint(samples=(512,)),
        )
    }
    outputs: dict[str, Port] = {}

    def process(self, item: Any, port: str) -> None:
        return None


def two(src_caps: str, dst: Any, **dst_params: Any) -> Pipeline:
    p = Pipeline()
    p.add("mic", "input", caps=src_caps)
    p.add("vad", dst, **dst_params)
    p.connect("mic", "vad")
    return p


def test_static_match_gives_fixed_caps_per_edge() -> None:
    p = two("audio(sample_rate=16000, channels=1, format=f32, frame_ms=20)", Sink16k)
    n = p.negotiate()
    assert n.caps("mic") == Caps.parse(
        "audio(sample_rate=16000, channels=1, format=f32, frame_ms=20)"
    )
    assert n.inserted == () and n.deferred == ()


def test_mismatch_names_the_nodes_and_suggests_a_resampler() -> None:
    p = two(MIC48, Sink16k)
    with pytest.raises(NegotiationError) as ei:
        p.negotiate()
    assert ei.value.suggestions == [
        "insert a resampler between 'mic' and 'vad' to convert 48000 Hz to 16000 Hz"
    ]
    assert "insert a resampler between 'mic' and 'vad'" in str(ei.value)
    assert len(p.nodes) == 2  # nothing was changed


def test_every_mismatching_field_gets_a_suggestion() -> None:
    p = two("audio(sample_rate=44100, channels=2, format=s16, frame_ms=20)", Sink16k)
    with pytest.raises(NegotiationError) as ei:
        p.negotiate()
    assert ei.value.suggestions == [
        "insert a sample format converter between 'mic' and 'vad' to convert s16 to f32",
        "insert a channel mixer between 'mic' and 'vad' to convert 2 channels to 1",
        "insert a resampler between 'mic' and 'vad' to convert 44100 Hz to 16000 Hz",
    ]


def test_media_mismatch_is_not_converted() -> None:
    p = two("video(width=4, height=4)", Sink16k)
    with pytest.raises(NegotiationError, match=r"gives video but 'vad\.in' takes audio"):
        p.negotiate(auto_convert=True)


def test_auto_convert_inserts_converters_in_order() -> None:
    p = two("audio(sample_rate=44100, channels=2, format=s16, frame_ms=20)", Sink16k)
    n = p.negotiate(auto_convert=True)
    assert n.inserted == ("vad_sample_format", "vad_channel_mix", "vad_resample")
    assert [str(c) for c in p.connections] == [
        "mic.out -> vad_sample_format.in",
        "vad_sample_format.out -> vad_channel_mix.in",
        "vad_channel_mix.out -> vad_resample.in",
        "vad_resample.out -> vad.in",
    ]
    assert p.nodes["vad_resample"].params == {"sample_rate": 16000}
    assert n.caps("vad_resample") == Caps.parse(
        "audio(sample_rate=16000, channels=1, format=f32, frame_ms=20)"
    )


def test_configured_output_comes_from_params() -> None:
    p = two(MIC48, "resample", sample_rate=16000)
    p.add("sink", Sink16k)
    p.connect("vad", "sink")
    n = p.negotiate()
    assert n.caps("vad").get("sample_rate") == 16000


def test_passthrough_and_adaptive_chains_follow_the_input() -> None:
    p = two(MIC48, Meter)
    p.add("m2", Meter)
    p.add("out", "output")
    p.chain("vad", "m2", "out")
    n = p.negotiate()
    assert n.caps("m2") == Caps.parse(MIC48)


def test_reverse_pass_lets_the_sink_choose_what_an_adaptive_chain_produces() -> None:
    p = Pipeline()
    p.add("src", Adaptive48)
    p.add("meter", Meter)
    p.add("sink", Sink16k)
    p.chain("src", "meter", "sink")
    n = p.negotiate()
    assert n.caps("src").get("sample_rate") == 16000
    assert n.caps("meter").get("sample_rate") == 16000


def test_frame_constraint_fails_with_a_rechunk_suggestion_and_auto_convert_fixes_it() -> None:
    p = two("audio(sample_rate=16000, channels=1, format=f32, frame_ms=25)", "webrtcvad")
    with pytest.raises(NegotiationError) as ei:
        p.negotiate()
    assert ei.value.suggestions == [
        "insert a rechunker between 'mic' and 'vad' to cut 25 ms chunks into 30 ms chunks "
        "('vad.in' needs frame_ms in 10/20/30)"
    ]
    n = p.negotiate(auto_convert=True)
    assert n.inserted == ("vad_rechunk",)
    assert n.caps("vad_rechunk").get("frame_ms") == 30


def test_silero_style_sample_constraint_gets_a_512_sample_rechunker() -> None:
    p = two("audio(sample_rate=16000, channels=1, format=f32, frame_ms=20)", Needs512)
    n = p.negotiate(auto_convert=True)
    assert p.nodes[n.inserted[0]].params == {"samples": 512}
    assert n.caps(n.inserted[0]).get("frame_ms") == 32


def test_runtime_caps_are_deferred_until_discovered() -> None:
    p = Pipeline()
    p.add("file", FileLike)
    p.add("meter", Meter)
    p.add("out", "output")
    p.chain("file", "meter", "out")
    n = p.negotiate()
    assert {str(c) for c in n.deferred} == {"file.out -> meter.in", "meter.out -> out.in"}
    found = p.negotiate(discovered={"file": {"out": Caps.parse(MIC48)}})
    assert found.deferred == () and found.caps("meter") == Caps.parse(MIC48)


def test_fan_out_and_fan_in_negotiate_each_edge() -> None:
    p = Pipeline()
    p.add("mic", "input", caps=MIC48)
    p.add("tee", "tee", outputs=2)
    p.add("a", "resample", sample_rate=16000)
    p.add("b", Meter)
    p.add("merge", "merge", inputs=2)
    p.add("out", "output")
    p.connect("mic", "tee")
    p.connect("tee.out0", "a")
    p.connect("tee.out1", "b")
    p.connect("a", "merge.in0")
    p.connect("b", "merge.in1")
    p.connect("merge", "out")
    # One merged stream needs one format: the reverse pass carries the first branch's rate
    # back up the other branch, and the error says where a resampler would go.
    with pytest.raises(NegotiationError) as ei:
        p.negotiate()
    assert (
        "insert a resampler between 'b' and 'merge' to convert 48000 Hz to 16000 Hz"
        in ei.value.suggestions
    )
    n = p.negotiate(auto_convert=True)
    assert n.inserted == ("merge_resample",)
    assert n.caps("tee.out0").get("sample_rate") == 48000
    assert n.caps("merge").get("sample_rate") == 16000


def test_renegotiation_when_a_format_changes_mid_stream() -> None:
    p = two(MIC48, "resample", sample_rate=16000)
    p.add("vad2", "webrtcvad")
    p.connect("vad", "vad2")
    n = p.negotiate()
    assert n.caps("mic").get("sample_rate") == 48000
    n2 = renegotiate(
        p,
        n,
        "mic",
        "out",
        Caps.parse("audio(sample_rate=44100, channels=1, format=f32, frame_ms=20)"),
    )
    assert n2.caps("mic").get("sample_rate") == 44100
    assert n2.caps("vad").get("sample_rate") == 16000  # the resampler absorbs the change
    with pytest.raises(NegotiationError, match="convert 2 channels to 1"):
        renegotiate(
            p,
            n,
            "mic",
            "out",
            Caps.parse("audio(sample_rate=44100, channels=2, format=f32, frame_ms=20)"),
        )


def _unused(_: Mapping[str, Any]) -> None:
    return None
