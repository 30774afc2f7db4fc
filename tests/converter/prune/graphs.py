"""Small float32 ONNX graphs built in code for the pruning tests, and the helpers the tests share.

Every node is named, the first input has a dynamic batch dimension "batch", weights are drawn from a seeded
generator: these graphs exist for their structure, not for what they compute.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converter.prune.graph import ChannelGraph, ChannelGroup
from converter.runner import make_session

OPSET = 17


class Builder:
    """Append nodes one by one; each method returns the name of the tensor it produced (its node's name)."""

    def __init__(self, shape: tuple[int, ...] = (3, 8, 8), *, seed: int = 0, name: str = "x"):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.input = self.add_input(name, shape)

    def add_input(self, name: str, shape: tuple[int, ...]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape]))
        return name

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def random(self, name: str, shape: tuple[int, ...], scale: float = 0.5) -> str:
        return self.constant(name, (self.rng.normal(size=shape) * scale).astype(np.float32))

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def conv(
        self,
        x: str,
        name: str,
        c_in: int,
        c_out: int,
        *,
        kernel: int | tuple[int, ...] = 3,
        pads: int | list[int] | None = 1,
        group: int = 1,
        bias: bool = True,
        **attrs,
    ) -> str:
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        weight = self.random(f"{name}.weight", (c_out, c_in // group, *kernel))
        inputs = [x, weight]
        if bias:
            inputs.append(self.random(f"{name}.bias", (c_out,)))
        if pads is not None:
            attrs["pads"] = [pads] * (2 * len(kernel)) if isinstance(pads, int) else pads
        if group != 1:
            attrs["group"] = group
        return self.op("Conv", inputs, name, kernel_shape=list(kernel), **attrs)

    def batchnorm(self, x: str, name: str, channels: int) -> str:
        scale = self.constant(f"{name}.scale", self.rng.uniform(0.5, 1.5, channels).astype(np.float32))
        shift = self.random(f"{name}.shift", (channels,))
        mean = self.random(f"{name}.mean", (channels,))
        var = self.constant(f"{name}.var", self.rng.uniform(0.5, 1.5, channels).astype(np.float32))
        return self.op("BatchNormalization", [x, scale, shift, mean, var], name)

    def gemm(self, x: str, name: str, k: int, n: int, *, trans_b: bool = True) -> str:
        weight = self.random(f"{name}.weight", (n, k) if trans_b else (k, n))
        bias = self.random(f"{name}.bias", (n,))
        return self.op("Gemm", [x, weight, bias], name, transB=int(trans_b))

    def matmul(self, x: str, name: str, k: int, n: int) -> str:
        return self.op("MatMul", [x, self.random(f"{name}.weight", (k, n))], name)

    def model(self, *outputs: str) -> onnx.ModelProto:
        """The model with the given graph outputs, their shapes filled in by shape inference."""
        graph = helper.make_graph(
            self.nodes,
            "test",
            self.inputs,
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        known = {value.name: value for value in [*inferred.graph.value_info, *inferred.graph.output]}
        for output in model.graph.output:
            output.type.CopyFrom(known[output.name].type)
            assert output.type.tensor_type.HasField("shape"), output.name
        onnx.checker.check_model(model, full_check=True)
        return model


def sample_inputs(model: onnx.ModelProto, batch: int = 4, seed: int = 1) -> dict[str, np.ndarray]:
    """Random inputs for every graph input (the batch dimension set to `batch`)."""
    rng = np.random.default_rng(seed)
    feed = {}
    for value in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in value.type.tensor_type.shape.dim]
        feed[value.name] = rng.normal(size=dims).astype(np.float32)
    return feed


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """All graph outputs of the model in onnxruntime, in graph order."""
    return make_session(model).run(None, feed)


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def attribute(model: onnx.ModelProto, node_name: str, attr: str):
    found = [a for a in node(model, node_name).attribute if a.name == attr]
    return helper.get_attribute_value(found[0]) if found else None


def group_of(graph: ChannelGraph, producer: str) -> ChannelGroup:
    """The (root) group a producer node's output channels belong to."""
    found = [group for group in graph.groups.values() if producer in [p.node for p in group.producers]]
    assert len(found) == 1, (producer, found)
    return found[0]


def interface(model: onnx.ModelProto) -> tuple[list, list]:
    """Names and types (shapes included) of the graph inputs and outputs."""
    return (
        [(value.name, value.type.SerializeToString()) for value in model.graph.input],
        [(value.name, value.type.SerializeToString()) for value in model.graph.output],
    )


# -- the models the tests share ------------------------------------------------------------------------------------


def classifier() -> onnx.ModelProto:
    """Conv -> BatchNorm -> Relu -> Conv -> GlobalAveragePool -> Flatten -> Gemm (the output, 'logits')."""
    b = Builder()
    x = b.conv(b.input, "conv1", 3, 8)
    x = b.op("Relu", [b.batchnorm(x, "bn", 8)], "relu1")
    x = b.conv(x, "conv2", 8, 6)
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x], "gap")], "flatten")
    return b.model(b.gemm(x, "logits", 6, 5))


def residual() -> onnx.ModelProto:
    """conv_a -> Relu, conv_b on that, their sum -> Relu -> conv_c: conv_a and conv_b are one group."""
    b = Builder()
    a = b.op("Relu", [b.conv(b.input, "conv_a", 3, 8)], "relu_a")
    total = b.op("Add", [a, b.conv(a, "conv_b", 8, 8)], "add")
    return b.model(b.conv(b.op("Relu", [total], "relu"), "conv_c", 8, 4))


