"""Manifests: the RemoteMedia SDK's YAML/JSON pipeline format, plus ``node.port`` addressing.

The seed's format is ``{version, metadata: {name, description}, nodes: [{id, node_type,
params}], connections: [{from, to}]}``.  This library adds ``node.port`` endpoints,
``maxsize``/``overflow`` on connections, ``executor`` and ``options`` on nodes and a top-level
``negotiation: {auto_convert: true}``.  Fields it does not use (the seed's ``is_streaming``,
``host``, ``runtime_hint``…) are kept and written back by :func:`to_manifest`.

Every problem is a :class:`ManifestError` naming the file, the line, the node and the port.
JSON is read by the YAML loader too (JSON is YAML), so JSON manifests get line numbers as well.
"""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ._caps import Caps, CapsSet
from ._errors import GraphError, ManifestError, NegotiationError, PipelineError
from ._graph import EXECUTORS, OVERFLOW_POLICIES, NodeSpec, Pipeline
from ._node import _REGISTRY, NodeType, resolve

if TYPE_CHECKING:
    from ._negotiate import Negotiated

__all__ = ["dump", "load", "to_manifest", "validate_manifest"]

log = logging.getLogger("isthmus.pipeline.manifest")

_TOP_FIELDS = ("version", "metadata", "nodes", "connections", "negotiation")
_NODE_FIELDS = ("id", "node_type", "params", "executor", "options")
_CONN_FIELDS = ("from", "to", "maxsize", "overflow")
#: ``options`` keys the session and the executors read (others are kept, with a warning).
_KNOWN_OPTIONS = (
    "on_error",
    "retry",
    "circuit_breaker",
    "restarts",
    "ring_bytes",
    "credits",
    "spin",
    "start_method",
    "num_cpus",
    "num_gpus",
    "resources",
)
_SUFFIXES = (".yaml", ".yml", ".json")


# --- reading, with line numbers ----------------------------------------------------------------
class _Lined(dict[str, Any]):
    """A mapping from the manifest that remembers its line and the line of each key."""

    def __init__(self, line: int | None = None) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}


# A SafeLoader subclass (type() keeps mypy quiet whether or not PyYAML's stubs are installed).
_Loader: Any = type("_Loader", (yaml.SafeLoader,), {})


def _construct_mapping(loader: Any, node: Any) -> _Lined:
    seen: set[str] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            if key_node.value in seen:  # YAML would silently keep the last one
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                )
            seen.add(key_node.value)
    loader.flatten_mapping(node)
    out = _Lined(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a string", key_node.start_mark
            ) from None
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[str(key)] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line(obj: Any, key: str | None = None) -> int | None:
    """The line of ``obj`` (a mapping read from a manifest), or of its ``key``."""
    if not isinstance(obj, _Lined):
        return None
    if key is not None and key in obj.key_lines:
        return obj.key_lines[key]
    return obj.line


def _is_path(src: str) -> bool:
    if "\n" in src or not src.strip():
        return False
    s = src.strip()
    return s.endswith(_SUFFIXES) or (not s.startswith(("{", "[")) and os.path.isfile(s))


def _read(src: Any) -> tuple[Any, str | None]:
    """(parsed manifest, source name) from a mapping, a path or YAML/JSON text."""
    if isinstance(src, Mapping):
        return src, None
    if isinstance(src, os.PathLike) or (isinstance(src, str) and _is_path(src)):
        path = Path(os.fspath(src).strip() if isinstance(src, str) else os.fspath(src))
        if not path.is_file():
            raise ManifestError(f"no such manifest file: {path}", source=str(path))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ManifestError(f"cannot read the manifest: {e}", source=str(path)) from None
        name: str | None = str(path)
    elif isinstance(src, str):
        text, name = src, None
    else:
        raise ManifestError(
            f"a manifest is a path, YAML/JSON text or a mapping, not {type(src).__name__}"
        )
    if text.lstrip().startswith(("{", "[")):
        # JSON allows tabs as whitespace where YAML does not; a JSON string cannot hold a raw
        # tab, so replacing them changes nothing but the parse.
        text = text.replace("\t", " ")
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ManifestError(
            f"not valid YAML/JSON: {getattr(e, 'problem', None) or e}",
            line=mark.line + 1 if mark is not None else None,
            source=name,
        ) from None
    return data, name


