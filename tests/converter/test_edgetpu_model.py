"""`--edgetpu-model`: an Edge TPU-compiled TFLite carried next to the CPU model for Coral boards, and the daemon's
fallback to the CPU model where libedgetpu is missing (this machine). The compiled model is a stand-in
(tests/support/edgetpu_standin.py): edgetpu_compiler is not reachable here."""

from __future__ import annotations

import json

import pytest

from converter.cli import main as convert
from edge_runtime.board import load_board
from edge_runtime.bundle import read_bundle
from edge_runtime.model_loader import load_bundle_model
from tests.support.edgetpu_standin import edgetpu_stand_in
from tests.support.tflite_mlp import build_tflite_digits_sample
from tests.support.tiers import tier


@pytest.fixture(scope="module")
@tier("slow")
def digits(tmp_path_factory):
    paths = build_tflite_digits_sample(tmp_path_factory.mktemp("digits"))
    paths["edgetpu"] = paths["model"].with_name("digits_mlp_edgetpu.tflite")
    paths["edgetpu"].write_bytes(edgetpu_stand_in([1, 64], [1, 10]))
    return paths


def args(digits, target: str, compiled) -> list[str]:
    return [str(digits["model"]), "--target", target, "--card", str(digits["card"]), "--eval", str(digits["eval"]),
            "--edgetpu-model", str(compiled), "--no-latency"]


def test_the_compiled_model_rides_next_to_the_cpu_model_and_the_cpu_takes_over(digits, tmp_path, capsys):
    out = tmp_path / "digits.bundle"
    assert convert([*args(digits, "coral-usb", digits["edgetpu"]), "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["npu"]["status"] == "bundled (model_edgetpu.tflite), not verified here"
    bundle = read_bundle(out)
    (entry,) = bundle.manifest.accelerated
    assert (entry.format, entry.path, entry.golden) == ("edgetpu", "model_edgetpu.tflite", None)
    assert bundle.read(entry.path) == digits["edgetpu"].read_bytes() and bundle.manifest.model.format == "tflite"
    model = load_bundle_model(out, name=None, backends=None, board=load_board("coral-usb"), trusted_keys=None,
                              require_signature=False)
    try:  # no libedgetpu here: the CPU model runs (the compiled one cannot, without the TPU), and says why
        assert model.choice.active == "tflite:cpu (XNNPACK)" and model.choice.degraded
        assert "delegate libedgetpu.so.1 failed to load" in model.choice.reason
    finally:
        model.close()


def test_a_model_not_compiled_for_the_edge_tpu_is_refused(digits, tmp_path, capsys):
    assert convert([*args(digits, "coral-usb", digits["model"]), "-o", str(tmp_path / "x.bundle")]) == 2
    assert "not compiled for the Edge TPU (it has no edgetpu-custom-op operator)" in capsys.readouterr().err
    assert not (tmp_path / "x.bundle").exists()


def test_a_board_without_the_edge_tpu_delegate_is_refused(digits, tmp_path, capsys):
    assert convert([*args(digits, "raspberry-pi-5", digits["edgetpu"]), "-o", str(tmp_path / "x.bundle")]) == 2
    assert "board 'raspberry-pi-5' has no Edge TPU delegate" in capsys.readouterr().err


def test_an_onnx_model_cannot_take_an_edge_tpu_model(digits, tmp_path, capsys):
    from tests.support.graphs import conv_relu, save

    model = save(conv_relu(["batch", 3, 8, 8]), tmp_path / "conv.onnx")
    code = convert([str(model), "-o", str(tmp_path / "x.bundle"), "--target", "coral-usb", "--eval",
                    str(digits["eval"]), "--edgetpu-model", str(digits["edgetpu"])])
    assert code == 2 and "--edgetpu-model goes with the TFLite model it was compiled from" in capsys.readouterr().err
