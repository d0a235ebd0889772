"""Caps: what media a port takes or gives, GStreamer-style.

``audio(sample_rate=16000, channels=1, format=f32, frame_ms=[10,20,30])`` is a media type and
fields; a field's value is exact (``16000``, ``f32``), an inclusive range (``8000..48000``) or a
set (``[10,20,30]``).  A missing field is unconstrained; ``any`` matches every media type;
alternatives are joined with ``|`` (a :class:`CapsSet`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import CapsError

__all__ = ["Caps", "CapsSet", "Range", "Value", "parse_caps"]

Scalar = int | float | str


@dataclass(frozen=True, slots=True)
class Range:
    """An inclusive range of numbers."""

    lo: float
    hi: float

    def __contains__(self, v: object) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and self.lo <= v <= self.hi

    def __str__(self) -> str:
        return f"{_fmt(self.lo)}..{_fmt(self.hi)}"


Value = Scalar | Range | frozenset[Scalar] | tuple[Scalar, ...]


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _norm_scalar(v: Any) -> Scalar:
    if isinstance(v, bool):
        raise CapsError(f"caps values are numbers or names, not {v!r}")
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, int | float | str):
        return v
    raise CapsError(f"caps values are numbers or names, not {v!r}")


def _norm(v: Any) -> Value:
    """A field value in canonical form: scalar, Range, or a tuple of >= 2 distinct scalars."""
    if isinstance(v, Range):
        if v.lo > v.hi:
            raise CapsError(f"empty range {v}")
        return _norm_scalar(v.lo) if v.lo == v.hi else v
    if isinstance(v, list | tuple | set | frozenset):
        items: list[Scalar] = []
        for x in v:
            s = _norm_scalar(x)
            if s not in items:
                items.append(s)
        if not items:
            raise CapsError("empty set of values")
        return items[0] if len(items) == 1 else tuple(items)
    return _norm_scalar(v)


def _members(v: Value) -> tuple[Scalar, ...] | None:
    if isinstance(v, tuple):
        return v
    if isinstance(v, Range):
        return None
    return (v,)  # type: ignore[return-value]


def _meet(a: Value, b: Value) -> Value | None:
    """The intersection of two field values, None when empty."""
    if isinstance(a, Range) and isinstance(b, Range):
        lo, hi = max(a.lo, b.lo), min(a.hi, b.hi)
        if lo > hi:
            return None
        return _norm(Range(lo, hi))
    if isinstance(a, Range):
        a, b = b, a
    ma = _members(a)
    assert ma is not None
    if isinstance(b, Range):
        keep = [x for x in ma if x in b]
    else:
        mb = _members(b)
        assert mb is not None
        keep = [x for x in ma if any(_eq(x, y) for y in mb)]
    return _norm(keep) if keep else None


def _eq(x: Scalar, y: Scalar) -> bool:
    if isinstance(x, str) or isinstance(y, str):
        return x == y
    return abs(float(x) - float(y)) < 1e-9


def _subset(a: Value, b: Value) -> bool:
    if isinstance(a, Range):
        if isinstance(b, Range):
            return b.lo <= a.lo and a.hi <= b.hi
        return False
    ma = _members(a)
    assert ma is not None
    if isinstance(b, Range):
        return all(x in b for x in ma)
    mb = _members(b)
    assert mb is not None
    return all(any(_eq(x, y) for y in mb) for x in ma)


def _value_str(v: Value) -> str:
    if isinstance(v, tuple):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return _fmt(v) if not isinstance(v, Range) else str(v)


class Caps:
    """One media type with field constraints; immutable and hashable."""

    __slots__ = ("_fields", "_hash", "media")

    def __init__(self, media: str = "any", fields: Mapping[str, Any] | None = None) -> None:
        if not re.fullmatch(r"[A-Za-z_][\w\-/]*", media):
            raise CapsError(f"invalid media type {media!r}")
        self.media = media
        self._fields: dict[str, Value] = {k: _norm(v) for k, v in (fields or {}).items()}
        self._hash: int | None = None

    @classmethod
    def of(cls, media: str = "any", **fields: Any) -> Caps:
        """``Caps.of("audio", sample_rate=16000, channels=1)``; a list is a set, a Range a range."""
        return cls(media, fields)

    @classmethod
    def parse(cls, text: str) -> Caps:
        """Parse one caps string (``|`` alternatives: use :func:`parse_caps`)."""
        parsed = parse_caps(text)
        if isinstance(parsed, CapsSet):
            raise CapsError(f"{text!r} has alternatives: use CapsSet.parse or parse_caps")
        return parsed

    @property
    def fields(self) -> Mapping[str, Value]:
        """The constrained fields."""
        return dict(self._fields)

    def get(self, name: str, default: Any = None) -> Any:
        """A field's value (scalar, Range or tuple for a set), or ``default``."""
        return self._fields.get(name, default)

    def with_fields(self, **fields: Any) -> Caps:
        """A copy with these fields set (``None`` removes a field)."""
        merged: dict[str, Any] = dict(self._fields)
        for k, v in fields.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        return Caps(self.media, merged)

    def without(self, *names: str) -> Caps:
        """A copy without these fields."""
        return Caps(self.media, {k: v for k, v in self._fields.items() if k not in names})

    @property
    def is_any(self) -> bool:
        """``any`` with no fields: matches everything."""
        return self.media == "any" and not self._fields

    @property
    def is_fixed(self) -> bool:
        """A concrete media type with every field exact."""
        return self.media != "any" and not any(
            isinstance(v, Range | tuple) for v in self._fields.values()
        )

    def intersect(self, other: Caps | CapsSet) -> Caps | None:
        """What satisfies both, or None."""
        if isinstance(other, CapsSet):
            r = other.intersect(self)
            return r.first() if isinstance(r, CapsSet) else r
        if self.media != other.media and "any" not in (self.media, other.media):
            return None
        media = other.media if self.media == "any" else self.media
        fields = dict(self._fields)
        for k, v in other._fields.items():
            if k in fields:
                m = _meet(fields[k], v)
                if m is None:
                    return None
                fields[k] = m
            else:
                fields[k] = v
        return Caps(media, fields)

    def conflicts(self, other: Caps) -> list[str]:
        """Names of the fields (or ``media``) on which the two have nothing in common."""
        if self.media != other.media and "any" not in (self.media, other.media):
            return ["media"]
        return [
            k
            for k, v in self._fields.items()
            if k in other._fields and _meet(v, other._fields[k]) is None
        ]

    def is_subset(self, other: Caps | CapsSet) -> bool:
        """Everything ``self`` allows, ``other`` allows too."""
        if isinstance(other, CapsSet):
            return any(self.is_subset(c) for c in other)
        if other.media != "any" and self.media != other.media:
            return False
        for k, v in other._fields.items():
            mine = self._fields.get(k)
            if mine is None or not _subset(mine, v):
                return False
        return True

    def fixate(self, prefer: Mapping[str, Any] | None = None) -> Caps:
        """One concrete choice: a preferred value when allowed, else a set's first member or
        a range's lower bound."""
        fields: dict[str, Any] = {}
        for k, v in self._fields.items():
            want = (prefer or {}).get(k)
            if (
                want is not None
                and _meet(v, _norm(want)) is not None
                and not isinstance(_norm(want), Range | tuple)
            ):
                fields[k] = want
            elif isinstance(v, tuple):
                fields[k] = v[0]
            elif isinstance(v, Range):
                fields[k] = v.lo
            else:
                fields[k] = v
        return Caps(self.media, fields)

    def matches(self, item: object) -> bool:
        """Whether a concrete item (anything with ``caps()``) fits these caps."""
        caps = getattr(item, "caps", None)
        if caps is None:
            return self.is_any
        return caps().is_subset(self) if callable(caps) else False

    def __str__(self) -> str:
        if not self._fields:
            return self.media
        inner = ", ".join(f"{k}={_value_str(v)}" for k, v in self._fields.items())
        return f"{self.media}({inner})"

    def __repr__(self) -> str:
        return f"Caps({str(self)!r})"

    def _key(self) -> tuple[Any, ...]:
        return (self.media, tuple(sorted((k, str(v)) for k, v in self._fields.items())))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = parse_caps(other)
            except CapsError:
                return False
        return isinstance(other, Caps) and self._key() == other._key()

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self._key())
        return self._hash


