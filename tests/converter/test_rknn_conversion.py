"""`edge-convert --target rk3588`: a .rknn built by rknn-toolkit2 in its own environment and verified in its
simulator next to the CPU model (the `rknn` tier: `make test-rknn` builds the toolchain, `make test` deselects it).

The simulator's outputs are a stage row like any other, held to the same accuracy budget; a model the toolkit cannot
build is bundled for the CPU with the rejected operator in the report."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from converter.cli import main as convert
from edge_runtime.bundle import read_bundle
from tests.converter.test_paddle_exports import image_card
from tests.support.detectors import write_photo_folders
from tests.support.ocr_images import CLS_MEAN, CLS_STD, direction_crops
from tests.support.rknn_models import require_toolchain, with_unique
from tests.support.third_party import model_path

pytestmark = [pytest.mark.rknn, pytest.mark.slow]
STAGE = "rknn (simulator)"


@pytest.fixture(autouse=True)
def _toolchain() -> None:
    require_toolchain()


def converted(tmp_path, capsys, *args: str) -> tuple[dict, object]:
    out = tmp_path / "model.bundle"
    code = convert([*args, "-o", str(out), "--target", "rk3588", "--no-latency", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    return json.loads(captured.out), read_bundle(out)


def sample_args(sample) -> list[str]:
    return [str(sample.onnx_path), "--card", str(sample.card_path), "--calibration", str(sample.calibration_path),
            "--eval", str(sample.eval_path)]


def stage(report: dict, name: str) -> dict:
    return next(row for row in report["stages"] if row["stage"] == name)


def test_the_activity_model_gets_a_rknn_verified_in_the_simulator(activity_sample, tmp_path, capsys):
    report, bundle = converted(tmp_path, capsys, *sample_args(activity_sample))
    manifest = bundle.manifest
    (entry,) = manifest.accelerated
    assert (entry.path, entry.format, entry.accelerator, entry.precision) == ("model.rknn", "rknn", "rk3588 NPU",
                                                                               "int8")
    assert bundle.read("model.rknn")[:4] == b"RKNN" and manifest.model.path == "model.onnx"  # the CPU fallback
    assert report["npu"]["status"] == "bundled (model.rknn)" and report["passes"]["npu"] == "ran"
    row, original = stage(report, STAGE), report["stages"][0]
    budget = report["gate"]["max_accuracy_drop"]
    assert original["accuracy"] - row["accuracy"] <= budget and row["cosine_mean"] > 0.999
    assert row["precision"] == "int8" and row["size_bytes"] == len(bundle.read("model.rknn"))
    # The .rknn's own golden output (its simulator's) against the original ONNX on the same input: within the
    # tolerance the device will hold the NPU to, and the same class.
    inputs, simulated = bundle.golden(entry.golden)
    session = ort.InferenceSession(str(activity_sample.onnx_path))
    original_out = session.run(None, inputs)[0]
    assert np.allclose(simulated["logits"], original_out, rtol=entry.golden.rtol, atol=entry.golden.atol)
    assert simulated["logits"].argmax() == original_out.argmax()
    assert "not board timings" in report["npu"]["performance"] or "without a board" in report["npu"]["performance"]


def test_a_third_party_paddle_classifier_is_built_for_the_npu(tmp_path, capsys):
    """PP-OCR's text-direction classifier (a PaddlePaddle export at opset 11, batch -1, its card normalising with
    ImageNet-style mean/std) on real crops of a printed page: the simulator's answers against the original's."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name, evaluation, seed in (("cal", False, 1), ("eval", True, 2)):
        x, y = direction_crops(evaluation=evaluation, count=64, seed=seed)
        np.savez(folder / f"{name}.npz", x=x, y=y)
    card = image_card(folder / "card.yaml", "ppocr-cls", 48, 192, CLS_MEAN, CLS_STD,
                      {"kind": "classification", "scores": "probabilities"}, labels=["0", "180"])
    report, bundle = converted(tmp_path, capsys, str(model_path("ppocr-cls-v2")), "--card", str(card),
                               "--calibration", str(folder / "cal.npz"), "--eval", str(folder / "eval.npz"),
                               "--max-accuracy-drop", "0.05")
    row, original = stage(report, STAGE), report["stages"][0]
    assert report["npu"]["status"] == "bundled (model.rknn)", report["npu"]
    # RKNN's int8 changes the answer on 4 of the 64 crops (accuracy -3.1 points) where onnxruntime's int8 changes
    # none: with the default budget (0.5 points) the .rknn stays out of the bundle; 5 points lets it in
    assert original["accuracy"] - row["accuracy"] <= 0.05
    assert row["agreement"] >= 0.9 and row["cosine_mean"] > 0.99
    assert [entry.format for entry in bundle.manifest.accelerated] == ["rknn"]


def test_a_yolov8n_whose_npu_build_loses_boxes_is_kept_out_of_the_bundle(tmp_path_factory, tmp_path, capsys):
    """NudeNet's YOLOv8n (an ultralytics export) as exported: its one output concatenates box coordinates (0-320
    pixels) with class scores (0-1), and RKNN quantizes that output as one int8 tensor, which wipes out the
    scores. The simulator shows it (cosine stays high: the boxes dominate it; the matched boxes do not), the gate
    keeps the .rknn out, and the bundle runs on the CPU, said in the report."""
    calibration, evaluation = write_photo_folders(tmp_path_factory.mktemp("photos"))
    report, bundle = converted(tmp_path, capsys, str(model_path("nudenet-yolov8n")), "--calibration",
                               str(calibration), "--eval", str(evaluation), "--max-accuracy-drop", "0.15")
    row = stage(report, STAGE)
    assert row["boxes"]["rate"] < 1 - 0.15 and row["cosine_mean"] > 0.99
    assert report["npu"]["status"] == "not bundled" and "more than the 15.00 points allowed" in report["npu"]["reason"]
    assert bundle.manifest.accelerated == [] and report["gate"]["passed"]


def test_an_operator_rknn_rejects_leaves_the_cpu_model_with_the_reason(activity_sample, tmp_path, capsys):
    model = with_unique(activity_sample.onnx_path, tmp_path / "activity_unique.onnx")
    args = sample_args(activity_sample)
    report, bundle = converted(tmp_path, capsys, str(model), *args[1:])
    npu = report["npu"]
    assert npu["status"] == "not built" and "build" in npu["reason"]
    assert [(op["op"], op["node"]) for op in npu["operators"]] == [("Unique", "distinct")]
    assert "dynamic graph" in npu["operators"][0]["problem"]
    assert bundle.manifest.accelerated == [] and "model.rknn" not in bundle.names
    assert report["gate"]["passed"] and any("runs on the CPU" in note for note in report["notes"])
    assert STAGE not in [row["stage"] for row in report["stages"]]
