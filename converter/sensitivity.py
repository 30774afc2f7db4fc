"""Which quantized nodes cost the most, measured on the model's output the way the gate judges it.

Per-layer sensitivity analysis as quantization toolkits do it (TensorRT's and AIMET's per-layer analysis): each
quantized node is switched on alone, every other node reading float, and the error that this one node's int8
inputs cause at the model's output is measured. The local signal-to-noise of each tensor (onnxruntime's
qdq_loss_debug) cannot see this: a YOLO head concatenates box coordinates (0-320) with class scores (0-1), so the
concatenated tensor keeps a high SQNR while its scores are ruined, and on a YOLOv8n the layers whose int8 inputs
lose the most boxes are the first three convolutions, which barely lower any tensor's SQNR.

The hybrids are cut from the one quantized model (no calibration per node): a node that should read float gets its
float model's inputs back, and the Q/DQ nodes nobody reads any more are dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def quantized_nodes(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto) -> list[str]:
    """Nodes of the float model that read quantized inputs in the QDQ model, in graph order."""
    original = {node.name: list(node.input) for node in float_model.graph.node if node.name}
    return [node.name for node in qdq_model.graph.node
            if node.op_type not in _QDQ and node.name in original and list(node.input) != original[node.name]]


def quantized_groups(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, op_types: list[str] | None
                     ) -> dict[str, set[str]]:
    """What leaving one node in float changes, per node the quantizer can leave out (`nodes_to_exclude` only acts
    on the operator types it quantizes, `op_types`; None: any): the node itself and the nodes of other types that
    read its quantized output (a SiLU's Sigmoid and Mul after a quantized Conv)."""
    reading = quantized_nodes(float_model, qdq_model)
    types = {node.name: node.op_type for node in float_model.graph.node if node.name}
    producer = {name: node.name for node in float_model.graph.node for name in node.output}
    float_inputs = {node.name: list(node.input) for node in float_model.graph.node if node.name}
    groups = {name: {name} for name in reading if op_types is None or types[name] in op_types}
    for name in reading:
        if name in groups:
            continue
        for tensor in float_inputs[name]:
            if producer.get(tensor) in groups:
                groups[producer[tensor]].add(name)
    return groups


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes whose inputs nobody produces any more, then nodes whose outputs nobody reads, then unused
    initializers."""
    available = {value.name for value in graph.input} | {init.name for init in graph.initializer} | {""}
    kept = []
    for node in graph.node:  # the graph is topologically sorted
        if all(name in available for name in node.input):
            kept.append(node)
            available.update(node.output)
    needed = {value.name for value in graph.output}
    alive = []
    for node in reversed(kept):
        if any(name in needed for name in node.output):
            alive.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(alive))
    initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def isolate(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, keep: set[str]) -> onnx.ModelProto:
    """The QDQ model with only the nodes in `keep` reading quantized inputs; every other node reads, and writes,
    what it does in the float model."""
    original = {node.name: node for node in float_model.graph.node if node.name}
    floats = {init.name: init for init in float_model.graph.initializer}
    model = onnx.ModelProto()
    model.CopyFrom(qdq_model)
    graph = model.graph
    # a name some node writes is not replaced by the float initializer: a bias DequantizeLinear writes the bias's
    # own name (int32 at the input scale x the weight scale: exact enough to leave)
    present = {init.name for init in graph.initializer} | {name for node in graph.node for name in node.output}
    for node in graph.node:
        if node.op_type in _QDQ or node.name in keep or node.name not in original:
            continue
        source = original[node.name]
        for field in ("input", "output"):
            if list(getattr(node, field)) != list(getattr(source, field)):
                del getattr(node, field)[:]
                getattr(node, field).extend(getattr(source, field))
        for name in source.input:
            if name in floats and name not in present:
                graph.initializer.append(floats[name])
                present.add(name)
    # a float node may now write a tensor a DequantizeLinear also writes (a quantized graph output): the Q/DQ pair
    # reads a tensor nobody produces any more and goes in _prune
    _prune(graph)
    return model


def rank_nodes(
    float_model: onnx.ModelProto,
    qdq_model: onnx.ModelProto,
    error: Callable[[onnx.ModelProto], float],
    op_types: list[str] | None = None,
) -> list[tuple[str, float]]:
    """The nodes the quantizer can leave in float, ranked by the output error each causes when it (with the nodes
    reading its quantized output) alone is quantized, worst first. `error(model)` measures a hybrid's outputs
    against the float model's (0 = identical)."""
    groups = quantized_groups(float_model, qdq_model, op_types)
    ranking = [(name, float(error(isolate(float_model, qdq_model, group)))) for name, group in groups.items()]
    ranking.sort(key=lambda item: item[1], reverse=True)
    return ranking