class CapsSet:
    """Alternatives: ``audio(format=f32) | audio(format=s16)``."""

    __slots__ = ("alternatives",)

    def __init__(self, alternatives: Iterable[Caps]) -> None:
        alts: list[Caps] = []
        for c in alternatives:
            if c not in alts:
                alts.append(c)
        if not alts:
            raise CapsError("a caps set needs at least one alternative")
        self.alternatives = tuple(alts)

    @classmethod
    def parse(cls, text: str) -> CapsSet:
        """Parse ``a | b``; a single caps becomes a one-item set."""
        parsed = parse_caps(text)
        return parsed if isinstance(parsed, CapsSet) else cls([parsed])

    def __iter__(self) -> Iterator[Caps]:
        return iter(self.alternatives)

    def first(self) -> Caps:
        """The first (preferred) alternative."""
        return self.alternatives[0]

    @property
    def media(self) -> str:
        """The media type when all alternatives share it, else ``any``."""
        kinds = {c.media for c in self.alternatives}
        return kinds.pop() if len(kinds) == 1 else "any"

    @property
    def is_fixed(self) -> bool:
        """One fixed alternative."""
        return len(self.alternatives) == 1 and self.alternatives[0].is_fixed

    @property
    def is_any(self) -> bool:
        """Matches everything."""
        return any(c.is_any for c in self.alternatives)

    def intersect(self, other: Caps | CapsSet) -> Caps | CapsSet | None:
        """Every non-empty pairwise intersection, in this set's order of preference."""
        others = other.alternatives if isinstance(other, CapsSet) else (other,)
        out = [r for a in self.alternatives for b in others if (r := a.intersect(b)) is not None]
        if not out:
            return None
        return out[0] if len(out) == 1 else CapsSet(out)

    def is_subset(self, other: Caps | CapsSet) -> bool:
        """Every alternative is allowed by ``other``."""
        return all(c.is_subset(other) for c in self.alternatives)

    def fixate(self, prefer: Mapping[str, Any] | None = None) -> Caps:
        """Fixate the first alternative."""
        return self.alternatives[0].fixate(prefer)

    def matches(self, item: object) -> bool:
        """Whether any alternative fits ``item``."""
        return any(c.matches(item) for c in self.alternatives)

    def get(self, name: str, default: Any = None) -> Any:
        """The field of the first alternative."""
        return self.alternatives[0].get(name, default)

    def __str__(self) -> str:
        return " | ".join(str(c) for c in self.alternatives)

    def __repr__(self) -> str:
        return f"CapsSet({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CapsSet) and set(self.alternatives) == set(other.alternatives)

    def __hash__(self) -> int:
        return hash(frozenset(self.alternatives))


