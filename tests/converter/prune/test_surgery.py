"""Writing the smaller graph: which weights lose which slices, that the result is valid ONNX with the original
interface and runs, that removing dead channels changes nothing, and that the refit folds a redundant channel
back into the layer that read it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from converter.data import Dataset
from converter.prune.flops import layer_macs
from converter.prune.graph import analyse, normalize_constants
from converter.prune.pruner import ChannelPruner
from converter.prune.refit import refit
from converter.prune.surgery import prune_model
from tests.converter.prune import graphs
from tests.converter.prune.graphs import Builder, group_of


def prune(model: onnx.ModelProto, kept: dict[str, list[int]]):
    """Prune the groups of the named producers to the given channels (no refit); the original weights, the
    pruned model's weights and the pruned model."""
    normalized = normalize_constants(model)
    graph = analyse(normalized)
    keep = {group_of(graph, producer).id: np.array(channels) for producer, channels in kept.items()}
    pruned = prune_model(normalized, graph, keep)
    assert_valid_with_same_interface(model, pruned)
    return graphs.weights(normalized), graphs.weights(pruned), pruned


def assert_valid_with_same_interface(original: onnx.ModelProto, pruned: onnx.ModelProto) -> None:
    onnx.checker.check_model(pruned, full_check=True)
    assert graphs.interface(pruned) == graphs.interface(original)


def assert_runs_like(original: onnx.ModelProto, pruned: onnx.ModelProto) -> list[np.ndarray]:
    """The pruned model runs and gives outputs of the original's shapes (batch 4); its outputs."""
    feed = graphs.sample_inputs(original)
    before, after = graphs.run(original, feed), graphs.run(pruned, feed)
    assert [a.shape for a in after] == [b.shape for b in before]
    assert all(np.isfinite(a).all() for a in after)
    return after


def relative_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Largest deviation relative to the output's scale."""
    return float(np.max(np.abs(candidate - reference)) / np.max(np.abs(reference)))


# -- which slices go -------------------------------------------------------------------------------------------------


def test_residual_group_loses_the_same_channels_on_both_sides():
    model = graphs.residual()
    kept = [0, 2, 5, 7]
    before, after, pruned = prune(model, {"conv_a": kept})
    np.testing.assert_array_equal(after["conv_a.weight"], before["conv_a.weight"][kept])
    np.testing.assert_array_equal(after["conv_a.bias"], before["conv_a.bias"][kept])
    np.testing.assert_array_equal(after["conv_b.weight"], before["conv_b.weight"][kept][:, kept])
    np.testing.assert_array_equal(after["conv_b.bias"], before["conv_b.bias"][kept])
    np.testing.assert_array_equal(after["conv_c.weight"], before["conv_c.weight"][:, kept])
    np.testing.assert_array_equal(after["conv_c.bias"], before["conv_c.bias"])
    assert_runs_like(model, pruned)


def test_concat_consumer_keeps_its_inputs_at_the_right_offsets():
    model = graphs.concat()
    before, after, pruned = prune(model, {"conv_a": [1, 3, 4, 6], "conv_b": [0, 3]})
    np.testing.assert_array_equal(after["conv_a.weight"], before["conv_a.weight"][[1, 3, 4, 6]])
    np.testing.assert_array_equal(after["conv_b.weight"], before["conv_b.weight"][[0, 3]])
    np.testing.assert_array_equal(after["conv_c.weight"], before["conv_c.weight"][:, [1, 3, 4, 6, 8, 11]])
    assert_runs_like(model, pruned)


def test_concat_with_only_the_second_group_pruned():
    model = graphs.concat()
    before, after, pruned = prune(model, {"conv_b": [2]})
    np.testing.assert_array_equal(after["conv_a.weight"], before["conv_a.weight"])
    np.testing.assert_array_equal(after["conv_c.weight"], before["conv_c.weight"][:, [*range(8), 10]])
    assert_runs_like(model, pruned)


def test_depthwise_group_attribute_follows_the_channels():
    model = graphs.depthwise()
    kept = [0, 1, 4, 6, 7]
    before, after, pruned = prune(model, {"conv1": kept})
    assert graphs.attribute(pruned, "dw", "group") == len(kept)
    np.testing.assert_array_equal(after["dw.weight"], before["dw.weight"][kept])
    np.testing.assert_array_equal(after["dw.bias"], before["dw.bias"][kept])
    np.testing.assert_array_equal(after["conv2.weight"], before["conv2.weight"][:, kept])
    assert_runs_like(model, pruned)


