"""Caps strings: parsing, printing, intersection, subsets, fixation."""

from __future__ import annotations

import numpy as np
import pytest

from isthmus.pipeline import AudioChunk, Caps, CapsError, CapsSet
from isthmus.pipeline._caps import Range, parse_caps


@pytest.mark.parametrize(
    "text",
    [
        "audio",
        "any",
        "audio(sample_rate=16000, channels=1, format=f32, frame_ms=[10,20,30])",
        "audio(sample_rate=8000..48000)",
        "video(width=1920, height=1080, format=rgb24, fps=29.97)",
        "audio(format=f32) | audio(format=s16)",
    ],
)
def test_round_trip(text: str) -> None:
    assert str(parse_caps(text)) == text
    assert parse_caps(str(parse_caps(text))) == parse_caps(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty caps"),
        ("audio(rate=)", "expected a value at position 11"),
        ("audio(rate 5)", "expected '=' after 'rate' at position 11"),
        ("audio(a=1, a=2)", "duplicate field 'a' at position 11"),
        ("audio(a=[1,2)", "expected ',' or ']' at position 12"),
        ("audio(a=9..1)", "empty range 9..1"),
        ("audio(a=x..y)", "a range needs numbers"),
        ("audio(a=1) junk", "unexpected 'junk' at position 11"),
        ("audio(a=1;", "unexpected ';' at position 9"),
    ],
)
def test_parse_errors_say_what_and_where(text: str, message: str) -> None:
    with pytest.raises(CapsError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_caps(text)


def test_intersection_of_exact_values_ranges_and_sets() -> None:
    a = Caps.parse("audio(sample_rate=8000..48000, format=[f32,s16], channels=1)")
    b = Caps.parse("audio(sample_rate=[16000,96000], format=f32, frame_ms=20)")
    assert str(a.intersect(b)) == "audio(sample_rate=16000, format=f32, channels=1, frame_ms=20)"
    assert Caps.parse("audio(sample_rate=8000..16000)").intersect(
        Caps.parse("audio(sample_rate=12000..48000)")
    ) == Caps.of("audio", sample_rate=Range(12000, 16000))
    assert Caps.parse("audio(channels=1)").intersect(Caps.parse("audio(channels=2)")) is None
    assert Caps.parse("audio").intersect(Caps.parse("video")) is None
    assert Caps.parse("any").intersect(Caps.parse("video(width=2)")) == Caps.parse("video(width=2)")
    assert Caps.parse("audio(channels=1)").conflicts(
        Caps.parse("audio(channels=2, format=f32)")
    ) == ["channels"]


def test_caps_sets_keep_every_alternative_that_fits() -> None:
    s = CapsSet.parse("audio(format=f32) | audio(format=s16) | video")
    assert str(s.intersect(Caps.parse("audio(format=[s16,u8])"))) == "audio(format=s16)"
    both = s.intersect(Caps.parse("audio"))
    assert isinstance(both, CapsSet) and len(both.alternatives) == 2
    assert s.intersect(Caps.parse("text")) is None


def test_subset_and_fixed() -> None:
    fixed = Caps.parse("audio(sample_rate=16000, channels=1)")
    assert fixed.is_fixed and fixed.is_subset(Caps.parse("audio(sample_rate=8000..48000)"))
    assert not Caps.parse("audio(sample_rate=8000..48000)").is_subset(fixed)
    assert not Caps.parse("audio").is_subset(fixed)  # unconstrained is not within a constraint
    assert not Caps.parse("audio(format=[f32,s16])").is_fixed


def test_fixate_prefers_a_given_value_else_the_first_choice() -> None:
    c = Caps.parse("audio(sample_rate=8000..48000, format=[s16,f32], channels=1)")
    assert str(c.fixate()) == "audio(sample_rate=8000, format=s16, channels=1)"
    assert str(c.fixate({"sample_rate": 16000, "format": "f32"})) == (
        "audio(sample_rate=16000, format=f32, channels=1)"
    )
    assert (
        str(c.fixate({"sample_rate": 96000})) == "audio(sample_rate=8000, format=s16, channels=1)"
    )


def test_concrete_items_match_caps() -> None:
    chunk = AudioChunk(np.zeros((320, 1), np.float32), 16000)
    assert chunk.caps() == Caps.parse(
        "audio(sample_rate=16000, channels=1, format=f32, frame_ms=20)"
    )
    assert Caps.parse("audio(sample_rate=[8000,16000], frame_ms=[10,20,30])").matches(chunk)
    assert not Caps.parse("audio(format=s16)").matches(chunk)
    assert Caps.parse("any").matches(object())


def test_caps_are_hashable_values() -> None:
    assert {Caps.parse("audio(a=1, b=2)"), Caps.parse("audio(b=2, a=1)")} == {
        Caps.parse("audio(a=1, b=2)")
    }
    assert Caps.parse("audio(a=1)").with_fields(b=2, a=None) == Caps.parse("audio(b=2)")
