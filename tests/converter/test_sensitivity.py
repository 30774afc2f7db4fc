"""Per-node sensitivity: hybrids cut from one QDQ model (only the chosen nodes read int8) compute exactly what the
float and the quantized models compute at the extremes, a node's group holds the activations that read its
quantized output, and the ranking measures each group alone."""

from __future__ import annotations

import numpy as np
from onnx import helper
from onnxruntime.quantization import QuantType

from converter.data import Dataset
from converter.passes.quantize import QuantizeSettings, quantize_int8
from converter.runner import make_session
from converter.sensitivity import isolate, quantized_groups, quantized_nodes, rank_nodes
from tests.support.graphs import images, model, value_info, weights


def two_convs_with_silu():
    """x -> Conv a (with bias) -> SiLU (Sigmoid, Mul) -> Conv b -> y: a Conv followed by the activation YOLO uses."""
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="a", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["a"], ["a_sig"], name="a_sigmoid"),
        helper.make_node("Mul", ["a", "a_sig"], ["a_silu"], name="a_mul"),
        helper.make_node("Conv", ["a_silu", "wb"], ["y"], name="b", pads=[1, 1, 1, 1]),
    ]
    return model(nodes, [value_info("x", ["batch", 3, 16, 16])], [value_info("y", ["batch", 4, 16, 16])],
                 [weights("wa", (8, 3, 3, 3)), weights("ba", (8,), seed=2), weights("wb", (4, 8, 3, 3), seed=1)])


def quantized():
    float_model = two_convs_with_silu()
    data = Dataset({"x": images(8, 3, 16, 16)}, None, "test")
    settings = QuantizeSettings(QuantType.QUInt8, QuantType.QInt8, True, False, ["Conv"])
    return float_model, quantize_int8(float_model, settings, data), data.inputs["x"]


def outputs(built, x: np.ndarray) -> np.ndarray:
    return make_session(built).run(None, {"x": x})[0]


def test_isolating_everything_or_nothing_gives_the_quantized_or_the_float_model():
    float_model, qdq, x = quantized()
    everything = isolate(float_model, qdq, set(quantized_nodes(float_model, qdq)))
    assert np.array_equal(outputs(everything, x), outputs(qdq, x))
    nothing = isolate(float_model, qdq, set())
    reference = outputs(float_model, x)
    # only the bias stays int32 at the input scale x the weight scale: a rounding, not an int8 error
    assert np.abs(outputs(nothing, x) - reference).max() < 1e-4
    assert np.abs(outputs(qdq, x) - reference).max() > 1e-2  # int8 really changes something
    assert {node.op_type for node in nothing.graph.node} <= {"Conv", "Sigmoid", "Mul", "DequantizeLinear"}


def test_groups_are_the_nodes_the_quantizer_can_leave_out_with_their_activation_readers():
    float_model, qdq, _ = quantized()
    groups = quantized_groups(float_model, qdq, ["Conv"])
    assert set(groups) == {"a", "b"}  # a Sigmoid or Mul name in nodes_to_exclude would change nothing
    assert groups["b"] == {"b"}
    assert groups["a"] <= {"a", "a_sigmoid", "a_mul"}


def test_each_group_is_measured_alone_and_ranked_worst_first():
    float_model, qdq, x = quantized()
    seen = []

    def error(hybrid) -> float:
        reading = set(quantized_nodes(float_model, hybrid))
        seen.append(reading)
        return 2.0 if "b" in reading else 1.0

    ranking = rank_nodes(float_model, qdq, error, ["Conv"])
    assert [name for name, _ in ranking] == ["b", "a"]
    assert all(len(reading & {"a", "b"}) == 1 for reading in seen)
