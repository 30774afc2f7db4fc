"""Dynamic dimensions as exporters write them (-1, 0, unnamed, symbolic) on any input and axis: fixed from the card,
else from the data's shapes, else one line naming the input, the axis and what to give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import helper, numpy_helper

from converter.cli import main
from edge_runtime.bundle import read_bundle
from tests.support.graphs import conv_relu, images, model, save, value_info, weights

HEIGHT, WIDTH = 16, 24


def image_card(path: Path) -> Path:
    card = {
        "name": "dims",
        "input": {"kind": "image", "height": HEIGHT, "width": WIDTH, "channels": 3, "layout": "nchw"},
        "output": {"kind": "raw"},
    }
    path.write_text(yaml.safe_dump(card))
    return path


def convert(capsys, *args) -> tuple[int, str]:
    code = main([str(arg) for arg in args] + ["--target", "x86_64", "--no-latency"])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    return code, text


def input_shape(bundle: Path, name: str) -> list:
    graph = onnx.load_from_string(read_bundle(bundle).model_bytes()).graph
    value = next(value for value in graph.input if value.name == name)
    return [dim.dim_value if dim.HasField("dim_value") else dim.dim_param for dim in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("batch", [-1, 0, None, "N"], ids=["minus-one", "zero", "unnamed", "symbolic"])
@pytest.mark.parametrize("spatial", [-1, None, "height"], ids=["minus-one", "unnamed", "symbolic"])
def test_dims_fixed_from_the_card_and_the_batch_kept_dynamic(tmp_path, capsys, batch, spatial):
    onnx_path = save(conv_relu([batch, 3, spatial, spatial]), tmp_path / "m.onnx")
    np.savez(tmp_path / "cal.npz", x=images(12, 3, HEIGHT, WIDTH))
    out = tmp_path / "m.bundle"
    code, text = convert(capsys, onnx_path, "-o", out, "--card", image_card(tmp_path / "card.yaml"),
                         "--calibration", tmp_path / "cal.npz", "--quantize", "none")
    assert code == 0, text
    assert input_shape(out, "x") == ["batch", 3, HEIGHT, WIDTH]
    dims = {fix["axis"]: fix for fix in read_bundle(out).manifest.verification["dimensions"]}
    assert dims[0]["value"] == "batch"
    assert (dims[2]["value"], dims[2]["source"]) == (HEIGHT, "card")
    assert (dims[3]["value"], dims[3]["source"]) == (WIDTH, "card")
    assert f"axis 2 (written {dims[2]['written']}) fixed to {HEIGHT} from the card" in text


def test_dims_fixed_from_the_calibration_data_without_a_card(tmp_path, capsys):
    onnx_path = save(conv_relu([-1, 3, -1, -1]), tmp_path / "m.onnx")
    np.savez(tmp_path / "cal.npz", x=images(12, 3, HEIGHT, WIDTH))
    out = tmp_path / "m.bundle"
    code, text = convert(capsys, onnx_path, "-o", out, "--calibration", tmp_path / "cal.npz")
    assert code == 0, text
    assert input_shape(out, "x") == ["batch", 3, HEIGHT, WIDTH]
    assert "fixed to 16 from the calibration data" in text and "fixed to 24 from the calibration data" in text
    report = read_bundle(out).manifest.verification
    assert report["passes"]["quantize"] == "ran (int8)"  # the old "-1 is a fixed batch" refusal is gone


def recurrent_state_model() -> onnx.ModelProto:
    """y = x @ W; state_out = state + y: the state is [layers, batch, hidden], its batch on axis 1."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name="project"),
        helper.make_node("Unsqueeze", ["y", "zero"], ["y1"], name="lift"),
        helper.make_node("Add", ["state", "y1"], ["state_out"], name="carry"),
    ]
    zero = numpy_helper.from_array(np.array([0], np.int64), "zero")
    inputs = [value_info("x", [None, None]), value_info("state", [2, None, 4])]
    outputs = [value_info("y", [None, 4]), value_info("state_out", [2, None, 4])]
    return model(nodes, inputs, outputs, [weights("w", (8, 4)), zero])


def test_a_state_batch_axis_found_from_the_data(tmp_path, capsys):
    onnx_path = save(recurrent_state_model(), tmp_path / "rnn.onnx")
    rng = np.random.default_rng(0)
    x, state = rng.normal(size=(12, 8)).astype(np.float32), rng.normal(size=(12, 2, 4)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=x, state=state)
    out = tmp_path / "rnn.bundle"
    code, text = convert(capsys, onnx_path, "-o", out, "--calibration", tmp_path / "cal.npz", "--quantize", "none")
    assert code == 0, text
    assert input_shape(out, "state") == [2, "batch", 4]
    assert input_shape(out, "x") == ["batch", 8]
    dims = read_bundle(out).manifest.verification["dimensions"]
    assert {"input": "state", "axis": 1, "written": "unnamed", "value": "batch", "source": "batch axis"} in dims
    assert {"input": "x", "axis": 1, "written": "unnamed", "value": 8, "source": "calibration data"} in dims


def test_a_dimension_nothing_gives_is_one_line_naming_input_and_axis(tmp_path, capsys):
    onnx_path = save(recurrent_state_model(), tmp_path / "rnn.onnx")
    np.savez(tmp_path / "cal.npz", x=np.ones((4, 8), np.float32))  # no array for 'state'
    code, text = convert(capsys, onnx_path, "-o", tmp_path / "o.bundle", "--calibration", tmp_path / "cal.npz")
    assert code == 2
    assert "input 'state' axis 1 is dynamic (unnamed)" in text and "--card" in text and "--calibration" in text
    assert len(text.strip().splitlines()) == 1


def test_data_of_the_wrong_rank_for_a_dynamic_input(tmp_path, capsys):
    onnx_path = save(conv_relu([-1, 3, -1, -1]), tmp_path / "m.onnx")
    np.savez(tmp_path / "cal.npz", x=np.ones((4, 3, HEIGHT), np.float32))
    code, text = convert(capsys, onnx_path, "-o", tmp_path / "o.bundle", "--calibration", tmp_path / "cal.npz")
    assert code == 2
    assert "input 'x' has shape [4, 3, 16] (3 dimensions)" in text and "[-1, 3, -1, -1] (4 dimensions)" in text


def test_the_card_shape_goes_to_the_streamed_input_when_a_state_input_comes_first():
    """A recurrent export may list its state before the streamed input: the card's (unnamed) input is the one
    input the card does not declare as state or constant, wherever it stands."""
    from converter.dims import resolve_dims
    from edge_runtime.card import ModelCard

    graph = helper.make_graph(
        [helper.make_node("Identity", ["h"], ["hN"]), helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("h", onnx.TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "F"])],
        [helper.make_tensor_value_info("hN", onnx.TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", "F"])])
    proto = helper.make_model(graph)
    card = ModelCard.model_validate({"name": "rnn", "input": {"kind": "features", "features": 6},
                                     "output": {"kind": "regression", "name": "y"}, "state": {"h": "hN"}})
    fixes = resolve_dims(proto, list(proto.graph.input), card)
    assert [(fix.input, fix.axis, fix.value) for fix in fixes if fix.value != "batch"] == [("x", 1, 6)]
    assert proto.graph.input[1].type.tensor_type.shape.dim[1].dim_value == 6
