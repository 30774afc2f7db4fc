"""Small ONNX graphs built with onnx.helper for the converter's tests of classes of input (how dimensions are
written, opsets, graphs a library fails on). Each one runs in onnxruntime; the weights are fixed by a seed.

A dimension is given as an int (fixed), -1 or 0 (written as that value, as PaddlePaddle does), None (neither value
nor name) or a str (a symbolic name).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Dim = int | str | None


def value_info(name: str, dims: list[Dim], elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    value = helper.make_tensor_value_info(name, elem_type, [0] * len(dims))
    for dim, given in zip(value.type.tensor_type.shape.dim, dims, strict=True):
        dim.Clear()
        if isinstance(given, int):
            dim.dim_value = given  # -1 and 0 too: written as values, as exporters do
        elif isinstance(given, str):
            dim.dim_param = given
    return value


def weights(name: str, shape: tuple[int, ...], seed: int = 0) -> onnx.TensorProto:
    array = np.random.default_rng(seed).normal(0, 0.3, size=shape).astype(np.float32)
    return numpy_helper.from_array(array, name)


def model(nodes, inputs, outputs, initializers, opset: int = 17, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers)
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    built.ir_version = 7  # readable by every onnxruntime the boards have
    onnx.checker.check_model(built)
    return built


def conv_relu(input_dims: list[Dim], opset: int = 17, channels: int = 3) -> onnx.ModelProto:
    """x [N, C, H, W] -> Conv 3x3 (8 filters, same padding) -> Relu -> GlobalAveragePool -> y [N, 8, 1, 1]."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["y"], name="pool"),
    ]
    output = value_info("y", [input_dims[0], 8, 1, 1])
    return model(nodes, [value_info("x", input_dims)], [output], [weights("w", (8, channels, 3, 3))], opset)


def save(built: onnx.ModelProto, path: Path) -> Path:
    onnx.save(built, str(path))
    return path


def images(count: int, channels: int, height: int, width: int, seed: int = 1) -> np.ndarray:
    """Smooth test inputs (sums of a few sinusoids), float32 NCHW: not noise, so int8 ranges behave as on images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    out = np.empty((count, channels, height, width), np.float32)
    for index in range(count):
        for channel in range(channels):
            fy, fx, phase = rng.uniform(0.5, 4, size=3)
            out[index, channel] = np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
    return out
