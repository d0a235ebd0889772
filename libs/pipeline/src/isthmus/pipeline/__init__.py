"""isthmus.pipeline: streaming media pipelines with caps negotiation and multiprocess nodes.

* :func:`node` / :class:`Node` / :class:`Port` — node types with named ports and caps;
* :class:`Pipeline` — the graph, built in code or by :func:`load` from a YAML/JSON manifest;
* :class:`Caps` and :func:`negotiate` — GStreamer-style caps negotiation with converters;
* :class:`Session` — a per-session router: bounded edges, interruption, metrics, retries;
* :mod:`isthmus.pipeline.nodes` — resampler, rechunker, VADs, meters, file sources and sinks.
"""

from ._caps import Caps, CapsSet
from ._control import CapsChanged, Control, EndOfStream, Flush, Interrupt, Message, is_system
from ._errors import (
    CapsError,
    CircuitOpenError,
    GraphError,
    ManifestError,
    NegotiationError,
    NodeError,
    PipelineError,
    ProcessNodeError,
    QueueFullError,
    SessionClosedError,
)
from ._graph import EXECUTORS, OVERFLOW_POLICIES, Connection, NodeSpec, Pipeline
from ._manifest import dump, load, to_manifest, validate_manifest
from ._media import FORMAT_DTYPES, AudioChunk, SpeechSegment, VideoFrame, dtype_format
from ._metrics import EdgeMetrics, LatencyWindow, Metrics, NodeMetrics
from ._negotiate import Negotiated, negotiate, renegotiate
from ._node import (
    BEHAVIOURS,
    FrameConstraint,
    InputNode,
    Node,
    NodeType,
    OutputNode,
    Port,
    node,
    node_types,
    register,
    resolve,
)
from ._process import ProcessWorker
from ._reliability import CircuitBreaker, RetryPolicy
from ._render import render, to_dot
from ._session import ON_ERROR, Session, run
from ._version import __version__

__all__ = [
    "BEHAVIOURS",
    "EXECUTORS",
    "FORMAT_DTYPES",
    "ON_ERROR",
    "OVERFLOW_POLICIES",
    "AudioChunk",
    "Caps",
    "CapsChanged",
    "CapsError",
    "CapsSet",
    "CircuitBreaker",
    "CircuitOpenError",
    "Connection",
    "Control",
    "EdgeMetrics",
    "EndOfStream",
    "Flush",
    "FrameConstraint",
    "GraphError",
    "InputNode",
    "Interrupt",
    "LatencyWindow",
    "ManifestError",
    "Message",
    "Metrics",
    "Negotiated",
    "NegotiationError",
    "Node",
    "NodeError",
    "NodeMetrics",
    "NodeSpec",
    "NodeType",
    "OutputNode",
    "Pipeline",
    "PipelineError",
    "Port",
    "ProcessNodeError",
    "ProcessWorker",
    "QueueFullError",
    "RetryPolicy",
    "Session",
    "SessionClosedError",
    "SpeechSegment",
    "VideoFrame",
    "__version__",
    "dtype_format",
    "dump",
    "is_system",
    "load",
    "negotiate",
    "node",
    "node_types",
    "register",
    "render",
    "renegotiate",
    "resolve",
    "run",
    "to_dot",
    "to_manifest",
    "validate_manifest",
]
