"""A library failing inside a pass is one line naming the pass and, where the library says, the node; with
--quantize auto a failed quantize keeps the float model and the report says why. Every failure here is real: the
graphs make onnxruntime or its quantizer fail, nothing is mocked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper, numpy_helper

import converter.passes.quantize as quantize_pass
from converter.cli import main
from converter.opset_upgrade import OpsetDecision
from converter.pass_errors import failed_node
from edge_runtime.bundle import read_bundle
from tests.support.graphs import conv_relu, images, model, save, value_info, weights


def run(capsys, *args) -> tuple[int, str]:
    code = main([str(arg) for arg in args] + ["--target", "x86_64", "--no-latency"])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    return code, text


def masked_nan_model(tmp_path: Path) -> tuple[Path, Path]:
    """y = x @ W1 + where(isnan(m), 0, m) with m = sqrt(x) @ W2: every sample has a negative feature, so m is NaN
    throughout and masked out. onnxruntime runs it and its outputs are finite, but the calibrator finds no finite
    range for m and the quantizer gives up."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["main"], name="main"),
        helper.make_node("Sqrt", ["x"], ["root"], name="root"),
        helper.make_node("MatMul", ["root", "w2"], ["side"], name="side"),
        helper.make_node("IsNaN", ["side"], ["invalid"], name="invalid"),
        helper.make_node("Where", ["invalid", "zero", "side"], ["masked"], name="mask"),
        helper.make_node("Add", ["main", "masked"], ["y"], name="sum"),
    ]
    zero = numpy_helper.from_array(np.array(0, np.float32), "zero")
    initializers = [weights("w1", (8, 4)), weights("w2", (8, 4), seed=1), zero]
    built = model(nodes, [value_info("x", ["batch", 8])], [value_info("y", ["batch", 4])], initializers)
    x = np.random.default_rng(0).normal(1, 1, size=(32, 8)).astype(np.float32)
    x[:, 0] = -1.0
    np.savez(tmp_path / "cal.npz", x=x)
    return save(built, tmp_path / "nan.onnx"), tmp_path / "cal.npz"


def test_a_quantizer_failure_is_one_line_naming_the_pass(tmp_path, capsys):
    onnx_path, data = masked_nan_model(tmp_path)
    out = tmp_path / "m.bundle"
    code, text = run(capsys, onnx_path, "-o", out, "--calibration", data, "--quantize", "int8")
    assert code == 2
    assert text.startswith("edge-convert: error: pass 'quantize' failed")
    assert "scale issue" in text or "not finite" in text
    assert len(text.strip().splitlines()) == 1 and not out.exists()


def test_auto_keeps_the_float_model_when_quantize_fails(tmp_path, capsys):
    onnx_path, data = masked_nan_model(tmp_path)
    out = tmp_path / "m.bundle"
    code, text = run(capsys, onnx_path, "-o", out, "--calibration", data)
    assert code == 0, text
    manifest = read_bundle(out).manifest
    assert manifest.model.precision == "fp32"
    report = manifest.verification
    assert report["final_stage"] == "fused"
    assert report["passes"]["quantize"] == "failed, kept the fused float model"
    notes = report["notes"]
    assert any(note.startswith("pass 'quantize' failed") and "float model is bundled" in note for note in notes)


def test_a_runtime_failure_names_the_node(tmp_path, capsys):
    """Shape inference cannot see that 8 values do not make rows of 3; onnxruntime finds out when it runs."""
    shape = numpy_helper.from_array(np.array([-1, 3], np.int64), "rows_of_three")
    nodes = [helper.make_node("Reshape", ["x", "rows_of_three"], ["y"], name="bad_reshape")]
    built = model(nodes, [value_info("x", ["batch", 8])], [value_info("y", [None, 3])], [shape])
    np.savez(tmp_path / "cal.npz", x=np.ones((4, 8), np.float32))
    code, text = run(capsys, save(built, tmp_path / "m.onnx"), "-o", tmp_path / "m.bundle",
                     "--calibration", tmp_path / "cal.npz")
    assert code == 2
    assert text.startswith("edge-convert: error: pass 'check' failed at node 'bad_reshape': ")
    assert len(text.strip().splitlines()) == 1


def test_an_onnxruntime_load_failure_names_the_node(tmp_path, capsys, monkeypatch):
    """With the opset upgrade switched off, per-channel QDQ at opset 11 is what made onnxruntime fail to load the
    quantized model (`DequantizeLinear` has no `axis` before opset 13): the error names the node, not a traceback."""
    monkeypatch.setattr(quantize_pass, "prepare_for_qdq", lambda model, per_channel, feed: OpsetDecision(model, True))
    onnx_path = save(conv_relu(["batch", 3, 12, 12], opset=11), tmp_path / "old.onnx")
    np.savez(tmp_path / "cal.npz", x=images(16, 3, 12, 12))
    code, text = run(capsys, onnx_path, "-o", tmp_path / "m.bundle", "--calibration", tmp_path / "cal.npz",
                     "--quantize", "int8")
    assert code == 2
    assert text.startswith("edge-convert: error: pass 'quantize' failed at node '")
    assert "Unrecognized attribute: axis" in text and len(text.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("Non-zero status code while running Reshape node. Name:'bad_reshape' Status: x", "bad_reshape"),
        ("Load model failed:Node (w_DQ) Op (DequantizeLinear) [ShapeInferenceError] axis", "w_DQ"),
        ("[ShapeInferenceError] (op_type:Conv, node name: conv1): Inferred shape and existing shape differ", "conv1"),
        ('This is an invalid model. In Node, ("w_DQ", DequantizeLinear, "", -1) : ...', "w_DQ"),
        ("scale issue", None),
    ],
)
def test_the_node_is_read_from_the_libraries_words(text, node):
    assert failed_node(text) == node
