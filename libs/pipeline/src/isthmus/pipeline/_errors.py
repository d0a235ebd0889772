"""The exceptions of isthmus.pipeline: one base class, one subclass per kind of failure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "CapsError",
    "CircuitOpenError",
    "GraphError",
    "ManifestError",
    "NegotiationError",
    "NodeError",
    "PipelineError",
    "ProcessNodeError",
    "QueueFullError",
    "SessionClosedError",
]


class PipelineError(Exception):
    """Base class of every error raised by isthmus.pipeline."""


class CapsError(PipelineError, ValueError):
    """A caps string that does not parse, or caps used in a way they do not allow."""


class GraphError(PipelineError):
    """A pipeline graph that cannot run: unknown node, unknown port, a cycle, a dangling input."""

    def __init__(self, message: str, *, node: str | None = None, port: str | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.port = port


class ManifestError(GraphError):
    """A manifest that is malformed or describes an invalid pipeline.

    ``node``, ``port`` and ``line`` (1-based, in the manifest file) say where, when known; the
    message names them too.
    """

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        port: str | None = None,
        line: int | None = None,
        source: str | None = None,
    ) -> None:
        where = []
        if source is not None:
            where.append(source if line is None else f"{source}:{line}")
        elif line is not None:
            where.append(f"line {line}")
        if node is not None:
            where.append(f"node {node!r}" + (f" port {port!r}" if port is not None else ""))
        super().__init__(
            f"{', '.join(where)}: {message}" if where else message, node=node, port=port
        )
        self.line = line
        self.source = source
        self.reason = message


class NegotiationError(PipelineError):
    """Caps that cannot flow between two ports; ``suggestions`` says how to fix the pipeline."""

    def __init__(self, message: str, suggestions: Iterable[str] = ()) -> None:
        self.suggestions = list(suggestions)
        text = message
        if self.suggestions:
            text += "\n" + "\n".join(f"  hint: {s}" for s in self.suggestions)
        super().__init__(text)


class NodeError(PipelineError):
    """A node failed on an input: ``node`` and ``port`` name where, ``item`` is the input."""

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        port: str | None = None,
        item: Any = None,
    ) -> None:
        super().__init__(message)
        self.node = node
        self.port = port
        self.item = item


class CircuitOpenError(NodeError):
    """The node's circuit breaker is open: inputs are refused until it resets."""


class ProcessNodeError(NodeError):
    """A node in a child process failed, or the child process died or could not start."""


class SessionClosedError(PipelineError):
    """The session was closed (or is closing): it takes no more input."""


class QueueFullError(PipelineError):
    """An edge with the ``error`` overflow policy is full."""
