"""The node model: ports with caps, node classes and ``@node`` functions, and the registry.

A node type is either a :class:`Node` subclass or a function decorated with :func:`node`.
Its ``__init__`` (or the function's keyword-only parameters) takes the manifest's ``params`` and
must be cheap: pipelines create an instance to ask for ports and caps before anything runs;
heavy work (opening files, loading models) belongs in :meth:`Node.initialize`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from ._errors import GraphError

if TYPE_CHECKING:
    from ._caps import Caps, CapsSet
    from ._control import Control

__all__ = [
    "BEHAVIOURS",
    "FrameConstraint",
    "FunctionNode",
    "InputNode",
    "Node",
    "NodeType",
    "OutputNode",
    "Port",
    "node",
    "node_types",
    "register",
    "resolve",
]

#: How a port's caps are decided (see the docs' "Caps negotiation").
BEHAVIOURS = ("static", "configured", "passthrough", "adaptive", "runtime")

# Call forms of ``process``/``generate``, found once per node type so the runner does not
# inspect on every item.
SYNC, ASYNC, GEN, AGEN = "sync", "async", "gen", "agen"


def _form(fn: Callable[..., Any]) -> str:
    if inspect.isasyncgenfunction(fn):
        return AGEN
    if inspect.isgeneratorfunction(fn):
        return GEN
    if inspect.iscoroutinefunction(fn):
        return ASYNC
    return SYNC


@dataclass(frozen=True, slots=True)
class FrameConstraint:
    """An input that needs chunks of exactly one of these sizes (webrtcvad: 10/20/30 ms)."""

    frame_ms: tuple[float, ...] = ()
    samples: tuple[int, ...] = ()

    def accepts(self, frames: int, sample_rate: int) -> bool:
        """Whether a chunk of ``frames`` samples at ``sample_rate`` fits."""
        if self.samples and frames not in self.samples:
            return False
        return not self.frame_ms or any(
            abs(frames * 1000.0 / sample_rate - ms) < 1e-6 for ms in self.frame_ms
        )

    def __str__(self) -> str:
        parts = []
        if self.frame_ms:
            parts.append("frame_ms in " + "/".join(f"{m:g}" for m in self.frame_ms))
        if self.samples:
            parts.append("samples in " + "/".join(str(s) for s in self.samples))
        return ", ".join(parts) or "any frame size"


def _parse_caps(caps: Any) -> Caps | CapsSet:
    from ._caps import Caps, CapsSet, parse_caps

    if isinstance(caps, Caps | CapsSet):
        return caps
    return parse_caps(str(caps))


class Port:
    """A named input or output: the caps it takes or gives and how they are decided.

    ``caps`` is a caps string or :class:`Caps`; ``behaviour`` is one of :data:`BEHAVIOURS`;
    ``frame`` constrains the chunk size an input needs.
    """

    __slots__ = ("behaviour", "caps", "doc", "frame")

    def __init__(
        self,
        caps: str | Caps | CapsSet = "any",
        behaviour: str = "static",
        frame: FrameConstraint | None = None,
        doc: str = "",
    ) -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown port behaviour {behaviour!r}: one of {BEHAVIOURS}")
        self.caps: Caps | CapsSet = _parse_caps(caps)
        self.behaviour = behaviour
        self.frame = frame
        self.doc = doc

    def __repr__(self) -> str:
        extra = f", behaviour={self.behaviour!r}" if self.behaviour != "static" else ""
        extra += f", frame={self.frame!r}" if self.frame else ""
        return f"Port({str(self.caps)!r}{extra})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Port) and (self.caps, self.behaviour, self.frame) == (
            other.caps,
            other.behaviour,
            other.frame,
        )

    def __hash__(self) -> int:
        return hash((self.caps, self.behaviour, self.frame))


def _ports(spec: Mapping[str, Port | str | Any] | None) -> dict[str, Port]:
    out: dict[str, Port] = {}
    for name, p in (spec or {}).items():
        out[name] = p if isinstance(p, Port) else Port(p)
    return out


class Node:
    """Base class of node types.

    Override :meth:`process` (sync, ``async def``, or a (async) generator for the streaming
    form), or :meth:`generate` for a source (a node without inputs).  A returned value goes to
    the ``out`` port (``None`` sends nothing); :meth:`emit` sends to any port.  Ports are the
    class attributes ``inputs``/``outputs`` (an instance may replace them in ``__init__``,
    e.g. a tee with N outputs).
    """

    node_type: ClassVar[str] = ""
    inputs: dict[str, Port] = {"in": Port()}  # noqa: RUF012 - replaced, never mutated
    outputs: dict[str, Port] = {"out": Port()}  # noqa: RUF012

    #: The node's id in its pipeline (set when a session creates it).
    id: str = ""
    _emitted: list[tuple[str, Any]] | None = None

    def initialize(self) -> Awaitable[None] | None:
        """Acquire resources (open files, load models); sync or async."""
        return None

    def process(self, item: Any, port: str) -> Any:
        """Handle one item that arrived on input ``port``; return the output for ``out``."""
        raise NotImplementedError(f"{type(self).__name__} does not process input")

    def generate(self) -> Iterator[Any] | AsyncIterator[Any]:
        """A source's items, for ``out`` (a generator or async generator)."""
        raise NotImplementedError(f"{type(self).__name__} is not a source")

    def on_control(self, msg: Control) -> Any:
        """A control message arrived; return an item to send, if any.  Default: nothing."""
        return None

    def close(self) -> Awaitable[None] | None:
        """Release resources; sync or async.  Called once, also after errors."""
        return None

    def emit(self, item: Any, port: str = "out") -> None:
        """Send ``item`` on output ``port`` (from process, generate or on_control)."""
        if self._emitted is None:
            self._emitted = []
        self._emitted.append((port, item))

    def take_emitted(self) -> list[tuple[str, Any]]:
        """What :meth:`emit` collected since the last call (the runner calls this)."""
        out = self._emitted
        if not out:
            return []
        self._emitted = None
        return out

    # --- caps hooks (defaults follow the port declarations) --------------------------------
    def output_caps(self, inputs: Mapping[str, Caps]) -> dict[str, Caps] | None:
        """Forward pass: the output caps given the negotiated input caps (None: declared)."""
        return None

    def input_caps(self, outputs: Mapping[str, Caps]) -> dict[str, Caps] | None:
        """Reverse pass: the input caps needed for these output caps (None: declared)."""
        return None

    def discovered_caps(self) -> dict[str, Caps] | None:
        """``runtime`` ports' caps, known after :meth:`initialize` (a file's format, say)."""
        return None