def concat() -> onnx.ModelProto:
    """Two convolutions of the input (8 and 4 channels) concatenated along channels into conv_c."""
    b = Builder()
    a = b.op("Relu", [b.conv(b.input, "conv_a", 3, 8)], "relu_a")
    c = b.op("Sigmoid", [b.conv(b.input, "conv_b", 3, 4)], "sigmoid_b")
    return b.model(b.conv(b.op("Concat", [a, c], "concat", axis=1), "conv_c", 12, 5))


def depthwise() -> onnx.ModelProto:
    """conv1 -> depthwise 3x3 (group 8) -> Relu -> conv2."""
    b = Builder()
    x = b.conv(b.op("Relu", [b.conv(b.input, "conv1", 3, 8)], "relu1"), "dw", 8, 8, group=8)
    return b.model(b.conv(b.op("Relu", [x], "relu2"), "conv2", 8, 4))


def mlp(shape: tuple[int, ...] = (6,)) -> onnx.ModelProto:
    """MatMul by a constant [6, 10] -> Add of a constant [10] bias -> Relu -> MatMul by a constant [10, 4]."""
    b = Builder(shape)
    x = b.matmul(b.input, "mm1", shape[-1], 10)
    x = b.op("Add", [x, b.random("add.bias", (10,))], "add")
    return b.model(b.matmul(b.op("Relu", [x], "relu"), "mm2", 10, 4))


#: How a [batch, 6, 2, 2] feature map becomes the Gemm's 24 features.
FLATTENINGS = ("flatten", "reshape_0_-1", "reshape_-1_24", "reshape_0_24")
#: The Reshapes that state the feature count literally (24), which pruning has to rewrite.
LITERAL_COUNTS = ("reshape_-1_24", "reshape_0_24")


def flattened(how: str = "flatten", *, trans_b: bool = True) -> onnx.ModelProto:
    """conv (6 channels, 8x8) -> Relu -> MaxPool 4x4 -> [batch, 6, 2, 2] -> features -> Gemm (24 -> 5)."""
    b = Builder()
    x = b.op("Relu", [b.conv(b.input, "conv", 3, 6)], "relu")
    x = b.op("MaxPool", [x], "pool", kernel_shape=[4, 4], strides=[4, 4])
    if how == "flatten":
        x = b.op("Flatten", [x], "flatten")
    else:
        target = [int(v) for v in how.split("_")[1:]]
        x = b.op("Reshape", [x, b.constant("shape", np.array(target, np.int64))], "reshape")
    return b.model(b.gemm(x, "logits", 24, 5, trans_b=trans_b))


def pointwise() -> onnx.ModelProto:
    """conv1 -> Mul by [1, 8, 1, 1] -> PRelu with [8, 1, 1] slopes -> Clip -> InstanceNormalization -> conv2."""
    b = Builder()
    x = b.conv(b.input, "conv1", 3, 8)
    x = b.op("Mul", [x, b.random("mul.scale", (1, 8, 1, 1))], "mul")
    x = b.op("PRelu", [x, b.random("prelu.slope", (8, 1, 1))], "prelu")
    low, high = b.constant("clip.min", np.float32(-1)), b.constant("clip.max", np.float32(1))
    x = b.op("Clip", [x, low, high], "clip")
    x = b.op("InstanceNormalization", [x, b.random("in.scale", (8,)), b.random("in.bias", (8,))], "in")
    return b.model(b.conv(x, "conv2", 8, 4))


def squeezed() -> onnx.ModelProto:
    """conv (8 channels) -> GlobalAveragePool -> Squeeze axes [2, 3] -> Gemm (8 -> 3)."""
    b = Builder()
    x = b.op("GlobalAveragePool", [b.conv(b.input, "conv", 3, 8)], "gap")
    x = b.op("Squeeze", [x, b.constant("axes", np.array([2, 3], np.int64))], "squeeze")
    return b.model(b.gemm(x, "logits", 8, 3))


def conv1d() -> onnx.ModelProto:
    """A 1-D CNN on [batch, 3, 16]: conv1 (8) -> Relu -> conv2 (6) -> Relu -> conv3 (4)."""
    b = Builder(shape=(3, 16))
    x = b.op("Relu", [b.conv(b.input, "conv1", 3, 8, kernel=(3,))], "relu1")
    x = b.op("Relu", [b.conv(x, "conv2", 8, 6, kernel=(3,))], "relu2")
    return b.model(b.conv(x, "conv3", 6, 4, kernel=(3,)))


def dense() -> onnx.ModelProto:
    """Gemm (6 -> 10, weight [K, N], bias [1, 10], alpha 0.5, beta 2) -> Relu -> Gemm (transB, bias [1, 4])."""
    b = Builder(shape=(6,))
    x = b.op("Gemm", [b.input, b.random("fc1.weight", (6, 10)), b.random("fc1.bias", (1, 10))], "fc1",
             alpha=0.5, beta=2.0)  # fmt: skip
    x = b.op("Relu", [x], "relu")
    return b.model(b.op("Gemm", [x, b.random("fc2.weight", (4, 10)), b.random("fc2.bias", (1, 4))], "fc2",
                        transB=1, alpha=1.5, beta=0.5))  # fmt: skip
