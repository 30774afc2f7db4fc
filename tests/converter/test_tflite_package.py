"""A TFLite model is run, verified and packaged as is."""

from __future__ import annotations

import numpy as np
import pytest

from converter.cli import main
from edge_runtime.backends.tflite import TfliteModel
from edge_runtime.bundle import read_bundle
from tests.support.tflite_mlp import build_tflite_digits_sample
from tests.support.tiers import tier


@pytest.fixture(scope="module")
@tier("slow")
def tflite_sample(tmp_path_factory) -> dict:
    return build_tflite_digits_sample(tmp_path_factory.mktemp("tflite"))


def test_tflite_model_is_packaged_as_is(tflite_sample, tmp_path):
    out = tmp_path / "mlp.bundle"
    args = [str(tflite_sample["model"]), "-o", str(out), "--target", "raspberry-pi-4", "--card",
            str(tflite_sample["card"]), "--calibration", str(tflite_sample["calibration"]), "--eval",
            str(tflite_sample["eval"])]
    assert main(args) == 0
    bundle = read_bundle(out)
    manifest = bundle.manifest
    assert manifest.model.format == "tflite" and manifest.model.path == "model.tflite"
    assert bundle.model_bytes() == tflite_sample["model"].read_bytes()
    assert manifest.inputs[0].shape == ["batch", 64]
    stage = manifest.verification["stages"][0]
    assert stage["accuracy"] > 0.9 and stage["latency_ms"] > 0
    assert len(manifest.reference["inputs"]["x"]["channels"]) == 64
    inputs, expected = bundle.golden()
    actual = TfliteModel(bundle.model_bytes()).run(inputs)
    np.testing.assert_allclose(actual[0], expected["probabilities"], rtol=1e-5, atol=1e-6)


def test_tflite_cannot_be_requantized(tflite_sample, tmp_path, capsys):
    args = [str(tflite_sample["model"]), "-o", str(tmp_path / "x.bundle"), "--target", "x86_64", "--eval",
            str(tflite_sample["eval"]), "--quantize", "int8"]
    assert main(args) == 2
    assert "packaged as is" in capsys.readouterr().err


def test_tflite_for_an_onnxruntime_only_board(tflite_sample, tmp_path, capsys):
    args = [str(tflite_sample["model"]), "-o", str(tmp_path / "x.bundle"), "--target", "jetson-orin", "--eval",
            str(tflite_sample["eval"])]
    assert main(args) == 2
    assert "no TFLite backend" in capsys.readouterr().err
