"""Multiply-accumulates of the layers pruning changes (Conv, Gemm, MatMul), per node, at batch 1.

Elementwise operators are left out: they are a small share of a CNN's work and pruning scales them with the
channels anyway. FLOPs are reported as 2 x MACs.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import onnx

from converter.prune.graph import tensor_shapes


def _topological(nodes: list[onnx.NodeProto], known: set[str]) -> list[onnx.NodeProto]:
    """Nodes in an order where each comes after its inputs' producers (some converters append nodes, such as the
    fp16 converter's input Cast, after their readers; onnxruntime accepts that, shape inference does not)."""
    producers = {name: index for index, node in enumerate(nodes) for name in node.output}
    waiting = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    for index, node in enumerate(nodes):
        for source in {producers[name] for name in node.input if name and name not in known and name in producers}:
            waiting[index] += 1
            readers.setdefault(source, []).append(index)
    ready = deque(index for index, count in enumerate(waiting) if count == 0)
    order: list[int] = []
    while ready:
        index = ready.popleft()
        order.append(index)
        for reader in readers.get(index, []):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                ready.append(reader)
    if len(order) != len(nodes):  # a cycle: keep the graph as it was
        return nodes
    return [nodes[index] for index in order]


def _batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {init.name for init in copy.graph.initializer}
    del copy.graph.value_info[:]
    known = initializers | {value.name for value in copy.graph.input}
    ordered = [
        onnx.NodeProto.FromString(node.SerializeToString()) for node in _topological(list(copy.graph.node), known)
    ]
    del copy.graph.node[:]
    copy.graph.node.extend(ordered)
    for value in copy.graph.input:
        if value.name in initializers:
            continue
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    return copy


def layer_macs(model: onnx.ModelProto) -> dict[str, int]:
    shapes = tensor_shapes(_batch_one(model))
    macs: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        out = shapes.get(node.output[0])
        weight = shapes.get(node.input[1])
        source = shapes.get(node.input[0])
        if not out or not weight or not source or not all(isinstance(d, int) for d in out + weight + source):
            continue
        if node.op_type == "Conv":
            per_output = int(np.prod(weight[1:]))
        elif node.op_type == "Gemm":
            trans_a = any(a.name == "transA" and a.i for a in node.attribute)
            per_output = source[0] if trans_a else source[-1]
        else:
            per_output = source[-1]
        macs[node.name] = int(np.prod(out)) * int(per_output)
    return macs


def total_flops(model: onnx.ModelProto) -> int:
    return 2 * sum(layer_macs(model).values())


def model_flops(model: onnx.ModelProto) -> int | None:
    """FLOPs for the report, or None when shapes cannot be inferred (the report shows '-')."""
    try:
        return total_flops(model)
    except Exception:  # noqa: BLE001 - a report column must never fail a conversion
        return None
