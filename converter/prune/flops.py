"""Multiply-accumulates of the layers pruning changes (Conv, Gemm, MatMul), per node, at batch 1.

Elementwise operators are left out: they are a small share of a CNN's work and pruning scales them with the
channels anyway. FLOPs are reported as 2 x MACs.
"""

from __future__ import annotations

import numpy as np
import onnx

from converter.prune.graph import tensor_shapes


def _batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {init.name for init in copy.graph.initializer}
    del copy.graph.value_info[:]
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