# --- parameter checks --------------------------------------------------------------------------
_SIMPLE_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "None": (type(None),),
    "list": (list,),
    "tuple": (list, tuple),
    "dict": (Mapping,),
    "Mapping": (Mapping,),
    "Sequence": (list, tuple),
}


def _type_problem(value: Any, annotation: Any) -> str | None:
    """What type ``value`` should have, when it obviously has the wrong one; else None.

    Only simple annotations (``int``, ``float | None``, ``list[str]``…) are checked: anything
    else is left to the node's ``__init__``.
    """
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if not text:
        text = str(annotation)
    alts = [a.strip().split("[", 1)[0] for a in text.replace("Optional[", "None | ").split("|")]
    alts = [a.rstrip("]") for a in alts]
    if not alts or any(a not in _SIMPLE_TYPES for a in alts):
        return None
    for a in alts:
        ok = _SIMPLE_TYPES[a]
        if isinstance(value, bool) and a in ("int", "float"):
            continue  # YAML's true/false are not numbers here
        if isinstance(value, ok):
            return None
    return " or ".join(alts)


def _param_doc(nt: NodeType) -> str:
    parts = []
    for name, p in nt.params.items():
        parts.append(name if p.default is inspect.Parameter.empty else f"{name}={p.default!r}")
    return ", ".join(parts) or "no params"


# --- building ----------------------------------------------------------------------------------
@dataclass
class _Result:
    """What checking a manifest found: the pipeline (as far as it loaded) and the problems."""

    pipeline: Pipeline
    errors: list[PipelineError] = field(default_factory=list)
    negotiated: Negotiated | None = None


