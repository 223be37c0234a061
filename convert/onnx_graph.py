"""Queries on an ONNX graph that the int8 quantiser and the TFLite preparation both make."""

from __future__ import annotations

import onnx


def readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it, in graph order (a snapshot: rebuild it after editing the graph)."""
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found