class FunctionNode(Node):
    """A node made from a function by :func:`node`: ``process`` calls it with the params."""

    def __init__(self, ntype: NodeType, params: dict[str, Any]) -> None:
        self._fn = ntype.factory
        self._params = params
        self._ntype = ntype
        self.inputs = ntype.inputs
        self.outputs = ntype.outputs

    def process(self, item: Any, port: str) -> Any:
        return self._fn(item, **self._params)

    def generate(self) -> Any:
        return self._fn(**self._params)

    def __repr__(self) -> str:
        return f"<{self._ntype.name} node {self.id!r}>"


class NodeType:
    """A registered kind of node: a :class:`Node` subclass or a ``@node`` function."""

    def __init__(
        self,
        factory: Callable[..., Any],
        *,
        name: str,
        inputs: dict[str, Port],
        outputs: dict[str, Port],
        is_class: bool,
        doc: str = "",
    ) -> None:
        self.factory = factory
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self.is_class = is_class
        self.doc = doc
        self.ref = f"{factory.__module__}:{factory.__qualname__}"
        target = factory.__init__ if is_class else factory
        sig = inspect.signature(target)
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        params = [p for p in sig.parameters.values() if p.kind in kinds]
        if is_class:
            params = params[1:] if params and params[0].name == "self" else params
        elif inputs:
            # The first positional parameter of a function node is the item.
            params = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
        self.params: dict[str, inspect.Parameter] = {p.name: p for p in params}
        self.accepts_any = any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()
        )
        self.form = _form(factory.process if is_class else factory)  # type: ignore[attr-defined]
        if is_class and not inputs:
            self.form = _form(factory.generate)  # type: ignore[attr-defined]

    def check_params(self, params: Mapping[str, Any]) -> None:
        """TypeError naming an unknown or missing parameter."""
        if not self.accepts_any:
            unknown = sorted(set(params) - set(self.params))
            if unknown:
                known = ", ".join(sorted(self.params)) or "none"
                raise TypeError(f"unknown parameter {unknown[0]!r} (known: {known})")
        for name, p in self.params.items():
            if p.default is inspect.Parameter.empty and name not in params:
                raise TypeError(f"missing required parameter {name!r}")

    def create(self, **params: Any) -> Node:
        """A new instance with these params (cheap: nothing is opened before initialize)."""
        self.check_params(params)
        if self.is_class:
            inst = self.factory(**params)
            if not isinstance(inst, Node):
                raise TypeError(f"{self.ref} did not create a Node")
            return inst
        return FunctionNode(self, dict(params))

    def __repr__(self) -> str:
        return f"<NodeType {self.name!r} ({self.ref})>"


_REGISTRY: dict[str, NodeType] = {}
_builtins_loaded = False

F = TypeVar("F", bound=Callable[..., Any])