_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][\w\-/]*)"
    r"|(?P<range>\.\.)|(?P<punct>[()\[\],=|]))"
)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            at = len(text) - len(text[pos:].lstrip())
            raise CapsError(f"unexpected {text[at]!r} at position {at} in caps {text!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


def parse_caps(text: str) -> Caps | CapsSet:
    """Parse a caps string; CapsError says what is wrong and at which position."""
    if not isinstance(text, str):
        raise CapsError(f"caps must be a string, not {type(text).__name__}")
    toks = _tokens(text)
    i = 0

    def err(msg: str) -> CapsError:
        at = toks[i][2] if i < len(toks) else len(text)
        return CapsError(f"{msg} at position {at} in caps {text!r}")

    def peek(value: str | None = None, kind: str | None = None) -> bool:
        if i >= len(toks):
            return False
        k, v, _ = toks[i]
        return (value is None or v == value) and (kind is None or k == kind)

    def scalar() -> Scalar:
        nonlocal i
        if i >= len(toks) or toks[i][0] not in ("num", "name"):
            raise err("expected a value")
        k, v, _ = toks[i]
        i += 1
        if k == "name":
            return v
        return int(v) if re.fullmatch(r"-?\d+", v) else float(v)

    def value() -> Any:
        nonlocal i
        if peek("["):
            i += 1
            items = [scalar()]
            while peek(","):
                i += 1
                items.append(scalar())
            if not peek("]"):
                raise err("expected ',' or ']'")
            i += 1
            return items
        lo = scalar()
        if peek(kind="range"):
            i += 1
            hi = scalar()
            if isinstance(lo, str) or isinstance(hi, str):
                raise err("a range needs numbers")
            if lo > hi:
                raise err(f"empty range {lo}..{hi}")
            return Range(lo, hi)
        return lo

    def one() -> Caps:
        nonlocal i
        if not peek(kind="name"):
            raise err("expected a media type")
        media = toks[i][1]
        i += 1
        fields: dict[str, Any] = {}
        if peek("("):
            i += 1
            if peek(")"):
                i += 1
                return Caps(media, fields)
            while True:
                if not peek(kind="name"):
                    raise err("expected a field name")
                name = toks[i][1]
                if name in fields:
                    raise err(f"duplicate field {name!r}")
                i += 1
                if not peek("="):
                    raise err(f"expected '=' after {name!r}")
                i += 1
                fields[name] = value()
                if peek(","):
                    i += 1
                    continue
                if peek(")"):
                    i += 1
                    break
                raise err("expected ',' or ')'")
        return Caps(media, fields)

    if not toks:
        raise CapsError("empty caps string")
    alts = [one()]
    while peek("|"):
        i += 1
        alts.append(one())
    if i != len(toks):
        raise err(f"unexpected {toks[i][1]!r}")
    return alts[0] if len(alts) == 1 else CapsSet(alts)