@pytest.mark.parametrize("shape", [(6,), (5, 6)], ids=["2d", "3d"])
def test_matmul_columns_bias_and_next_rows_go_together(shape):
    model = graphs.mlp(shape)
    kept = [0, 3, 4, 8]
    before, after, pruned = prune(model, {"mm1": kept})
    np.testing.assert_array_equal(after["mm1.weight"], before["mm1.weight"][:, kept])
    np.testing.assert_array_equal(after["add.bias"], before["add.bias"][kept])
    np.testing.assert_array_equal(after["mm2.weight"], before["mm2.weight"][kept])
    assert_runs_like(model, pruned)


def test_per_channel_constants_of_pass_through_operators_follow_the_channels():
    model = graphs.pointwise()
    kept = [0, 3, 5]
    before, after, pruned = prune(model, {"conv1": kept})
    np.testing.assert_array_equal(after["mul.scale"], before["mul.scale"][:, kept])
    for name in ("prelu.slope", "in.scale", "in.bias", "conv1.bias"):
        np.testing.assert_array_equal(after[name], before[name][kept])
    for name in ("clip.min", "clip.max"):
        np.testing.assert_array_equal(after[name], before[name])
    np.testing.assert_array_equal(after["conv2.weight"], before["conv2.weight"][:, kept])
    assert_runs_like(model, pruned)


def test_gemm_producer_with_a_row_bias_loses_columns():
    model = graphs.dense()
    kept = [0, 2, 3, 9]
    before, after, pruned = prune(model, {"fc1": kept})
    np.testing.assert_array_equal(after["fc1.weight"], before["fc1.weight"][:, kept])  # (K, N): columns
    np.testing.assert_array_equal(after["fc1.bias"], before["fc1.bias"][:, kept])  # (1, N)
    np.testing.assert_array_equal(after["fc2.weight"], before["fc2.weight"][:, kept])  # transB: (N2, N)
    np.testing.assert_array_equal(after["fc2.bias"], before["fc2.bias"])
    assert_runs_like(model, pruned)


def test_batchnorm_parameters_follow_the_convolution():
    model = graphs.classifier()
    before, after, pruned = prune(model, {"conv1": [1, 2, 5], "conv2": [0, 2, 3, 5]})
    for name in ("bn.scale", "bn.shift", "bn.mean", "bn.var", "conv1.bias"):
        np.testing.assert_array_equal(after[name], before[name][[1, 2, 5]])
    np.testing.assert_array_equal(after["conv2.weight"], before["conv2.weight"][[0, 2, 3, 5]][:, [1, 2, 5]])
    np.testing.assert_array_equal(after["logits.weight"], before["logits.weight"][:, [0, 2, 3, 5]])
    np.testing.assert_array_equal(after["logits.bias"], before["logits.bias"])
    assert_runs_like(model, pruned)


FLATTENED = [pytest.param(how, trans_b, id=f"{how}-transB{int(trans_b)}")
             for how in graphs.FLATTENINGS for trans_b in (True, False)]  # fmt: skip


@pytest.mark.parametrize(("how", "trans_b"), FLATTENED)
def test_flattened_channel_k_removes_gemm_features_4k_to_4k_plus_3(how, trans_b):
    model = graphs.flattened(how, trans_b=trans_b)
    kept = [1, 4, 5]
    columns = [4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]
    before, after, pruned = prune(model, {"conv": kept})
    weight = before["logits.weight"]
    expected = weight[:, columns] if trans_b else weight[columns]
    assert after["logits.weight"].shape == ((5, 12) if trans_b else (12, 5))
    np.testing.assert_array_equal(after["logits.weight"], expected)
    np.testing.assert_array_equal(after["conv.weight"], before["conv.weight"][kept])
    assert_runs_like(model, pruned)
    if how in graphs.LITERAL_COUNTS:
        np.testing.assert_array_equal(after["shape"], [-1 if how == "reshape_-1_24" else 0, 12])


def test_the_input_model_is_not_changed():
    model = normalize_constants(graphs.residual())
    serialized = model.SerializeToString()
    graph = analyse(model)
    prune_model(model, graph, {group_of(graph, "conv_a").id: np.array([0, 1])})
    assert model.SerializeToString() == serialized


# -- every pruned model is valid ONNX with the original interface ---------------------------------------------------

