"""A bundle converted on this x86 machine gives the same predictions on (emulated) aarch64, within the bundle's
golden tolerance: an int8 ONNX bundle on onnxruntime and a TFLite bundle on LiteRT, each loaded by the device
install's own loader, which also reproduces the bundle's golden output there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converter.cli import main as convert
from edge_runtime.board import load_board
from edge_runtime.bundle import read_bundle
from edge_runtime.model_loader import load_bundle_model
from tests.support.arm64 import TIMING_NOTE, Guest, guest_root
from tests.support.tflite_mlp import build_tflite_digits_sample

pytestmark = [pytest.mark.arm64, pytest.mark.slow]
GUEST_SCRIPT = Path(__file__).resolve().parent / "guest_predict.py"
BOARD = "raspberry-pi-4"


def host_outputs(bundle: Path, x: np.ndarray) -> np.ndarray:
    model = load_bundle_model(bundle, name=None, backends=None, board=load_board("x86_64"), trusted_keys=None,
                              require_signature=False)
    try:
        return np.concatenate([model.run({model.input_name: x[i:i + 32]})[model.output_name]
                               for i in range(0, len(x), 32)])
    finally:
        model.close()


def compare_on_arm(bundle: Path, eval_path: Path, tmp_path: Path) -> dict:
    x = np.load(eval_path)["x"].astype(np.float32)
    inputs, outputs = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    np.savez(inputs, x=x)
    guest = Guest(guest_root(tmp_path / "root", BOARD))
    result = guest.run(str(GUEST_SCRIPT), str(bundle), str(inputs), str(outputs), BOARD)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["machine"] == "aarch64" and not report["degraded"]
    on_arm, on_x86 = np.load(outputs)["y"], host_outputs(bundle, x)
    golden = read_bundle(bundle).manifest.golden
    np.testing.assert_allclose(on_arm, on_x86, rtol=golden.rtol, atol=golden.atol)
    assert (on_arm.argmax(axis=1) == on_x86.argmax(axis=1)).all()
    report["max_abs_difference"] = float(np.abs(on_arm - on_x86).max())
    report["tolerance"] = (golden.rtol, golden.atol)
    print(f"\n{bundle.name}: {report['rows']} rows on {report['backend']} (aarch64, qemu -cpu cortex-a72), max |arm - "
          f"x86| {report['max_abs_difference']:.3g}, golden tolerance rtol {golden.rtol} atol {golden.atol}; "
          f"{report['seconds']} s ({TIMING_NOTE})")
    return report


def test_an_int8_onnx_bundle_predicts_the_same_on_aarch64(activity_sample, tmp_path):
    bundle = tmp_path / "activity.bundle"
    assert convert([str(activity_sample.onnx_path), "-o", str(bundle), "--target", BOARD, "--card",
                    str(activity_sample.card_path), "--calibration", str(activity_sample.calibration_path),
                    "--eval", str(activity_sample.eval_path), "--no-latency"]) == 0
    assert read_bundle(bundle).manifest.model.precision == "int8"  # signed activations, as the board asks
    report = compare_on_arm(bundle, activity_sample.eval_path, tmp_path)
    assert report["backend"] == "onnxruntime:CPUExecutionProvider"


def test_a_tflite_bundle_predicts_the_same_on_aarch64(tmp_path):
    sample = build_tflite_digits_sample(tmp_path / "sample")
    bundle = tmp_path / "digits.bundle"
    assert convert([str(sample["model"]), "-o", str(bundle), "--target", BOARD, "--card", str(sample["card"]),
                    "--eval", str(sample["eval"]), "--no-latency"]) == 0
    report = compare_on_arm(bundle, sample["eval"], tmp_path)
    assert report["backend"] == "tflite:cpu (XNNPACK)"
