"""Opsets below 13: upgraded with onnx's version converter for per-channel int8, or quantized per-tensor when the
upgraded graph does not compute the same thing; either way the report says which."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from converter.cli import main
from edge_runtime.bundle import read_bundle
from tests.support.graphs import conv_relu, images, model, save, value_info, weights


def convert(tmp_path: Path, onnx_path: Path, capsys) -> tuple[Path, dict, str]:
    np.savez(tmp_path / "cal.npz", x=images(32, 3, 12, 12))
    out = tmp_path / "m.bundle"
    code = main([str(onnx_path), "-o", str(out), "--target", "x86_64", "--calibration", str(tmp_path / "cal.npz"),
                 "--quantize", "int8", "--max-accuracy-drop", "0.5", "--no-latency"])
    text = capsys.readouterr()
    assert "Traceback" not in text.out + text.err
    assert code == 0, text.err
    return out, read_bundle(out).manifest.verification, text.out


def dequantize_axes(bundle: Path) -> tuple[int, set]:
    graph = onnx.load_from_string(read_bundle(bundle).model_bytes())
    opset = next(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx"))
    axes = {
        attribute.i for node in graph.graph.node if node.op_type == "DequantizeLinear" for attribute in node.attribute
        if attribute.name == "axis"
    }
    return opset, axes


def test_opset_11_upgraded_to_13_for_per_channel_weights(tmp_path, capsys):
    onnx_path = save(conv_relu(["batch", 3, 12, 12], opset=11), tmp_path / "old.onnx")
    out, report, text = convert(tmp_path, onnx_path, capsys)
    assert "opset 11 upgraded to 13" in " ".join(report["notes"]) and "opset 11 upgraded to 13" in text
    assert any("per-channel" in stage["stage"] for stage in report["stages"])
    opset, axes = dequantize_axes(out)
    assert opset == 13 and axes  # per-channel DequantizeLinear carries an axis
    ort.InferenceSession(read_bundle(out).model_bytes(), providers=["CPUExecutionProvider"])


def hardmax_model() -> onnx.ModelProto:
    """A conv net with a one-hot decision output: Hardmax(axis=1) at opset 11 flattens [N, 8, 6, 6] to [N, 288]
    first, but onnx's version converter keeps the node as it is, which at opset 13 means one-hot along axis 1
    alone: the upgraded graph computes something else."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["conv"], ["y"], name="relu"),
        helper.make_node("Hardmax", ["conv"], ["decision"], name="decide", axis=1),
    ]
    outputs = [value_info("y", ["batch", 8, 6, 6]), value_info("decision", ["batch", 8, 6, 6])]
    return model(nodes, [value_info("x", ["batch", 3, 12, 12])], outputs, [weights("w", (8, 3, 3, 3))], opset=11)


def test_per_tensor_when_the_upgrade_changes_the_results(tmp_path, capsys):
    onnx_path = save(hardmax_model(), tmp_path / "hardmax.onnx")
    out, report, text = convert(tmp_path, onnx_path, capsys)
    note = next(note for note in report["notes"] if note.startswith("opset 11"))
    assert "could not upgrade" in note and "output 1 differs" in note and "per-tensor" in note
    assert any("per-tensor" in stage["stage"] for stage in report["stages"])
    opset, axes = dequantize_axes(out)
    assert opset == 11 and not axes  # no per-channel axis at opset 11: the bundle loads
    ort.InferenceSession(read_bundle(out).model_bytes(), providers=["CPUExecutionProvider"])
