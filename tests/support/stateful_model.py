"""A tiny recurrent ONNX model built with onnx.helper, whose outputs a test can compute by hand.

An accumulator with the input kinds a real recurrent audio model has (Silero VAD: audio, state, int64 sample
rate): `x` [batch, 4] float32 streamed, `k` an int64 scalar constant, `state` [1, ?] float32 whose dynamic axis
is its batch axis (axis 1, not 0). Each call adds `k * sum(x)` to the state: `y` [batch, 1] is the running total,
`stateN` [1, batch] feeds the next call. So after windows w1..wn of one stream, y = k * (sum(w1) + ... + sum(wn)),
and a reset (a gap in the stream) starts the total from zero again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

WINDOW = 4


def build_accumulator() -> onnx.ModelProto:
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["sums"], keepdims=1, name="sum"),  # [batch, 1]
        helper.make_node("Cast", ["k"], ["k_float"], to=TensorProto.FLOAT, name="k_float"),
        helper.make_node("Mul", ["sums", "k_float"], ["scaled"], name="scale"),
        helper.make_node("Transpose", ["state"], ["carried"], perm=[1, 0], name="carried"),  # [batch, 1]
        helper.make_node("Add", ["scaled", "carried"], ["y"], name="total"),
        helper.make_node("Transpose", ["y"], ["stateN"], perm=[1, 0], name="next_state"),
    ]
    graph = helper.make_graph(
        nodes,
        "accumulator",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WINDOW]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, None]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [1, "batch"])],
        initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def accumulator_card(k: int = 3, rate_hz: int = 8, threshold: float | None = None) -> dict:
    output: dict = {"kind": "regression", "name": "y"}
    if threshold is not None:
        output["threshold"] = threshold
    return {"name": "accumulator", "input": {"kind": "audio", "name": "x", "rate_hz": rate_hz, "window": WINDOW,
                                             "hop": WINDOW},
            "constants": {"k": k}, "state": {"state": "stateN"}, "output": output}


def expected_totals(samples: np.ndarray, k: int, resets_before: set[int] = frozenset()) -> list[float]:
    """The y of every window of `samples` (window = hop = WINDOW), the total started over before the windows whose
    index is in `resets_before`."""
    totals, total = [], 0.0
    for index in range(len(samples) // WINDOW):
        if index in resets_before:
            total = 0.0
        total += k * float(np.sum(samples[index * WINDOW:(index + 1) * WINDOW], dtype=np.float32))
        totals.append(total)
    return totals


def write_accumulator_bundle(path: Path, k: int = 3, rate_hz: int = 8, threshold: float | None = None) -> Path:
    """A bundle of the model as it is (no conversion: so the device feeds the constant `k` itself), with a golden
    input of several arrays (x, state, k) and its outputs."""
    import onnxruntime as ort

    from converter.model_info import onnx_tensor_infos
    from converter.package import BundleContents, write_model_bundle
    from edge_runtime.board import load_board
    from edge_runtime.card import ModelCard

    model = build_accumulator()
    golden = {"x": np.array([[0.5, 1.0, -0.25, 2.0]], np.float32), "state": np.array([[1.5]], np.float32),
              "k": np.array(k, np.int64)}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = dict(zip(["y", "stateN"], session.run(["y", "stateN"], golden), strict=True))
    contents = BundleContents(
        name="accumulator", version="1", model_bytes=model.SerializeToString(), model_format="onnx",
        precision="fp32", inputs=onnx_tensor_infos(model.graph.input), outputs=onnx_tensor_infos(model.graph.output),
        golden_inputs=golden, golden_outputs=outputs, verification={}, reference={})
    card = ModelCard.model_validate(accumulator_card(k, rate_hz, threshold))
    return write_model_bundle(path, contents, load_board("x86_64"), card, None) and path
