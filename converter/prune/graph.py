"""Channel groups: which channels of an ONNX graph have to be removed together, and where each one is used.

A channel group starts at a producer (a Conv, Gemm or MatMul with constant weights: one output channel per
row) and follows its tensors through operators that keep channels apart (activations, BatchNorm, pooling,
depthwise convolution, Flatten/Reshape to features, per-channel constants) to its consumers (the Conv, Gemm or
MatMul layers that read those channels). A residual Add (or Mul, Sub, ...) of two grouped tensors merges their
groups: channel k of both sides must go together. A Concat along the channel axis lays the groups of its inputs
side by side. Anything else that touches a group's channels (a graph output, a Transpose, a Softmax over
channels, a grouped convolution, a shape computed at run time) pins the group: it is left alone, and the
reason is kept for the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: Elementwise operators of one tensor input: channel k of the output is computed from channel k alone.
UNARY_OPS = {
    "Abs", "Cast", "Celu", "Clip", "Cos", "Dropout", "Elu", "Erf", "Exp", "Gelu", "HardSigmoid", "HardSwish",
    "Identity", "LeakyRelu", "Log", "Mish", "Neg", "Reciprocal", "Relu", "Selu", "Sigmoid", "Sign", "Sin",
    "Softplus", "Softsign", "Sqrt", "Tanh", "ThresholdedRelu",
}  # fmt: skip
#: Elementwise operators of several inputs; a constant input must broadcast along the channel axis.
BINARY_OPS = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow"}
#: Spatial pooling of NC... tensors (channel axis 1).
POOL_OPS = {"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}
#: Per-channel parameter inputs of normalisation operators, by input slot (channel axis 1 of the data).
NORM_PARAMS = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2)}


@dataclass(frozen=True)
class Segment:
    """A run of channels of one group along a tensor's channel axis; `block` features per channel."""

    group: int
    block: int = 1


@dataclass(frozen=True)
class Layout:
    """How a tensor's channel axis is made of groups: their segments in order along `axis`."""

    axis: int
    segments: tuple[Segment, ...]


@dataclass
class Producer:
    """A layer whose output channels are a group: slicing rows of `weight` (and `bias`) removes channels."""

    node: str
    op: str
    weight: str
    axis: int
    bias: str | None = None
    bias_axis: int = 0


@dataclass
class Consumer:
    """A layer that reads grouped channels: removing one removes a slice of `weight` along `axis`."""

    node: str
    op: str
    input: str
    weight: str
    axis: int
    layout: Layout


@dataclass
class ChannelParam:
    """A per-channel constant of a pass-through operator (BatchNorm scale, PRelu slope, bias of an Add)."""

    node: str
    name: str
    axis: int
    layout: Layout


@dataclass
class ChannelCount:
    """An attribute or shape constant that states the channel count and must follow it (depthwise `group`,
    the literal feature count of a Reshape)."""

    node: str
    kind: str  # "group" attribute, or "reshape" (initializer `name`, element `index`)
    layout: Layout
    name: str = ""
    index: int = 0


@dataclass
class ChannelGroup:
    id: int
    size: int
    producers: list[Producer] = field(default_factory=list)
    tensors: list[str] = field(default_factory=list)
    pinned: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.producers[0].node if self.producers else f"group {self.id}"

    @property
    def prunable(self) -> bool:
        return not self.pinned and bool(self.producers) and self.size > 1


@dataclass
class ChannelGraph:
    """The result of the analysis; groups are keyed by their root id after merges."""

    groups: dict[int, ChannelGroup]
    consumers: list[Consumer]
    params: list[ChannelParam]
    counts: list[ChannelCount]
    parent: dict[int, int]

    def root(self, group: int) -> int:
        while self.parent[group] != group:
            group = self.parent[group]
        return group

    def resolve(self, layout: Layout) -> Layout:
        return Layout(layout.axis, tuple(Segment(self.root(s.group), s.block) for s in layout.segments))

    def prunable(self) -> list[ChannelGroup]:
        return [group for group in self.groups.values() if group.prunable]

    def left_alone(self) -> list[ChannelGroup]:
        return [group for group in self.groups.values() if not group.prunable and group.producers]

    def consumers_of(self, group: int) -> list[Consumer]:
        return [c for c in self.consumers if any(s.group == group for s in self.resolve(c.layout).segments)]

    def layout_size(self, layout: Layout) -> int:
        return sum(self.groups[self.root(s.group)].size * s.block for s in layout.segments)

    def channel_positions(self, layout: Layout, group: int) -> np.ndarray:
        """(channels of `group`, features per channel): where each channel of the group sits along the axis."""
        parts, offset = [], 0
        for segment in layout.segments:
            root = self.root(segment.group)
            size = self.groups[root].size
            if root == group:
                parts.append(offset + np.arange(size * segment.block).reshape(size, segment.block))
            offset += size * segment.block
        return np.concatenate(parts, axis=1)

    def positions(self, layout: Layout, keep: dict[int, np.ndarray]) -> np.ndarray:
        """Indices along the layout's axis that remain when each group keeps `keep[group]` (all if absent)."""
        parts, offset = [], 0
        for segment in layout.segments:
            root = self.root(segment.group)
            size = self.groups[root].size
            kept = keep.get(root, np.arange(size))
            parts.append(offset + (kept[:, None] * segment.block + np.arange(segment.block)).ravel())
            offset += size * segment.block
        return np.concatenate(parts)


