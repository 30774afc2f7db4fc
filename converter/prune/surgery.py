"""Write the smaller graph: slice producers, pass-through parameters and consumers; put refitted weights in.

Tensor and node names stay as they were, so reports, calibration and the quantizer's node exclusions still line
up with the original model. Stale shape annotations (value_info) are dropped and inferred again.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from converter.prune.graph import ChannelGraph
from converter.prune.layers import LinearMap, to_onnx


def _set_bias_input(node: onnx.NodeProto, name: str) -> None:
    while len(node.input) < 3:
        node.input.append("")
    node.input[2] = name


def prune_model(
    model: onnx.ModelProto,
    graph: ChannelGraph,
    keep: dict[int, np.ndarray],
    refitted: dict[str, LinearMap] | None = None,
) -> onnx.ModelProto:
    """A copy of `model` with each group in `keep` cut down to those channels (sorted indices)."""
    pruned = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = {node.name: node for node in pruned.graph.node}
    initializers = {init.name: init for init in pruned.graph.initializer}
    originals: dict[str, np.ndarray] = {}
    arrays: dict[str, np.ndarray] = {}

    def current(name: str) -> np.ndarray:
        if name not in arrays:
            originals[name] = arrays[name] = numpy_helper.to_array(initializers[name])
        return arrays[name]

    def touched(layout) -> bool:
        return any(segment.group in keep for segment in graph.resolve(layout).segments)

    added_bias: dict[str, str] = {}
    for consumer in graph.consumers:
        if not touched(consumer.layout):
            continue
        node = nodes[consumer.node]
        if refitted and consumer.node in refitted:
            view = {name: current(name) for name in node.input[1:] if name}
            for name, value in to_onnx(consumer, node, view, refitted[consumer.node]).items():
                if name not in initializers:
                    initializers[name] = pruned.graph.initializer.add()
                    initializers[name].name = name
                    _set_bias_input(node, name)
                    added_bias[node.name] = name
                arrays[name] = value
        else:
            positions = graph.positions(graph.resolve(consumer.layout), keep)
            arrays[consumer.weight] = np.take(current(consumer.weight), positions, axis=consumer.axis)
    for group_id, kept in keep.items():
        for producer in graph.groups[group_id].producers:
            arrays[producer.weight] = np.take(current(producer.weight), kept, axis=producer.axis)
            bias = producer.bias or added_bias.get(producer.node)
            if bias:
                axis = producer.bias_axis if producer.bias else 0
                arrays[bias] = np.take(current(bias), kept, axis=axis)
    for param in graph.params:
        if touched(param.layout):
            positions = graph.positions(graph.resolve(param.layout), keep)
            arrays[param.name] = np.take(current(param.name), positions, axis=param.axis)
    for count in graph.counts:
        if not touched(count.layout):
            continue
        size = len(graph.positions(graph.resolve(count.layout), keep))
        if count.kind == "group":
            node = nodes[count.node]
            for attribute in node.attribute:
                if attribute.name == "group":
                    attribute.i = size
        else:
            shape = current(count.name).copy()
            shape[count.index] = size
            arrays[count.name] = shape
    for name, value in arrays.items():
        initializers[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))
    del pruned.graph.value_info[:]
    onnx.checker.check_model(pruned)
    return onnx.shape_inference.infer_shapes(pruned, strict_mode=True)
