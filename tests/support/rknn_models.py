"""Models for the RKNN tests: a real trained model given an operator rknn-toolkit2 refuses to build.

rknn-toolkit2 2.5.0 builds static graphs only. Found by trying: it refuses `Unique` on a tensor that is not constant
("The input 0 of Unique('...') need to be constant! It will cause the graph to be a dynamic graph!") and random
operators ("Found Random node ..."), and a `NonZero` that is a graph output; it built NonZero inside a graph, Hardmax,
CumSum, Trilu, Round, Erf, Mod, Celu, Shrink, ThresholdedRelu, TopK, Einsum, Det and ReduceLogSumExp (some on its
CPU fallback).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper


def with_unique(model_path: Path, out_path: Path) -> Path:
    """The model with the sum of its first input's distinct values added to its first output times 1e-30: too
    small to change a float32 output (a zero would be folded away by the fuse pass), so every runtime gives the
    original's outputs, and an operator whose output shape depends on the data, which RKNN cannot build."""
    model = onnx.load(model_path)
    graph = model.graph
    source, output = graph.input[0].name, graph.output[0].name
    for node in graph.node:  # the producer of the output now writes a raw tensor the new Add reads
        node.output[:] = [f"{output}_raw" if name == output else name for name in node.output]
    graph.initializer.append(helper.make_tensor("distinct_weight", TensorProto.FLOAT, [], [1e-30]))
    graph.node.extend([
        helper.make_node("Unique", [source], ["distinct_values"], name="distinct", sorted=1),
        helper.make_node("ReduceSum", ["distinct_values"], ["distinct_sum"], keepdims=0),
        helper.make_node("Mul", ["distinct_sum", "distinct_weight"], ["distinct_nothing"]),
        helper.make_node("Add", [f"{output}_raw", "distinct_nothing"], [output]),
    ])
    onnx.checker.check_model(model)
    onnx.save(model, out_path)
    return out_path


def require_toolchain() -> None:
    """The `rknn` tests need the toolchain `make test-rknn` builds; without it they fail with that command, they are
    never skipped (a skipped tier would pass CI having checked nothing)."""
    from converter.rknn_toolchain import find_toolchain

    python, why = find_toolchain()
    assert python is not None, why