def normalize_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy where every weight is an initializer of its own and every node has a unique name.

    Constant nodes and Identity-of-initializer nodes become initializers; initializers that old exporters also
    list as graph inputs (IR < 4, or torch's keep_initializers_as_inputs) stop being inputs, so that slicing them
    cannot contradict a declared input shape; unnamed or duplicate node names (older exporters) are made unique,
    since the analysis and the report refer to nodes by name.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    arrays = {init.name for init in graph.initializer}
    runtime_inputs = [value for value in graph.input if value.name not in arrays]
    if len(runtime_inputs) != len(graph.input):
        del graph.input[:]
        graph.input.extend(runtime_inputs)
        model.ir_version = max(model.ir_version, 4)
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            base = node.name or f"{node.op_type}_{node.output[0] if node.output else index}"
            name, suffix = base, 1
            while name in seen:
                name, suffix = f"{base}_{suffix}", suffix + 1
            node.name = name
        seen.add(node.name)
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            attrs = {a.name: a for a in node.attribute}
            if "value" in attrs:
                tensor = onnx.TensorProto()
                tensor.CopyFrom(attrs["value"].t)
                tensor.name = node.output[0]
                graph.initializer.append(tensor)
                arrays.add(node.output[0])
                continue
        if node.op_type == "Identity" and node.input[0] in arrays:
            source = next(init for init in graph.initializer if init.name == node.input[0])
            tensor = onnx.TensorProto()
            tensor.CopyFrom(source)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            arrays.add(node.output[0])
            continue
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return model


def tensor_shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Every tensor's shape as far as ONNX shape inference knows it (ints, symbolic names or None)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int | str | None]] = {}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        if not value.type.tensor_type.HasField("shape"):
            continue
        dims: list[int | str | None] = []
        for dim in value.type.tensor_type.shape.dim:
            dims.append(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None))
        shapes[value.name] = dims
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