class _Builder:
    """Builds a Pipeline from parsed manifest data; raises at the first problem unless
    ``collect``, in which case it records them all and carries on where it can."""

    def __init__(self, source: str | None, collect: bool) -> None:
        self.source = source
        self.errors: list[ManifestError] | None = [] if collect else None
        self.failed: set[str] = set()  # nodes reported as broken: not reported again
        self.unsure: set[str] = set()  # nodes with a bad connection: inputs not checked

    def problem(
        self,
        msg: str,
        *,
        node: str | None = None,
        port: str | None = None,
        line: int | None = None,
        broken: bool = True,
    ) -> None:
        err = ManifestError(msg, node=node, port=port, line=line, source=self.source)
        if self.errors is None:
            raise err
        self.errors.append(err)
        if node is not None and broken:
            self.failed.add(node)

    def build(self, data: Any) -> Pipeline:
        if not isinstance(data, Mapping):
            self.problem(
                "a manifest is a mapping with 'nodes' and 'connections'", line=_line(data) or 1
            )
            return Pipeline()
        p = self.top(data)
        nodes = data.get("nodes")
        if not isinstance(nodes, list) or not nodes:
            self.problem("'nodes' must be a non-empty list", line=_line(data, "nodes"))
            nodes = []
        for i, n in enumerate(nodes):
            self.node(p, i, n, _line(data, "nodes"))
        conns = data.get("connections")
        if conns is None:
            conns = []
        if not isinstance(conns, list):
            self.problem("'connections' must be a list", line=_line(data, "connections"))
            conns = []
        for i, c in enumerate(conns):
            self.connection(p, i, c, _line(data, "connections"))
        self.graph(p)
        return p

    def top(self, data: Mapping[str, Any]) -> Pipeline:
        meta = data.get("metadata")
        if meta is None:
            meta = {}
        if not isinstance(meta, Mapping):
            self.problem("'metadata' must be a mapping", line=_line(data, "metadata"))
            meta = {}
        name = meta.get("name", "pipeline")
        if not isinstance(name, str | int | float) or isinstance(name, bool):
            self.problem("'metadata.name' must be a string", line=_line(meta, "name"))
            name = "pipeline"
        desc = meta.get("description", "")
        p = Pipeline(str(name), description="" if desc is None else str(desc))
        p.metadata = _plain(meta)
        version = data.get("version")
        if version is not None and not isinstance(version, str | int | float):
            self.problem("'version' must be a string such as v1", line=_line(data, "version"))
        # Unknown top-level fields (and the version, written back as it was) are kept.
        p.extra = {k: _plain(v) for k, v in data.items() if k == "version" or k not in _TOP_FIELDS}
        neg = data.get("negotiation")
        if neg is None:
            neg = {}
        if not isinstance(neg, Mapping):
            self.problem(
                "'negotiation' must be a mapping such as {auto_convert: true}",
                line=_line(data, "negotiation"),
            )
            neg = {}
        p.negotiation = _plain(neg)
        if "auto_convert" in neg and not isinstance(neg["auto_convert"], bool):
            self.problem(
                "'negotiation.auto_convert' must be true or false", line=_line(neg, "auto_convert")
            )
        # The seed spells it metadata.auto_negotiate.
        seed = meta.get("auto_negotiate")
        if "auto_convert" not in neg and isinstance(seed, bool):
            p.negotiation["auto_convert"] = seed
        return p

    def node(self, p: Pipeline, i: int, n: Any, list_line: int | None) -> None:
        line = _line(n) or list_line
        if not isinstance(n, Mapping):
            self.problem(f"nodes[{i}] must be a mapping with 'id' and 'node_type'", line=line)
            return
        nid = n.get("id")
        if not isinstance(nid, str) or not nid:
            self.problem(f"nodes[{i}] needs a string 'id'", line=_line(n, "id"))
            return
        if "." in nid:
            self.problem(
                f"invalid node id {nid!r}: '.' separates node and port in connections",
                node=nid,
                line=_line(n, "id"),
            )
            return
        if nid in p.nodes or nid in self.failed:
            first = p.nodes[nid].line if nid in p.nodes else None
            where = f" (first declared on line {first})" if first is not None else ""
            # The first declaration stands: its connections and inputs are still checked.
            self.problem(
                f"duplicate node id {nid!r}{where}", node=nid, line=_line(n, "id"), broken=False
            )
            return
        ntype = n.get("node_type")
        if not isinstance(ntype, str) or not ntype:
            self.problem("needs a string 'node_type'", node=nid, line=_line(n, "node_type"))
            return
        try:
            nt = resolve(ntype)
        except GraphError as e:
            self.problem(str(e), node=nid, line=_line(n, "node_type"))
            return
        params = n.get("params")
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            self.problem("'params' must be a mapping", node=nid, line=_line(n, "params"))
            return
        executor = n.get("executor", "asyncio")
        if executor not in EXECUTORS:
            self.problem(
                f"unknown executor {executor!r} (one of: {', '.join(EXECUTORS)})",
                node=nid,
                line=_line(n, "executor"),
            )
            return
        options = n.get("options")
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            self.problem("'options' must be a mapping", node=nid, line=_line(n, "options"))
            return
        ok = self.params(nid, nt, params, n) & self.options(nid, options)
        if not ok:
            return
        try:
            spec = p.add(
                nid,
                nt,
                executor=str(executor),
                options=_plain(options),
                line=line,
                **_plain(params),
            )
        except GraphError as e:
            self.problem(_strip(str(e), nid), node=nid, line=line)
            return
        spec.extra = {k: _plain(v) for k, v in n.items() if k not in _NODE_FIELDS}
        try:
            spec.prototype  # noqa: B018 - params that __init__ refuses are manifest errors
        except Exception as e:  # a node's __init__ may raise anything about its params
            del p.nodes[nid]
            self.problem(
                f"bad params for {nt.name}: {e}", node=nid, line=_line(n, "params") or line
            )

    def params(self, nid: str, nt: NodeType, params: Mapping[str, Any], n: Any) -> bool:
        ok = True
        for key, value in params.items():
            where = _line(params, str(key))
            spec = nt.params.get(str(key))
            if spec is None:
                if nt.accepts_any:
                    continue
                close = difflib.get_close_matches(str(key), list(nt.params), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.problem(
                    f"unknown parameter {key!r}{hint}; {nt.name} takes: {_param_doc(nt)}",
                    node=nid,
                    line=where,
                )
                ok = False
                continue
            want = _type_problem(value, spec.annotation)
            if want is not None:
                self.problem(
                    f"parameter {key!r} must be {want}, not {type(value).__name__} {value!r}",
                    node=nid,
                    line=where,
                )
                ok = False
        for name, spec in nt.params.items():
            if spec.default is inspect.Parameter.empty and name not in params:
                self.problem(
                    f"missing required parameter {name!r}; {nt.name} takes: {_param_doc(nt)}",
                    node=nid,
                    line=_line(n, "params") or _line(n),
                )
                ok = False
        return ok

    def options(self, nid: str, options: Mapping[str, Any]) -> bool:
        from ._reliability import CircuitBreaker, RetryPolicy
        from ._session import ON_ERROR

        ok = True

        def bad(key: str, msg: str) -> None:
            nonlocal ok
            ok = False
            self.problem(f"option {key!r}: {msg}", node=nid, line=_line(options, key))

        for key, value in options.items():
            if key == "on_error" and value not in ON_ERROR:
                bad(key, f"{value!r} is not one of {', '.join(ON_ERROR)}")
            elif key == "retry":
                try:
                    RetryPolicy.from_options(value)
                except (TypeError, ValueError) as e:
                    bad(key, str(e))
            elif key == "circuit_breaker":
                try:
                    CircuitBreaker.from_options(value)
                except (TypeError, ValueError) as e:
                    bad(key, str(e))
            elif key == "restarts" and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                bad(key, f"must be a whole number >= 0, not {value!r}")
            elif key not in _KNOWN_OPTIONS:
                close = difflib.get_close_matches(str(key), _KNOWN_OPTIONS, n=1)
                log.warning(
                    "%s: node %r: option %r is not used by isthmus.pipeline%s",
                    self.source or "manifest",
                    nid,
                    key,
                    f" (did you mean {close[0]!r}?)" if close else "",
                )
        return ok

    def endpoint(self, p: Pipeline, ref: str, c: Any, key: str) -> bool:
        """Whether ``ref`` names a known node, reporting a problem when it does not."""
        node, dot, port = ref.partition(".")
        where = _line(c, key)
        if not node or (dot and (not port or "." in port)):
            self.problem(
                f"'{key}: {ref}' is not 'node' or 'node.port'",
                node=node or None,
                line=where,
            )
            return False
        if node in p.nodes:
            return True
        if node in self.failed:
            return False  # reported where the node was declared
        close = difflib.get_close_matches(node, list(p.nodes), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        self.problem(f"'{key}' names an unknown node {node!r}{hint}", node=node, line=where)
        return False

    def connection(self, p: Pipeline, i: int, c: Any, list_line: int | None) -> None:
        line = _line(c) or list_line
        if not isinstance(c, Mapping):
            self.problem(f"connections[{i}] must be a mapping with 'from' and 'to'", line=line)
            return
        src, dst = c.get("from"), c.get("to")
        for key, value in (("from", src), ("to", dst)):
            if not isinstance(value, str):
                what = "is missing" if value is None else f"must be a string, not {value!r}"
                self.problem(f"connections[{i}]: '{key}' {what}", line=_line(c, key) or line)
        if not isinstance(src, str) or not isinstance(dst, str):
            return
        dst_node = dst.partition(".")[0]
        maxsize, overflow = c.get("maxsize"), c.get("overflow")
        good = True
        if maxsize is not None and (
            not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1
        ):
            self.problem(
                f"'maxsize' of {src} -> {dst} must be a whole number >= 1, not {maxsize!r}",
                node=dst_node,
                line=_line(c, "maxsize"),
            )
            good = False
        if overflow is not None and overflow not in OVERFLOW_POLICIES:
            self.problem(
                f"'overflow' of {src} -> {dst} must be one of {', '.join(OVERFLOW_POLICIES)}, "
                f"not {overflow!r}",
                node=dst_node,
                line=_line(c, "overflow"),
            )
            good = False
        good = self.endpoint(p, src, c, "from") & self.endpoint(p, dst, c, "to") & good
        if not good:
            self.unsure.add(dst_node)
            return
        try:
            conn = p.connect(src, dst, maxsize=maxsize, overflow=overflow, line=line)
        except GraphError as e:
            key = "from" if e.node == src.partition(".")[0] and e.node != dst_node else "to"
            self.problem(
                f"connection {src} -> {dst}: {e}",
                node=e.node,
                port=e.port,
                line=_line(c, key) or line,
            )
            self.unsure.add(dst_node)
            return
        extra = {k: _plain(v) for k, v in c.items() if k not in _CONN_FIELDS}
        if extra:
            at = p.connections.index(conn)
            p.connections[at] = type(conn)(
                conn.src, conn.src_port, conn.dst, conn.dst_port, {**conn.options, **extra}, line
            )

    def graph(self, p: Pipeline) -> None:
        """Whole-graph checks: cycles and unconnected inputs."""
        if not p.nodes:
            return
        try:
            p.topological_order()
        except GraphError as e:
            spec = p.nodes.get(e.node or "")
            self.problem(str(e), node=e.node, line=spec.line if spec else None)
        for nid, spec in p.nodes.items():
            if nid in self.failed or nid in self.unsure:
                continue
            connected = {c.dst_port for c in p.incoming(nid)}
            for port in spec.inputs:
                if port not in connected:
                    self.problem(
                        f"input port {port!r} is not connected (add a connection "
                        f"'to: {nid}.{port}')",
                        node=nid,
                        port=port,
                        line=spec.line,
                    )


def _strip(msg: str, nid: str) -> str:
    for prefix in (f"node {nid!r} ", f"node {nid!r}: "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


# --- public API --------------------------------------------------------------------------------
def load(src: str | os.PathLike[str] | Mapping[str, Any]) -> Pipeline:
    """A :class:`Pipeline` from a manifest: a file path, YAML/JSON text or a mapping.

    Raises :class:`ManifestError` (with ``line``, ``source``, ``node`` and ``port``) at the
    first problem; :func:`validate_manifest` lists them all.
    """
    data, source = _read(src)
    return _Builder(source, collect=False).build(data)


def _check(src: Any, auto_convert: bool | None = None) -> _Result:
    """Load collecting every problem, then negotiate caps if the graph itself is sound."""
    try:
        data, source = _read(src)
    except ManifestError as e:
        return _Result(Pipeline(), [e])
    b = _Builder(source, collect=True)
    p = b.build(data)
    # In file order (whole-graph checks run last but point at their nodes' lines).
    found: list[ManifestError] = sorted(b.errors or [], key=lambda e: e.line or 0)
    result = _Result(p, list(found))
    if result.errors or not p.nodes:
        return result
    convert = p.negotiation.get("auto_convert", False) if auto_convert is None else auto_convert
    try:
        result.negotiated = p.negotiate(auto_convert=bool(convert))
    except NegotiationError as e:
        result.errors.append(e)
    except GraphError as e:
        spec = p.nodes.get(e.node or "")
        result.errors.append(
            ManifestError(
                str(e), node=e.node, port=e.port, line=spec.line if spec else None, source=source
            )
        )
    except PipelineError as e:
        result.errors.append(ManifestError(str(e), source=source))
    return result


def validate_manifest(
    src: str | os.PathLike[str] | Mapping[str, Any], *, auto_convert: bool | None = None
) -> list[ManifestError | NegotiationError]:
    """Every problem of a manifest, in file order (empty when it is valid).

    Structure, node types, params, options, ports, cycles and unconnected inputs are
    :class:`ManifestError` s; when the graph is sound, caps are negotiated (``auto_convert``:
    insert converters; None: as the manifest's ``negotiation`` section says) and a mismatch is
    a :class:`NegotiationError` whose ``suggestions`` say how to fix it.
    """
    return [
        e
        for e in _check(src, auto_convert).errors
        if isinstance(e, ManifestError | NegotiationError)
    ]


def _type_name(spec: NodeSpec) -> str:
    nt = spec.type
    return nt.name if _REGISTRY.get(nt.name) is nt else nt.ref


def _endpoint(node: str, port: str, ports: Mapping[str, Any]) -> str:
    # The short form only for a node's only port: elsewhere the port is worth spelling out.
    return node if list(ports) == [port] else f"{node}.{port}"


def to_manifest(p: Pipeline) -> dict[str, Any]:
    """The manifest of ``p`` as plain dicts and lists (what :func:`load` reads back into an
    equal pipeline; fields the manifest had that this library does not use are kept)."""
    out: dict[str, Any] = {"version": p.extra.get("version", "v1")}
    meta = dict(p.metadata)
    meta["name"] = p.name
    if p.description:
        meta["description"] = p.description
    else:
        meta.pop("description", None)
    out["metadata"] = meta
    neg = dict(p.negotiation)
    if "auto_convert" in neg and neg["auto_convert"] == meta.get("auto_negotiate"):
        del neg["auto_convert"]  # said by the seed's metadata.auto_negotiate already
    if neg:
        out["negotiation"] = neg
    out.update({k: v for k, v in p.extra.items() if k != "version"})
    nodes = []
    for spec in p.nodes.values():
        n: dict[str, Any] = {"id": spec.id, "node_type": _type_name(spec)}
        if spec.params:
            n["params"] = dict(spec.params)
        if spec.executor != "asyncio":
            n["executor"] = spec.executor
        if spec.options:
            n["options"] = dict(spec.options)
        n.update(spec.extra)
        nodes.append(n)
    out["nodes"] = nodes
    conns = []
    for c in p.connections:
        e: dict[str, Any] = {
            "from": _endpoint(c.src, c.src_port, p.nodes[c.src].outputs),
            "to": _endpoint(c.dst, c.dst_port, p.nodes[c.dst].inputs),
        }
        e.update(c.options)
        conns.append(e)
    out["connections"] = conns
    result: dict[str, Any] = _plain(out)
    return result


def _plain(x: Any) -> Any:
    """Plain dicts, lists and scalars (YAML's safe dumper refuses subclasses and tuples)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, Caps | CapsSet | os.PathLike):
        return str(x) if not isinstance(x, os.PathLike) else os.fspath(x)
    item = getattr(x, "item", None)
    if callable(item) and type(x).__module__ == "numpy":
        return item()
    return x


def dump(
    p: Pipeline,
    path: str | os.PathLike[str] | None = None,
    format: str = "yaml",
) -> str:
    """The manifest of ``p`` as YAML or JSON text, also written to ``path`` if given."""
    m = to_manifest(p)
    if format == "json":
        text = json.dumps(m, indent=2, default=str) + "\n"
    elif format == "yaml":
        text = yaml.safe_dump(m, sort_keys=False, default_flow_style=None, allow_unicode=True)
    else:
        raise ValueError(f"format is 'yaml' or 'json', not {format!r}")
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