BUILDS = {
    "classifier": graphs.classifier,
    "residual": graphs.residual,
    "concat": graphs.concat,
    "depthwise": graphs.depthwise,
    "mlp-2d": graphs.mlp,
    "mlp-3d": lambda: graphs.mlp((5, 6)),
    **{f"flattened-{how}": (lambda how=how: graphs.flattened(how)) for how in graphs.FLATTENINGS},
    "pointwise": graphs.pointwise,
    "squeezed": graphs.squeezed,
    "conv1d": graphs.conv1d,
    "dense": graphs.dense,
}


@pytest.mark.parametrize("refitted", [False, True], ids=["removed", "refitted"])
@pytest.mark.parametrize("name", list(BUILDS), ids=list(BUILDS))
def test_every_group_pruned_by_half_is_valid_and_runs(name, refitted):
    model = BUILDS[name]()
    pruner = ChannelPruner(model, channel_multiple=1)
    rng = np.random.default_rng(3)
    keep = {group.id: np.sort(rng.choice(group.size, group.size // 2, replace=False)) for group in pruner.groups}
    moments = pruner.moments(Dataset(graphs.sample_inputs(model, batch=16), None, "calibration")) if refitted else None
    pruned = pruner.build(keep, moments)
    assert_valid_with_same_interface(model, pruned)
    assert_runs_like(model, pruned)
    arrays = graphs.weights(pruned)
    for group in pruner.groups:
        for producer in group.producers:
            assert arrays[producer.weight].shape[producer.axis] == group.size // 2


# -- exactness -------------------------------------------------------------------------------------------------------

DEAD = [2, 5]


def dead_channel_model() -> onnx.ModelProto:
    """conv1 (8 channels, channels 2 and 5 all-zero weights and bias) -> Relu -> conv2."""
    b = Builder()
    x = b.op("Relu", [b.conv(b.input, "conv1", 3, 8)], "relu")
    model = b.model(b.conv(x, "conv2", 8, 4))
    for init in model.graph.initializer:
        if init.name in ("conv1.weight", "conv1.bias"):
            value = onnx.numpy_helper.to_array(init).copy()
            value[DEAD] = 0
            init.CopyFrom(onnx.numpy_helper.from_array(value, init.name))
    return model


def test_removing_dead_channels_changes_nothing():
    model = dead_channel_model()
    kept = [c for c in range(8) if c not in DEAD]
    _, after, pruned = prune(model, {"conv1": kept})
    assert after["conv1.weight"].shape[0] == 6 and after["conv2.weight"].shape[1] == 6
    feed = graphs.sample_inputs(model, batch=8)
    np.testing.assert_allclose(graphs.run(pruned, feed)[0], graphs.run(model, feed)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scoring", ["activation", "magnitude"])
def test_both_scores_choose_the_dead_channels(scoring):
    model = dead_channel_model()
    pruner = ChannelPruner(model, scoring=scoring)
    data = Dataset(graphs.sample_inputs(model, batch=16), None, "test")
    moments = pruner.moments(data) if scoring == "activation" else {}
    (group,) = pruner.groups
    keep = pruner.keep({group.id: 0.25}, pruner.scores(moments))
    np.testing.assert_array_equal(keep[group.id], [0, 1, 3, 4, 6, 7])
    feed = graphs.sample_inputs(model, batch=8, seed=5)
    (reference,) = graphs.run(model, feed)
    np.testing.assert_allclose(graphs.run(pruner.build(keep, None), feed)[0], reference, rtol=1e-5, atol=1e-5)
    if moments:  # the refit's ridge shrinks the weights a little even when nothing was lost
        assert relative_error(reference, graphs.run(pruner.build(keep, moments), feed)[0]) < 1e-2


def redundant_channel_model() -> onnx.ModelProto:
    """conv1 (1x1, 12 -> 8) whose channel 3 is 0.75 x channel 0 - 1.25 x channel 1 (weights and bias, so the
    relation holds at every position, zero padding included) -> Identity -> conv2 (3x3)."""
    b = Builder(shape=(12, 8, 8))
    weight = b.rng.normal(size=(8, 12, 1, 1)).astype(np.float32)
    bias = b.rng.normal(size=8).astype(np.float32)
    weight[3] = 0.75 * weight[0] - 1.25 * weight[1]
    bias[3] = 0.75 * bias[0] - 1.25 * bias[1]
    b.constant("conv1.weight", weight)
    b.constant("conv1.bias", bias)
    x = b.op("Conv", [b.input, "conv1.weight", "conv1.bias"], "conv1", kernel_shape=[1, 1])
    return b.model(b.conv(b.op("Identity", [x], "identity"), "conv2", 8, 4))


def test_refit_folds_a_linearly_dependent_channel_into_the_others():
    model = redundant_channel_model()
    pruner = ChannelPruner(model)
    (group,) = pruner.groups
    data = Dataset(graphs.sample_inputs(model, batch=64), None, "calibration")
    moments = pruner.moments(data)
    feed = graphs.sample_inputs(model, batch=8, seed=7)  # not the calibration data
    (reference,) = graphs.run(model, feed)

    keep = {group.id: np.array([0, 1, 2, 4, 5, 6, 7])}
    refitted, removed = pruner.build(keep, moments), pruner.build(keep, None)
    assert_valid_with_same_interface(model, refitted)
    assert graphs.weights(refitted)["conv2.weight"].shape == (4, 7, 3, 3)
    # Not exact: the ridge (1e-3 of the mean second moment, toward the trained weights) costs under 1% here.
    assert relative_error(reference, graphs.run(refitted, feed)[0]) < 1e-2
    assert relative_error(reference, graphs.run(removed, feed)[0]) > 0.05

    # Without the ridge, the least-squares solution is the exact one.
    consumer = pruner.graph.consumers[0]
    positions = pruner.graph.positions(pruner.graph.resolve(consumer.layout), keep)
    exact = {"conv2": refit(moments["conv2"], pruner.maps["conv2"], positions, ridge=0.0)}
    (output,) = graphs.run(prune_model(pruner.model, pruner.graph, keep, exact), feed)
    np.testing.assert_allclose(output, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())

    # A channel that is not a combination of the others cannot be folded back.
    independent = {group.id: np.array([0, 1, 3, 4, 5, 6, 7])}
    assert relative_error(reference, graphs.run(pruner.build(independent, moments), feed)[0]) > 0.05


DENSE_CONSUMERS = {
    "gemm-transB-alpha-beta": {"transB": 1, "alpha": 1.5, "beta": 0.5},
    "gemm-row-bias": {"alpha": 0.5, "beta": 2.0},
    "gemm-no-bias": {"transB": 1, "beta": 3.0},
    "matmul": None,
}


def redundant_dense_model(consumer: str) -> onnx.ModelProto:
    """MatMul (6 -> 8) + bias, neuron 3 = 0.75 x neuron 0 - 1.25 x neuron 1 exactly -> Identity -> the consumer
    (8 -> 4): a Gemm in one of its forms, or a MatMul."""
    b = Builder(shape=(6,))
    weight = b.rng.normal(size=(6, 8)).astype(np.float32)
    bias = b.rng.normal(size=8).astype(np.float32)
    weight[:, 3] = 0.75 * weight[:, 0] - 1.25 * weight[:, 1]
    bias[3] = 0.75 * bias[0] - 1.25 * bias[1]
    x = b.op("MatMul", [b.input, b.constant("mm.weight", weight)], "mm")
    x = b.op("Identity", [b.op("Add", [x, b.constant("mm.bias", bias)], "add")], "identity")
    attrs = DENSE_CONSUMERS[consumer]
    if attrs is None:
        return b.model(b.matmul(x, "out", 8, 4))
    inputs = [x, b.random("out.weight", (4, 8) if attrs.get("transB") else (8, 4))]
    if consumer != "gemm-no-bias":
        inputs.append(b.random("out.bias", (1, 4) if consumer == "gemm-row-bias" else (4,)))
    return b.model(b.op("Gemm", inputs, "out", **attrs))


@pytest.mark.parametrize("consumer", list(DENSE_CONSUMERS))
def test_refit_of_dense_consumers_is_exact_without_ridge(consumer):
    model = redundant_dense_model(consumer)
    pruner = ChannelPruner(model, channel_multiple=1)
    (group,) = pruner.groups
    moments = pruner.moments(Dataset(graphs.sample_inputs(model, batch=64), None, "calibration"))
    feed = graphs.sample_inputs(model, batch=16, seed=7)
    (reference,) = graphs.run(model, feed)
    keep = {group.id: np.array([0, 1, 2, 4, 5, 6, 7])}
    positions = pruner.graph.positions(pruner.graph.resolve(pruner.graph.consumers[0].layout), keep)
    exact = {"out": refit(moments["out"], pruner.maps["out"], positions, ridge=0.0)}
    pruned = prune_model(pruner.model, pruner.graph, keep, exact)
    assert_valid_with_same_interface(model, pruned)
    (output,) = graphs.run(pruned, feed)
    np.testing.assert_allclose(output, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    assert relative_error(reference, graphs.run(pruner.build(keep, moments), feed)[0]) < 1e-2
    assert relative_error(reference, graphs.run(pruner.build(keep, None), feed)[0]) > 0.05
    if consumer == "gemm-no-bias":  # the refit's bias is added as a new input, and beta no longer scales it
        assert graphs.node(pruned, "out").input[2] == "out.refit_bias"
        assert graphs.attribute(pruned, "out", "beta") == 1.0


def test_refit_of_a_consumer_without_bias_adds_one_and_slices_it_as_a_producer():
    """conv2 has no bias: the refit gives it one; conv2's own channels are pruned too, so that bias is sliced."""
    b = Builder()
    x = b.op("Relu", [b.conv(b.input, "conv1", 3, 8)], "relu1")
    x = b.op("Relu", [b.conv(x, "conv2", 8, 6, bias=False)], "relu2")
    model = b.model(b.conv(x, "conv3", 6, 4))
    pruner = ChannelPruner(model, channel_multiple=1)
    moments = pruner.moments(Dataset(graphs.sample_inputs(model, batch=32), None, "calibration"))
    keep = {
        group_of(pruner.graph, "conv1").id: np.array([0, 2, 3, 6]),
        group_of(pruner.graph, "conv2").id: np.array([1, 4]),
    }
    pruned = pruner.build(keep, moments)
    assert_valid_with_same_interface(model, pruned)
    conv2 = graphs.node(pruned, "conv2")
    assert len(conv2.input) == 3 and conv2.input[2]
    arrays = graphs.weights(pruned)
    assert arrays[conv2.input[2]].shape == (2,)
    assert arrays["conv2.weight"].shape == (2, 4, 3, 3)
    assert_runs_like(model, pruned)


def test_depthwise_convolution_over_a_concat():
    b = Builder()
    a = b.op("Relu", [b.conv(b.input, "conv_a", 3, 8)], "relu_a")
    c = b.op("Relu", [b.conv(b.input, "conv_b", 3, 4)], "relu_b")
    x = b.conv(b.op("Concat", [a, c], "concat", axis=1), "dw", 12, 12, group=12)
    model = b.model(b.conv(b.op("Relu", [x], "relu"), "conv_c", 12, 4))
    before, after, pruned = prune(model, {"conv_a": [0, 5], "conv_b": [1, 2, 3]})
    assert graphs.attribute(pruned, "dw", "group") == 5
    np.testing.assert_array_equal(after["dw.weight"], before["dw.weight"][[0, 5, 9, 10, 11]])
    np.testing.assert_array_equal(after["conv_c.weight"], before["conv_c.weight"][:, [0, 5, 9, 10, 11]])
    assert_runs_like(model, pruned)


def test_refit_of_a_gemm_with_beta_zero_and_a_row_bias_that_is_also_pruned():
    b = Builder(shape=(6,))
    x = b.op("Relu", [b.gemm(b.input, "fc1", 6, 8)], "relu1")
    x = b.op("Gemm", [x, b.random("fc2.weight", (8, 10)), b.random("fc2.bias", (1, 10))], "fc2", beta=0.0)
    model = b.model(b.gemm(b.op("Relu", [x], "relu2"), "fc3", 10, 3))
    pruner = ChannelPruner(model, channel_multiple=1)
    keep = {group_of(pruner.graph, "fc1").id: np.arange(4), group_of(pruner.graph, "fc2").id: np.arange(5)}
    moments = pruner.moments(Dataset(graphs.sample_inputs(model, batch=32), None, "calibration"))
    pruned = pruner.build(keep, moments)
    assert_valid_with_same_interface(model, pruned)
    assert_runs_like(model, pruned)


# -- the pruner's bookkeeping ----------------------------------------------------------------------------------------


def test_estimated_macs_are_the_pruned_models_macs():
    model = graphs.classifier()
    pruner = ChannelPruner(model, channel_multiple=1)
    first, second = group_of(pruner.graph, "conv1"), group_of(pruner.graph, "conv2")
    keep = {first.id: np.array([0, 3, 4]), second.id: np.array([1, 5])}
    assert pruner.estimated_macs({}) == sum(layer_macs(pruner.model).values())
    pruned = pruner.build(keep, None)
    assert abs(pruner.estimated_macs(keep) - sum(layer_macs(pruned).values())) <= 1


def test_estimated_macs_scale_a_depthwise_convolution_with_its_channels():
    model = graphs.depthwise()
    pruner = ChannelPruner(model, channel_multiple=1)
    keep = {group_of(pruner.graph, "conv1").id: np.array([0, 1, 2, 3, 4])}
    pruned = pruner.build(keep, None)
    assert abs(pruner.estimated_macs(keep) - sum(layer_macs(pruned).values())) <= 1
    assert layer_macs(pruned)["dw"] == layer_macs(pruner.model)["dw"] * 5 // 8


def test_keep_rounds_to_the_channel_multiple():
    b = Builder()
    x = b.op("Relu", [b.conv(b.input, "conv1", 3, 32)], "relu")
    model = b.model(b.conv(x, "conv2", 32, 4))
    pruner = ChannelPruner(model)
    (group,) = pruner.groups
    scores = {group.id: np.arange(32.0)}
    assert len(pruner.keep({group.id: 0.3}, scores)[group.id]) == 24  # 32 - 9.6 = 22.4 -> 24
    assert pruner.keep({group.id: 0.0}, scores) == {}
    unrounded = ChannelPruner(model, channel_multiple=1).keep({group.id: 0.25}, scores)
    np.testing.assert_array_equal(unrounded[group.id], np.arange(8, 32))  # the 24 highest scores


# -- regressions found in review ------------------------------------------------------------------------------------


def test_unnamed_and_duplicate_node_names_are_made_unique():
    """Older exporters leave node names empty; the analysis, the refit and the report key nodes by name."""
    model = graphs.classifier()
    for node in model.graph.node:
        node.name = "" if node.op_type != "Relu" else "same"
    pruner = ChannelPruner(model, channel_multiple=1)
    names = [node.name for node in pruner.model.graph.node]
    assert all(names) and len(set(names)) == len(names)
    moments = pruner.moments(Dataset(graphs.sample_inputs(model, batch=32), None, "calibration"))
    keep = pruner.keep({group.id: 0.5 for group in pruner.groups}, pruner.scores(moments))
    pruned = pruner.build(keep, moments)
    assert_valid_with_same_interface(model, pruned)
    assert_runs_like(model, pruned)


def test_initializers_listed_as_graph_inputs_are_sliced_without_contradicting_them():
    """IR < 4 exporters (and torch's keep_initializers_as_inputs) list every weight as a graph input too."""
    model = graphs.classifier()
    model.graph.input.extend(
        onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        for init in model.graph.initializer
    )
    pruner = ChannelPruner(model, channel_multiple=1)
    assert [value.name for value in pruner.model.graph.input] == ["x"]
    pruned = pruner.build({group.id: np.arange(group.size // 2) for group in pruner.groups}, None)
    onnx.checker.check_model(pruned, full_check=True)
    assert_runs_like(graphs.classifier(), pruned)


def test_refit_of_a_wide_layer_from_few_samples_keeps_what_the_data_does_not_pin_down():
    """A Gemm after Flatten sees one row per sample: with fewer samples than features, the refit must not throw
    away the trained weights in the directions the calibration data does not cover."""
    b = Builder(shape=(3, 8, 8))
    x = b.op("Flatten", [b.op("Relu", [b.conv(b.input, "conv1", 3, 16)], "relu1")], "flatten")
    model = b.model(b.gemm(x, "fc", 16 * 64, 10))
    calibration = Dataset(graphs.sample_inputs(model, batch=16, seed=3), None, "calibration")
    fresh = graphs.sample_inputs(model, batch=500, seed=11)
    (reference,) = graphs.run(model, fresh)
    errors = {}
    for refit_layers in (True, False):
        pruner = ChannelPruner(model, channel_multiple=1, refit_layers=refit_layers)
        moments = pruner.moments(calibration)
        keep = pruner.keep({group.id: 0.25 for group in pruner.groups}, pruner.scores(moments))
        (output,) = graphs.run(pruner.build(keep, moments), fresh)
        errors[refit_layers] = float(np.mean(np.sum((output - reference) ** 2, 1) / np.sum(reference**2, 1)))
    assert errors[True] < errors[False] * 0.8, errors