class _Analysis:
    """One walk over the graph in topological order, assigning layouts to tensors."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.constants = {init.name: numpy_helper.to_array(init) for init in self.graph.initializer}
        self.shapes = tensor_shapes(model)
        self.uses: dict[str, int] = {}
        self.captured: dict[str, set[str]] = {}  # node name -> outer tensors its subgraphs read
        for node in self.graph.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
            captured = _subgraph_reads(node)
            if captured:
                self.captured[node.name] = captured
                for name in captured:
                    self.uses[name] = self.uses.get(name, 0) + 1
        self.layouts: dict[str, Layout] = {}
        self.groups: dict[int, ChannelGroup] = {}
        self.parent: dict[int, int] = {}
        self.consumers: list[Consumer] = []
        self.params: list[ChannelParam] = []
        self.counts: list[ChannelCount] = []

    # -- groups -------------------------------------------------------------------------------------------------
    def new_group(self, size: int, producer: Producer, tensor: str) -> Layout:
        gid = len(self.parent)
        self.parent[gid] = gid
        self.groups[gid] = ChannelGroup(gid, size, [producer], [tensor])
        return Layout(axis=-1, segments=(Segment(gid),))

    def root(self, gid: int) -> int:
        while self.parent[gid] != gid:
            gid = self.parent[gid]
        return gid

    def union(self, a: int, b: int) -> bool:
        a, b = self.root(a), self.root(b)
        if a == b:
            return True
        left, right = self.groups[a], self.groups[b]
        if left.size != right.size:
            return False
        keep, gone = (a, b) if a < b else (b, a)
        self.parent[gone] = keep
        target, source = self.groups[keep], self.groups.pop(gone)
        target.producers += source.producers
        target.tensors += source.tensors
        target.pinned += source.pinned
        return True

    def pin(self, layout: Layout | None, reason: str) -> None:
        if layout is None:
            return
        for segment in layout.segments:
            group = self.groups[self.root(segment.group)]
            if reason not in group.pinned:
                group.pinned.append(reason)

    def size(self, layout: Layout) -> int:
        return sum(self.groups[self.root(s.group)].size * s.block for s in layout.segments)

    # -- helpers ------------------------------------------------------------------------------------------------
    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def const(self, name: str) -> np.ndarray | None:
        return self.constants.get(name) if name else None

    def own_const(self, name: str) -> np.ndarray | None:
        """A constant used by this node alone (a shared weight cannot be sliced for one user)."""
        value = self.const(name)
        return value if value is not None and self.uses.get(name, 0) == 1 else None

    def set_output(self, node: onnx.NodeProto, layout: Layout | None, index: int = 0) -> None:
        if layout is None or index >= len(node.output) or not node.output[index]:
            return
        name = node.output[index]
        rank = self.rank(name)
        axis = layout.axis
        if axis < 0 and rank is not None:
            axis += rank
        self.layouts[name] = Layout(axis, layout.segments)
        for segment in layout.segments:
            self.groups[self.root(segment.group)].tensors.append(name)

    def not_understood(self, node: onnx.NodeProto, why: str = "") -> None:
        reason = f"{node.op_type} '{node.name or node.output[0]}'" + (f" ({why})" if why else " reads its channels")
        for name in node.input:
            self.pin(self.layouts.get(name), reason)

    # -- operators ----------------------------------------------------------------------------------------------
    def visit(self, node: onnx.NodeProto) -> None:
        op = node.op_type
        for name in self.captured.get(node.name, ()):
            self.pin(self.layouts.get(name), f"read inside a subgraph of {op} '{node.name or node.output[0]}'")
        if node.domain not in ("", "ai.onnx"):
            self.not_understood(node, f"operator of domain {node.domain}")
        elif op == "Conv":
            self.conv(node)
        elif op == "Gemm":
            self.gemm(node)
        elif op == "MatMul":
            self.matmul(node)
        elif op in UNARY_OPS:
            self.unary(node)
        elif op in POOL_OPS:
            self.pool(node)
        elif op in NORM_PARAMS:
            self.norm(node)
        elif op == "PRelu" or op in BINARY_OPS:
            self.elementwise(node)
        elif op == "Flatten":
            self.flatten(node)
        elif op == "Reshape":
            self.reshape(node)
        elif op == "Concat":
            self.concat(node)
        elif op in ("Squeeze", "Unsqueeze"):
            self.squeeze(node)
        else:
            self.not_understood(node)

    def conv(self, node: onnx.NodeProto) -> None:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = self.own_const(node.input[1])
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        bias = self.own_const(bias_name) if bias_name else None
        layout = self.layouts.get(node.input[0])
        if weight is None or weight.ndim not in (3, 4) or (bias_name and bias is None):
            self.not_understood(node, "weights not a constant of its own, or not a 1-D/2-D convolution")
            return
        group = int(attrs.get("group", 1))
        out_channels = weight.shape[0]
        if group == 1:
            if layout is not None:
                if layout.axis != 1:
                    self.pin(layout, f"Conv '{node.name}' reads a non-channel axis")
                elif any(s.block != 1 for s in layout.segments):
                    self.pin(layout, f"Conv '{node.name}' reads flattened features")
                else:
                    self.consumers.append(Consumer(node.name, "Conv", node.input[0], node.input[1], 1, layout))
            producer = Producer(node.name, "Conv", node.input[1], 0, bias_name, 0)
            self.set_output(node, Layout(1, self.new_group(out_channels, producer, node.output[0]).segments))
            return
        depthwise = weight.shape[1] == 1 and out_channels == group
        if depthwise and layout is not None and layout.axis == 1 and self.size(layout) == group:
            if any(s.block != 1 for s in layout.segments):
                self.not_understood(node, "depthwise convolution over flattened features")
                return
            self.params.append(ChannelParam(node.name, node.input[1], 0, layout))
            if bias_name:
                self.params.append(ChannelParam(node.name, bias_name, 0, layout))
            self.counts.append(ChannelCount(node.name, "group", layout))
            self.set_output(node, layout)
            return
        self.not_understood(node, f"grouped convolution, group={group}")

    def gemm(self, node: onnx.NodeProto) -> None:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = self.own_const(node.input[1])
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        bias = self.own_const(bias_name) if bias_name else None
        if attrs.get("transA", 0) or weight is None or weight.ndim != 2 or (bias_name and bias is None):
            self.not_understood(node, "transposed input or weights not a constant of its own")
            return
        trans_b = bool(attrs.get("transB", 0))
        out_features = weight.shape[0] if trans_b else weight.shape[1]
        bias_axis = 0
        if bias is not None:
            if bias.ndim == 2 and bias.shape[0] == 1 and bias.shape[1] == out_features:
                bias_axis = 1
            elif not (bias.ndim == 1 and bias.shape[0] == out_features) and bias.size != 1:
                self.not_understood(node, "bias of unexpected shape")
                return
            elif bias.size == 1 and out_features != 1:
                self.not_understood(node, "scalar bias")
                return
        layout = self.layouts.get(node.input[0])
        if layout is not None:
            if layout.axis != 1:
                self.pin(layout, f"Gemm '{node.name}' reads a non-feature axis")
            else:
                self.consumers.append(
                    Consumer(node.name, "Gemm", node.input[0], node.input[1], 1 if trans_b else 0, layout)
                )
        producer = Producer(node.name, "Gemm", node.input[1], 0 if trans_b else 1, bias_name, bias_axis)
        self.set_output(node, Layout(1, self.new_group(out_features, producer, node.output[0]).segments))

    def matmul(self, node: onnx.NodeProto) -> None:
        weight = self.own_const(node.input[1])
        layout = self.layouts.get(node.input[0])
        rank = self.rank(node.input[0])
        if weight is None or weight.ndim != 2 or rank is None or self.const(node.input[0]) is not None:
            self.not_understood(node, "not activations times a constant matrix of its own")
            return
        if layout is not None:
            if layout.axis != rank - 1:
                self.pin(layout, f"MatMul '{node.name}' reads a non-feature axis")
            else:
                self.consumers.append(Consumer(node.name, "MatMul", node.input[0], node.input[1], 0, layout))
        producer = Producer(node.name, "MatMul", node.input[1], 1)
        self.set_output(node, self.new_group(weight.shape[1], producer, node.output[0]))

    def unary(self, node: onnx.NodeProto) -> None:
        layout = self.layouts.get(node.input[0])
        if layout is None:
            return
        for extra in node.input[1:]:
            value = self.const(extra)
            if extra and (value is None or value.size != 1):
                self.not_understood(node, "non-scalar extra input")
                return
        self.set_output(node, layout)
        if node.op_type == "Dropout":
            self.set_output(node, layout, 1)

    def pool(self, node: onnx.NodeProto) -> None:
        layout = self.layouts.get(node.input[0])
        if layout is None:
            return
        if layout.axis != 1 or (len(node.output) > 1 and node.output[1] and self.uses.get(node.output[1])):
            self.not_understood(node, "pools a non-channel layout or returns indices")
            return
        self.set_output(node, layout)

    def norm(self, node: onnx.NodeProto) -> None:
        layout = self.layouts.get(node.input[0])
        if layout is None:
            return
        slots = NORM_PARAMS[node.op_type]
        if layout.axis != 1 or any(self.own_const(node.input[i]) is None for i in slots):
            self.not_understood(node, "parameters not per-channel constants of its own")
            return
        if any(s.block != 1 for s in layout.segments):
            self.not_understood(node, "normalises flattened features")
            return
        for slot in slots:
            self.params.append(ChannelParam(node.name, node.input[slot], 0, layout))
        self.set_output(node, layout)

    def elementwise(self, node: onnx.NodeProto) -> None:
        out_rank = self.rank(node.output[0])
        grouped = [(name, self.layouts[name]) for name in node.input if name in self.layouts]
        if not grouped:
            return
        if out_rank is None:
            self.not_understood(node, "output rank unknown")
            return
        ranks = [self.rank(name) for name, _ in grouped]
        if any(rank is None for rank in ranks):
            self.not_understood(node, "input rank unknown")
            return
        # Channel axis counted from the right, where broadcasting aligns dimensions.
        from_right = {rank - layout.axis for rank, (_, layout) in zip(ranks, grouped, strict=True)}  # type: ignore[operator]
        if len(from_right) != 1:
            self.not_understood(node, "inputs have their channels on different axes")
            return
        axis = out_rank - from_right.pop()
        first = grouped[0][1]
        size = self.size(first)
        pending: list[ChannelParam] = []
        for name in node.input:
            if not name or name in self.layouts:
                continue
            shape = self.shapes.get(name)
            value = self.const(name)
            if shape is None:
                self.not_understood(node, "an input of unknown shape")
                return
            position = axis - (out_rank - len(shape))
            if position < 0 or shape[position] == 1:
                continue  # broadcast along the channel axis: nothing to slice
            if value is None or self.uses.get(name, 0) != 1 or shape[position] != size:
                why = "adds a tensor whose channels cannot be removed with the group's"
                self.not_understood(node, why)
                return
            pending.append(ChannelParam(node.name, name, position, first))
        for _, layout in grouped[1:]:
            if len(layout.segments) != len(first.segments) or any(
                a.block != b.block or not self.union(a.group, b.group)
                for a, b in zip(first.segments, layout.segments, strict=True)
            ):
                self.not_understood(node, "joins tensors whose channel groups do not line up")
                return
        self.params += pending
        self.set_output(node, Layout(axis, first.segments))

    def flatten(self, node: onnx.NodeProto) -> None:
        layout = self.layouts.get(node.input[0])
        if layout is None:
            return
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
        shape = self.shapes.get(node.input[0]) or []
        axis = axis + len(shape) if axis < 0 else axis
        spatial = shape[2:]
        if layout.axis != 1 or axis != 1 or not all(isinstance(d, int) and d > 0 for d in spatial):
            self.not_understood(node, "flattens with an axis or spatial size it cannot map")
            return
        factor = int(np.prod(spatial)) if spatial else 1
        self.set_output(node, Layout(1, tuple(Segment(s.group, s.block * factor) for s in layout.segments)))

    def reshape(self, node: onnx.NodeProto) -> None:
        layout = self.layouts.get(node.input[0])
        if layout is None:
            return
        target = self.own_const(node.input[1])
        shape = self.shapes.get(node.input[0]) or []
        spatial = shape[2:]
        if (
            target is None
            or target.shape != (2,)
            or layout.axis != 1
            or not all(isinstance(d, int) and d > 0 for d in spatial)
        ):
            self.not_understood(node, "a reshape other than to (batch, features)")
            return
        factor = int(np.prod(spatial)) if spatial else 1
        size = self.size(layout) * factor
        features = Layout(1, tuple(Segment(s.group, s.block * factor) for s in layout.segments))
        first, second = int(target[0]), int(target[1])
        keeps_batch = first == 0 or (bool(shape) and first == shape[0])
        if second == -1 and keeps_batch:
            pass
        elif second == size and (keeps_batch or first == -1):
            self.counts.append(ChannelCount(node.name, "reshape", features, node.input[1], 1))
        else:
            self.not_understood(node, "a reshape other than to (batch, features)")
            return
        self.set_output(node, features)

    def concat(self, node: onnx.NodeProto) -> None:
        layouts = [self.layouts.get(name) for name in node.input]
        if not any(layouts):
            return
        axis = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "axis")
        rank = self.rank(node.output[0])
        if axis < 0 and rank is not None:
            axis += rank
        if any(layout is None or layout.axis != axis for layout in layouts):
            self.not_understood(node, "concatenates along another axis or with channels it cannot remove")
            return
        segments = tuple(segment for layout in layouts for segment in layout.segments)  # type: ignore[union-attr]
        self.set_output(node, Layout(axis, segments))

    def squeeze(self, node: onnx.NodeProto) -> None:
        layout = self.layouts.get(node.input[0])
        if layout is None:
            return
        axes = next((list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "axes"), None)
        if axes is None and len(node.input) > 1:
            value = self.const(node.input[1])
            axes = None if value is None else [int(v) for v in value.ravel()]
        rank_in, rank_out = self.rank(node.input[0]), self.rank(node.output[0])
        if axes is None or rank_in is None or rank_out is None:
            self.not_understood(node, "axes unknown")
            return
        rank = rank_in if node.op_type == "Squeeze" else rank_out
        axes = [a + rank if a < 0 else a for a in axes]
        if any(a <= layout.axis for a in axes):
            self.not_understood(node, "moves the channel axis")
            return
        self.set_output(node, layout)


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If branches, Loop/Scan bodies, nested) read but do not define themselves."""
    reads: set[str] = set()
    for attribute in node.attribute:
        graphs = list(attribute.graphs) + ([attribute.g] if attribute.HasField("g") else [])
        for graph in graphs:
            defined = {value.name for value in graph.input} | {init.name for init in graph.initializer}
            for inner in graph.node:
                reads |= {name for name in inner.input if name and name not in defined}
                reads |= _subgraph_reads(inner) - defined
                defined |= set(inner.output)
    return reads


def analyse(model: onnx.ModelProto) -> ChannelGraph:
    """Find the channel groups of a model (call `normalize_constants` first so weights are initializers)."""
    analysis = _Analysis(model)
    for node in analysis.graph.node:
        analysis.visit(node)
    for output in analysis.graph.output:
        analysis.pin(analysis.layouts.get(output.name), f"graph output '{output.name}'")
    graph = ChannelGraph(analysis.groups, analysis.consumers, analysis.params, analysis.counts, analysis.parent)
    return graph
