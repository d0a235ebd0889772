"""Manifests: the RemoteMedia SDK's YAML/JSON pipeline format, plus ``node.port`` addressing.

Every error is a :class:`ManifestError` naming the file, the line, the node and the port.
JSON is read by the YAML loader too (JSON is YAML), so JSON manifests get line numbers as well.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ._errors import GraphError, ManifestError, NegotiationError, PipelineError
from ._graph import EXECUTORS, Pipeline
from ._node import _REGISTRY

__all__ = ["dump", "load", "to_manifest", "validate_manifest"]

_NODE_FIELDS = {"id", "node_type", "params", "executor", "options"}
_CONN_FIELDS = {"from", "to", "maxsize", "overflow"}
_TOP_FIELDS = {"version", "metadata", "nodes", "connections", "negotiation"}


class _Lined(dict[str, Any]):
    """A mapping that remembers the manifest line it started on."""

    line: int | None = None


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Lined:
    loader.flatten_mapping(node)
    out = _Lined(loader.construct_pairs(node, deep=True))
    out.line = node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line(obj: Any) -> int | None:
    return getattr(obj, "line", None)


def _read(src: Any) -> tuple[Any, str | None]:
    """(parsed manifest, source name) from a mapping, a path or YAML/JSON text."""
    if isinstance(src, Mapping):
        return src, None
    if isinstance(src, os.PathLike) or (
        isinstance(src, str) and "\n" not in src and src.strip().endswith((".yaml", ".yml", ".json"))
    ):
        path = Path(src)
        if not path.is_file():
            raise ManifestError(f"no such manifest file: {path}", source=str(path))
        text, name = path.read_text(encoding="utf-8"), str(path)
    elif isinstance(src, str):
        text, name = src, None
    else:
        raise ManifestError(f"a manifest is a path, YAML/JSON text or a mapping, not {type(src).__name__}")
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ManifestError(
            f"not valid YAML/JSON: {getattr(e, 'problem', None) or e}",
            line=mark.line + 1 if mark is not None else None,
            source=name,
        ) from None
    return data, name


def _build(data: Any, source: str | None, errors: list[ManifestError] | None) -> Pipeline:
    """The pipeline; with ``errors`` given, problems are collected instead of raised."""

    def problem(msg: str, *, node: str | None = None, port: str | None = None, line: int | None = None) -> None:
        err = ManifestError(msg, node=node, port=port, line=line, source=source)
        if errors is None:
            raise err
        errors.append(err)

    if not isinstance(data, Mapping):
        problem("a manifest is a mapping with 'nodes' and 'connections'", line=_line(data))
        return Pipeline()
    meta = data.get("metadata") or {}
    if not isinstance(meta, Mapping):
        problem("'metadata' must be a mapping", line=_line(data))
        meta = {}
    p = Pipeline(str(meta.get("name", "pipeline")), description=str(meta.get("description", "")))
    p.metadata = dict(meta)
    p.extra = {k: v for k, v in data.items() if k not in _TOP_FIELDS}
    if "version" in data:
        p.extra["version"] = data["version"]
    neg = data.get("negotiation") or {}
    if not isinstance(neg, Mapping):
        problem("'negotiation' must be a mapping such as {auto_convert: true}", line=_line(data))
        neg = {}
    p.negotiation = dict(neg)
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        problem("'nodes' must be a non-empty list", line=_line(data))
        nodes = []
    for i, n in enumerate(nodes):
        line = _line(n) or _line(data)
        if not isinstance(n, Mapping):
            problem(f"nodes[{i}] must be a mapping with 'id' and 'node_type'", line=line)
            continue
        nid, ntype = n.get("id"), n.get("node_type")
        if not isinstance(nid, str) or not nid:
            problem(f"nodes[{i}] needs a string 'id'", line=line)
            continue
        if not isinstance(ntype, str) or not ntype:
            problem("needs a string 'node_type'", node=nid, line=line)
            continue
        params = n.get("params") or {}
        if not isinstance(params, Mapping):
            problem("'params' must be a mapping", node=nid, line=line)
            continue
        executor = n.get("executor", "asyncio")
        if executor not in EXECUTORS:
            problem(f"unknown executor {executor!r} (one of {', '.join(EXECUTORS)})", node=nid, line=line)
            continue
        options = n.get("options") or {}
        if not isinstance(options, Mapping):
            problem("'options' must be a mapping", node=nid, line=line)
            continue
        try:
            spec = p.add(nid, ntype, executor=executor, options=dict(options), line=line, **dict(params))
        except GraphError as e:
            problem(_strip(str(e), nid), node=nid, line=line)
            continue
        except (TypeError, ValueError) as e:
            problem(str(e), node=nid, line=line)
            continue
        spec.extra = {k: v for k, v in n.items() if k not in _NODE_FIELDS}
        try:
            spec.prototype  # noqa: B018 - params that __init__ refuses are manifest errors
        except (TypeError, ValueError) as e:
            problem(f"bad params: {e}", node=nid, line=line)
            del p.nodes[nid]
    conns = data.get("connections") or []
    if not isinstance(conns, list):
        problem("'connections' must be a list", line=_line(data))
        conns = []
    for i, c in enumerate(conns):
        line = _line(c) or _line(data)
        if not isinstance(c, Mapping) or not isinstance(c.get("from"), str) or not isinstance(c.get("to"), str):
            problem(f"connections[{i}] must be a mapping with string 'from' and 'to'", line=line)
            continue
        src, dst = c["from"], c["to"]
        if src.split(".")[0] not in p.nodes or dst.split(".")[0] not in p.nodes:
            missing = src.split(".")[0] if src.split(".")[0] not in p.nodes else dst.split(".")[0]
            if errors is not None and any(e.node == missing for e in errors):
                continue  # already reported where the node was declared
        try:
            conn = p.connect(src, dst, maxsize=c.get("maxsize"), overflow=c.get("overflow"), line=line)
        except GraphError as e:
            problem(f"connection {src} -> {dst}: {e}", node=e.node, port=e.port, line=line)
            continue
        extra = {k: v for k, v in c.items() if k not in _CONN_FIELDS}
        if extra:
            i_ = p.connections.index(conn)
            p.connections[i_] = type(conn)(
                conn.src, conn.src_port, conn.dst, conn.dst_port, {**conn.options, **extra}, line
            )
    if p.nodes and (errors is None or not errors):
        try:
            p.validate()
        except GraphError as e:
            spec = p.nodes.get(e.node or "")
            problem(str(e), node=e.node, port=e.port, line=spec.line if spec else None)
    return p


def _strip(msg: str, nid: str) -> str:
    prefix = f"node {nid!r} "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg


def load(src: Any) -> Pipeline:
    """A :class:`Pipeline` from a manifest: a file path, YAML/JSON text or a mapping."""
    data, source = _read(src)
    return _build(data, source, None)


def validate_manifest(src: Any, *, auto_convert: bool | None = None) -> list[ManifestError | NegotiationError]:
    """Every problem of a manifest (empty when valid), negotiation included."""
    try:
        data, source = _read(src)
    except ManifestError as e:
        return [e]
    errors: list[ManifestError] = []
    p = _build(data, source, errors)
    out: list[ManifestError | NegotiationError] = list(errors)
    if not out:
        convert = p.negotiation.get("auto_convert", False) if auto_convert is None else auto_convert
        try:
            p.negotiate(auto_convert=bool(convert))
        except NegotiationError as e:
            out.append(e)
        except PipelineError as e:
            out.append(ManifestError(str(e), source=source))
    return out


def _type_name(spec: Any) -> str:
    nt = spec.type
    return nt.name if _REGISTRY.get(nt.name) is nt else nt.ref


def to_manifest(p: Pipeline) -> dict[str, Any]:
    """The manifest of ``p`` (what :func:`load` reads back into an equal pipeline)."""
    out: dict[str, Any] = {"version": p.extra.get("version", "v1")}
    meta = dict(p.metadata)
    meta["name"] = p.name
    if p.description:
        meta["description"] = p.description
    out["metadata"] = meta
    if p.negotiation:
        out["negotiation"] = dict(p.negotiation)
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
        src = p.nodes[c.src]
        dst = p.nodes[c.dst]
        e: dict[str, Any] = {
            "from": c.src if list(src.outputs) == [c.src_port] else f"{c.src}.{c.src_port}",
            "to": c.dst if list(dst.inputs) == [c.dst_port] else f"{c.dst}.{c.dst_port}",
        }
        e.update(dict(c.options))
        conns.append(e)
    out["connections"] = conns
    return _plain(out)


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def dump(p: Pipeline, path: str | os.PathLike[str] | None = None, format: str = "yaml") -> str:  # noqa: A002
    """The manifest as YAML or JSON text (also written to ``path`` if given)."""
    m = to_manifest(p)
    if format == "json":
        text = json.dumps(m, indent=2) + "\n"
    elif format == "yaml":
        text = yaml.safe_dump(m, sort_keys=False, default_flow_style=None)
    else:
        raise ValueError("format is 'yaml' or 'json'")
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
