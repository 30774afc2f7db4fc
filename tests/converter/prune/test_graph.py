"""Channel-group analysis of small hand-built graphs: what is prunable, what is left alone and why; the
convolution geometry the statistics pass samples patches with; the MAC counts the report shows."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.errors import ConversionError
from converter.prune.flops import layer_macs, total_flops
from converter.prune.graph import Layout, Segment, analyse, normalize_constants
from converter.prune.pruner import ChannelPruner
from converter.prune.statistics import conv_geometry, conv_patches
from tests.converter.prune import graphs
from tests.converter.prune.graphs import Builder, group_of


def analysed(model):
    return analyse(normalize_constants(model))


# -- what is prunable ------------------------------------------------------------------------------------------------


def test_conv_bn_relu_conv_gap_gemm():
    graph = analysed(graphs.classifier())
    first = group_of(graph, "conv1")
    assert first.prunable and first.size == 8 and first.pinned == []
    assert [p.node for p in first.producers] == ["conv1"]
    bn = [param for param in graph.params if param.node == "bn"]
    assert sorted(param.name for param in bn) == ["bn.mean", "bn.scale", "bn.shift", "bn.var"]
    for param in bn:
        assert param.axis == 0
        assert graph.resolve(param.layout) == Layout(1, (Segment(first.id),))
    second = group_of(graph, "conv2")
    assert second.prunable and second.size == 6

    head = group_of(graph, "logits")
    assert not head.prunable
    assert head in graph.left_alone() and head not in graph.prunable()
    assert any("graph output" in reason for reason in head.pinned), head.pinned
    assert {group.id for group in graph.prunable()} == {first.id, second.id}

    consumers = {c.node: c for c in graph.consumers}
    assert set(consumers) == {"conv2", "logits"}
    assert (consumers["conv2"].op, consumers["conv2"].axis) == ("Conv", 1)
    assert graph.resolve(consumers["conv2"].layout) == Layout(1, (Segment(first.id),))
    assert (consumers["logits"].op, consumers["logits"].axis) == ("Gemm", 1)  # transB=1: weight (out, in)
    assert graph.resolve(consumers["logits"].layout) == Layout(1, (Segment(second.id),))


def test_residual_add_merges_both_convolutions_into_one_group():
    graph = analysed(graphs.residual())
    merged = group_of(graph, "conv_a")
    assert merged is group_of(graph, "conv_b")
    assert sorted(p.node for p in merged.producers) == ["conv_a", "conv_b"]
    assert merged.prunable and merged.size == 8
    assert len(graph.prunable()) == 1
    for consumer in graph.consumers:  # conv_b reads conv_a's channels, conv_c the sum
        assert graph.resolve(consumer.layout) == Layout(1, (Segment(merged.id),))
    assert sorted(c.node for c in graph.consumers_of(merged.id)) == ["conv_b", "conv_c"]


def test_concat_lays_the_groups_side_by_side():
    graph = analysed(graphs.concat())
    a, b = group_of(graph, "conv_a"), group_of(graph, "conv_b")
    assert a.prunable and b.prunable and a.id != b.id
    (consumer,) = [c for c in graph.consumers if c.node == "conv_c"]
    layout = graph.resolve(consumer.layout)
    assert layout == Layout(1, (Segment(a.id), Segment(b.id)))
    assert graph.layout_size(layout) == 12
    np.testing.assert_array_equal(graph.channel_positions(layout, b.id), np.arange(8, 12)[:, None])
    keep = {a.id: np.array([1, 6]), b.id: np.array([0, 3])}
    np.testing.assert_array_equal(graph.positions(layout, keep), [1, 6, 8, 11])
    np.testing.assert_array_equal(graph.positions(layout, {b.id: np.array([2])}), [*range(8), 10])


def test_depthwise_convolution_passes_channels_through():
    graph = analysed(graphs.depthwise())
    group = group_of(graph, "conv1")
    assert group.prunable and [p.node for p in group.producers] == ["conv1"]
    assert sorted(p.name for p in graph.params if p.node == "dw") == ["dw.bias", "dw.weight"]
    assert [(c.node, c.kind) for c in graph.counts] == [("dw", "group")]
    assert [c.node for c in graph.consumers_of(group.id)] == ["conv2"]


@pytest.mark.parametrize("shape", [(6,), (5, 6)], ids=["2d", "3d"])
def test_matmul_with_constant_matrix_and_bias_add(shape):
    graph = analysed(graphs.mlp(shape))
    group = group_of(graph, "mm1")
    assert group.prunable and group.size == 10
    assert group.producers[0].op == "MatMul" and group.producers[0].axis == 1
    (bias,) = [p for p in graph.params if p.node == "add"]
    assert (bias.name, bias.axis) == ("add.bias", 0)
    (consumer,) = graph.consumers_of(group.id)
    assert (consumer.node, consumer.op, consumer.axis) == ("mm2", "MatMul", 0)
    assert graph.resolve(consumer.layout) == Layout(len(shape), (Segment(group.id),))


@pytest.mark.parametrize("how", graphs.FLATTENINGS)
def test_flattened_channels_become_blocks_of_features(how):
    graph = analysed(graphs.flattened(how))
    group = group_of(graph, "conv")
    assert group.prunable
    (consumer,) = graph.consumers_of(group.id)
    assert consumer.node == "logits"
    assert graph.resolve(consumer.layout) == Layout(1, (Segment(group.id, block=4),))
    np.testing.assert_array_equal(graph.positions(graph.resolve(consumer.layout), {group.id: np.array([1, 4])}),
                                  [4, 5, 6, 7, 16, 17, 18, 19])  # fmt: skip


def test_per_channel_constants_of_pass_through_operators_are_recorded():
    graph = analysed(graphs.pointwise())
    group = group_of(graph, "conv1")
    assert group.prunable
    params = {p.name: p for p in graph.params}
    assert {name: p.axis for name, p in params.items()} == {
        "mul.scale": 1,  # [1, 8, 1, 1]
        "prelu.slope": 0,  # [8, 1, 1]
        "in.scale": 0,
        "in.bias": 0,
    }  # the Clip's scalar bounds are not per-channel
    assert all(graph.resolve(p.layout) == Layout(1, (Segment(group.id),)) for p in params.values())


def test_squeeze_of_the_pooled_axes_keeps_the_channels():
    graph = analysed(graphs.squeezed())
    group = group_of(graph, "conv")
    assert group.prunable
    assert [(c.node, c.op, c.axis) for c in graph.consumers_of(group.id)] == [("logits", "Gemm", 1)]


def test_gemm_with_weight_k_by_n_and_a_row_bias():
    graph = analysed(graphs.dense())
    group = group_of(graph, "fc1")
    assert group.prunable and group.size == 10
    (producer,) = group.producers
    assert (producer.op, producer.weight, producer.axis, producer.bias, producer.bias_axis) == (
        "Gemm", "fc1.weight", 1, "fc1.bias", 1,
    )  # fmt: skip
    (consumer,) = graph.consumers_of(group.id)
    assert (consumer.node, consumer.axis) == ("fc2", 1)


def test_a_1d_cnn_has_a_group_per_hidden_convolution():
    graph = analysed(graphs.conv1d())
    assert {g.name for g in graph.prunable()} == {"conv1", "conv2"}
    assert {c.node: c.axis for c in graph.consumers} == {"conv2": 1, "conv3": 1}


def test_constant_nodes_become_initializers():
    b = Builder()
    weight = (b.rng.normal(size=(8, 3, 3, 3)) * 0.5).astype(np.float32)
    b.nodes.append(helper.make_node("Constant", [], ["w_const"], name="w_const", value=numpy_helper.from_array(weight)))
    b.op("Identity", ["w_const"], "w_identity")
    x = b.op("Relu", [b.op("Conv", [b.input, "w_identity"], "conv1", pads=[1, 1, 1, 1])], "relu")
    model = b.model(b.conv(x, "conv2", 8, 4))
    normalized = normalize_constants(model)
    assert [n.op_type for n in normalized.graph.node] == ["Conv", "Relu", "Conv"]
    np.testing.assert_array_equal(graphs.weights(normalized)["w_identity"], weight)
    assert group_of(analyse(normalized), "conv1").prunable
    feed = graphs.sample_inputs(model)
    np.testing.assert_array_equal(graphs.run(normalized, feed)[0], graphs.run(model, feed)[0])
    assert len(model.graph.node) == 5  # the input model is not changed


# -- what is left alone, and why -------------------------------------------------------------------------------------


def transpose_model():
    b = Builder()
    x = b.op("Relu", [b.conv(b.input, "conv1", 3, 8)], "relu")
    return b.model(b.op("Transpose", [x], "transpose", perm=[0, 2, 3, 1]))


def grouped_model():
    b = Builder()
    x = b.conv(b.input, "conv1", 3, 8)
    x = b.op("Relu", [b.conv(x, "grouped", 8, 8, group=2)], "relu")
    return b.model(b.conv(x, "conv3", 8, 4))


def output_model():
    b = Builder()
    features = b.conv(b.input, "conv1", 3, 8)
    return b.model(b.conv(b.op("Relu", [features], "relu"), "conv2", 8, 4), features)


def input_add_model():
    b = Builder()
    skip = b.add_input("skip", (8, 8, 8))
    x = b.op("Add", [b.conv(b.input, "conv1", 3, 8), skip], "add")
    return b.model(b.conv(b.op("Relu", [x], "relu"), "conv2", 8, 4))


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (transpose_model, "Transpose 'transpose'"),
        (grouped_model, "grouped convolution, group=2"),
        (output_model, "graph output 'conv1'"),
        (input_add_model, "Add 'add'"),
    ],
    ids=["transpose", "grouped-conv", "graph-output", "add-graph-input"],
)
def test_pinned_groups_name_the_reason(build, reason):
    graph = analysed(build())
    group = group_of(graph, "conv1")
    assert not group.prunable
    assert group in graph.left_alone()
    assert any(reason in pin for pin in group.pinned), group.pinned


def if_model():
    """conv1 -> Relu, read by conv2 and, through the outer scope, by both branches of an If."""
    b = Builder()
    x = b.op("Relu", [b.conv(b.input, "conv1", 3, 8)], "relu")
    y = b.conv(x, "conv2", 8, 4)
    b.inputs.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))

    def branch(name: str) -> onnx.GraphProto:
        node = helper.make_node("ReduceSum", [x], [f"{name}_out"], name=name, keepdims=0)
        output = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)
        return helper.make_graph([node], name, [], [output])

    b.nodes.append(helper.make_node("If", ["cond"], ["total"], name="if", then_branch=branch("then"),
                                    else_branch=branch("else")))  # fmt: skip
    return b.model(y, "total")


def test_channels_read_inside_a_subgraph_pin_the_group():
    group = group_of(analysed(if_model()), "conv1")
    assert not group.prunable, "conv1's channels are summed inside the If's branches"
    assert any("read inside a subgraph of If 'if'" in reason for reason in group.pinned)


def test_add_of_a_graph_input_says_why():
    group = group_of(analysed(input_add_model()), "conv1")
    assert any("cannot be removed" in pin for pin in group.pinned), group.pinned


def test_grouped_convolution_is_not_a_producer_but_its_consumer_is():
    graph = analysed(grouped_model())
    assert all(p.node != "grouped" for group in graph.groups.values() for p in group.producers)
    assert not group_of(graph, "conv3").prunable  # the graph output


@pytest.mark.parametrize("build", [transpose_model, output_model], ids=["transpose", "graph-output"])
def test_nothing_prunable_is_one_conversion_error(build):
    with pytest.raises(ConversionError) as raised:
        ChannelPruner(build())
    message = str(raised.value)
    assert message.startswith("nothing to prune")
    assert "conv1 (8 channels)" in message


def test_a_single_channel_is_not_prunable():
    b = Builder()
    x = b.op("Relu", [b.conv(b.input, "conv1", 3, 1)], "relu")
    group = group_of(analysed(b.model(b.conv(x, "conv2", 1, 4))), "conv1")
    assert group.pinned == [] and not group.prunable


# -- convolution geometry ----------------------------------------------------------------------------------------------


def conv_case(spatial: tuple[int, ...], kernel: tuple[int, ...], **attrs):
    """A single Conv (3 -> 4 channels) of an input [batch, 3, *spatial], with its weight, bias and node."""
    b = Builder(shape=(3, *spatial))
    attrs.setdefault("pads", None)
    name = b.conv(b.input, "conv", 3, 4, kernel=kernel, **attrs)
    model = b.model(name)
    return model, graphs.node(model, "conv"), graphs.weights(model)


GEOMETRIES = {
    "stride2-pad1": ((8, 8), (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [1, 1]}),
    "stride2-pad1-7x9": ((7, 9), (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "same-upper": ((8, 8), (3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "same-upper-8x9": ((8, 9), (3, 4), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "same-lower-8x9": ((8, 9), (3, 4), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    "valid-dilated": ((8, 8), (3, 3), {"auto_pad": "VALID", "dilations": [2, 1]}),
    "asymmetric-pads": ((8, 8), (3, 3), {"pads": [0, 1, 2, 0]}),
    "1d-stride2-pad1": ((16,), (3,), {"strides": [2], "pads": [1, 1]}),
    "1d-same-upper": ((15,), (4,), {"strides": [2], "auto_pad": "SAME_UPPER"}),
    "1d-dilated": ((16,), (3,), {"dilations": [3], "pads": [2, 1]}),
}


@pytest.mark.parametrize("case", list(GEOMETRIES), ids=list(GEOMETRIES))
def test_conv_patches_times_weights_is_the_convolution(case):
    spatial, kernel, attrs = GEOMETRIES[case]
    model, node, arrays = conv_case(spatial, kernel, **attrs)
    x = np.random.default_rng(2).normal(size=(3, 3, *spatial)).astype(np.float32)
    (expected,) = graphs.run(model, {"x": x})
    weight, bias = arrays["conv.weight"], arrays["conv.bias"]
    geometry = conv_geometry(node, weight.shape, spatial)
    out_h, out_w = geometry.out
    assert (out_h, out_w) == ((1, *expected.shape[2:]) if len(spatial) == 1 else expected.shape[2:])
    assert geometry.taps == int(np.prod(kernel))
    patches = conv_patches(x, geometry, per_sample=10**6, rng=np.random.default_rng(0))
    assert patches.shape == (3 * out_h * out_w, 3 * geometry.taps)
    computed = patches @ weight.reshape(4, -1).T + bias
    rows = np.moveaxis(expected, 1, -1).reshape(-1, 4)  # row = sample * out_h * out_w + oh * out_w + ow
    np.testing.assert_allclose(computed, rows, rtol=1e-4, atol=1e-4)


def test_conv_patches_sample_distinct_positions_of_each_sample():
    model, node, arrays = conv_case((8, 8), (3, 3), pads=[1, 1, 1, 1])
    x = np.random.default_rng(2).normal(size=(2, 3, 8, 8)).astype(np.float32)
    geometry = conv_geometry(node, arrays["conv.weight"].shape, (8, 8))
    sampled = conv_patches(x, geometry, per_sample=10, rng=np.random.default_rng(0))
    every = conv_patches(x, geometry, per_sample=64, rng=np.random.default_rng(0))
    assert sampled.shape == (20, 27)
    for sample in range(2):
        rows = sampled[sample * 10 : (sample + 1) * 10]
        own = every[sample * 64 : (sample + 1) * 64]
        matches = [int(np.flatnonzero((own == row).all(axis=1))[0]) for row in rows]
        assert len(set(matches)) == 10


# -- MACs ------------------------------------------------------------------------------------------------------------


def test_layer_macs_of_known_layers():
    b = Builder()
    x = b.conv(b.input, "conv", 3, 8, strides=[2, 2])  # 8x8 -> 4x4
    x = b.conv(x, "dw", 8, 8, group=8)
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x], "gap")], "flatten")
    x = b.gemm(x, "gemm", 8, 6)
    model = b.model(b.matmul(x, "mm", 6, 2))
    macs = layer_macs(model)
    assert macs == {
        "conv": 4 * 4 * 8 * 3 * 3 * 3,  # out_h * out_w * C_out * C_in * k * k
        "dw": 4 * 4 * 8 * 1 * 3 * 3,
        "gemm": 8 * 6,
        "mm": 6 * 2,
    }
    assert total_flops(model) == 2 * sum(macs.values())


def test_layer_macs_of_a_1d_convolution():
    b = Builder(shape=(3, 16))
    model = b.model(b.conv(b.input, "conv", 3, 5, kernel=(4,), pads=None, strides=[2]))
    assert layer_macs(model) == {"conv": 7 * 5 * 3 * 4}