def _type_of(obj: Any, name: str | None = None) -> NodeType:
    existing = getattr(obj, "__isthmus_node_type__", None)
    if isinstance(existing, NodeType) and (name is None or name == existing.name):
        return existing
    if isinstance(obj, type) and issubclass(obj, Node):
        nt = NodeType(
            obj,
            name=name or obj.node_type or obj.__name__,
            inputs=_ports(obj.inputs),
            outputs=_ports(obj.outputs),
            is_class=True,
            doc=inspect.getdoc(obj) or "",
        )
    elif callable(obj):
        nt = NodeType(
            obj,
            name=name or obj.__name__,
            inputs={"in": Port()},
            outputs={"out": Port()},
            is_class=False,
            doc=inspect.getdoc(obj) or "",
        )
    else:
        raise TypeError(f"{obj!r} is neither a Node subclass nor a function")
    if not (isinstance(obj, type) and issubclass(obj, Node)):
        return nt
    obj.__isthmus_node_type__ = nt  # type: ignore[attr-defined]
    return nt


def register(obj: Any, name: str | None = None, *, replace: bool = False) -> NodeType:
    """Register a Node subclass or ``@node`` function under ``name`` for manifests."""
    nt = _type_of(obj, name)
    old = _REGISTRY.get(nt.name)
    if old is not None and old.ref != nt.ref and not replace:
        raise ValueError(f"node type {nt.name!r} is already registered as {old.ref}")
    _REGISTRY[nt.name] = nt
    return nt


@overload
def node(fn: F, /) -> F: ...
@overload
def node(
    *,
    inputs: Mapping[str, Port | str] | None = ...,
    outputs: Mapping[str, Port | str] | None = ...,
    name: str | None = ...,
    register: bool = ...,
) -> Callable[[F], F]: ...
def node(
    fn: Any = None,
    /,
    *,
    inputs: Mapping[str, Port | str] | None = None,
    outputs: Mapping[str, Port | str] | None = None,
    name: str | None = None,
    register: bool = True,
) -> Any:
    """Make a function a node type: sync, ``async def``, generator or async generator.

    The first parameter receives the item; keyword-only parameters are the node's params.
    ``inputs={}`` makes a source, whose function is called once with the params and yields the
    items.  The function itself is returned unchanged (it stays callable and testable).
    """

    def wrap(f: Any) -> Any:
        ins = _ports(inputs) if inputs is not None else {"in": Port()}
        outs = _ports(outputs) if outputs is not None else {"out": Port()}
        nt = NodeType(
            f,
            name=name or f.__name__,
            inputs=ins,
            outputs=outs,
            is_class=False,
            doc=inspect.getdoc(f) or "",
        )
        f.__isthmus_node_type__ = nt
        if register:
            _register_type(nt)
        return f

    return wrap(fn) if fn is not None else wrap


def _register_type(nt: NodeType) -> None:
    old = _REGISTRY.get(nt.name)
    if old is not None and old.ref != nt.ref:
        raise ValueError(f"node type {nt.name!r} is already registered as {old.ref}")
    _REGISTRY[nt.name] = nt


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        importlib.import_module("isthmus.pipeline.nodes")


def node_types() -> dict[str, NodeType]:
    """Every registered node type by name (the built-ins included)."""
    _load_builtins()
    return dict(_REGISTRY)


def resolve(spec: Any) -> NodeType:
    """A node type from a registered name, ``"module:qualname"``, a Node class or a function."""
    if isinstance(spec, NodeType):
        return spec
    if not isinstance(spec, str):
        return _type_of(spec)
    nt = _REGISTRY.get(spec)
    if nt is not None:
        return nt
    if ":" in spec:
        mod, _, qual = spec.partition(":")
        try:
            obj: Any = importlib.import_module(mod)
            for part in qual.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            raise GraphError(f"cannot import node type {spec!r}: {e}") from e
        return _type_of(obj)
    _load_builtins()
    nt = _REGISTRY.get(spec)
    if nt is None:
        import difflib

        close = difflib.get_close_matches(spec, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise GraphError(f"unknown node type {spec!r}{hint}")
    return nt


class InputNode(Node):
    """The pipeline's entry: items pushed with ``Session.push(node_id, item)`` leave on ``out``."""

    node_type = "input"
    inputs: dict[str, Port] = {}  # noqa: RUF012

    def __init__(self, *, caps: str = "any") -> None:
        self.outputs = {"out": Port(caps)}

    async def generate(self) -> AsyncIterator[Any]:  # pragma: no cover - fed by the session
        return
        yield


class OutputNode(Node):
    """The pipeline's exit: what arrives is delivered to ``Session.outputs()`` (or a callback)."""

    node_type = "output"
    outputs: dict[str, Port] = {}  # noqa: RUF012

    def __init__(self, *, caps: str = "any") -> None:
        self.inputs = {"in": Port(caps)}

    def process(self, item: Any, port: str) -> Any:
        return None


register(InputNode)
register(OutputNode)
