"""Detectors end to end: real third-party detector bundles in the real daemon, photos from the folder source,
predictions over the real broker carrying `detections` in source-frame pixels, compared with the original models
run directly on the same files and decoded the way their own packages do (tests/support/detectors.py)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from converter.card_inference import onnx_metadata, ultralytics_card
from converter.cli import main as convert
from converter.image_data import image_files
from tests.support.broker import Collector
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config
from tests.support.detectors import (
    BLAZEFACE_CARD,
    blazeface_reference,
    load_rgb,
    nudenet_reference,
    write_photo_folders,
)
from tests.support.third_party import model_path
from tests.support.tiers import tier


@pytest.fixture(scope="module")
@tier("slow")
def detector_bundles(tmp_path_factory):
    """(eval photo folder, NudeNet bundle in float, BlazeFace bundle): float, so the daemon must reproduce the
    original model's boxes, not an int8 model's (test_detector_conversion.py measures what int8 loses)."""
    root = tmp_path_factory.mktemp("detectors")
    calibration, evaluation = write_photo_folders(root / "photos")
    nudenet = root / "nudenet.bundle"
    assert convert([str(model_path("nudenet-yolov8n")), "-o", str(nudenet), "--target", "x86_64", "--eval",
                    str(evaluation), "--quantize", "none", "--no-latency"]) == 0
    card = root / "blazeface.card.yaml"
    card.write_text(BLAZEFACE_CARD)
    blazeface = root / "blazeface.bundle"
    assert convert([str(model_path("blazeface-short-range")), "-o", str(blazeface), "--target", "x86_64", "--card",
                    str(card), "--eval", str(evaluation), "--no-latency"]) == 0
    return evaluation, nudenet, blazeface


def same_box(left: list[float], right: list[float], pixels: float = 2.0) -> bool:
    return bool(np.all(np.abs(np.asarray(left) - np.asarray(right)) <= pixels))


def test_detectors_publish_what_the_original_models_find(tmp_path, broker, detector_bundles):
    evaluation, nudenet, blazeface = detector_bundles
    files = image_files(evaluation)
    source = {"type": "folder", "path": str(evaluation), "interval_s": 0}
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=nudenet, source=source,
                          extra={"models": [{"bundle": str(nudenet), "source": source},
                                            {"bundle": str(blazeface), "source": source}]})
    with Collector(broker.port, "edge/dev-1/predictions/#") as collector:
        daemon = DaemonProcess(config, "--exit-when-done")
        assert daemon.wait(120) == 0, daemon.output()
        assert wait_until(lambda: len(messages(collector, "/predictions/320n")) == len(files)
                          and len(messages(collector, "/predictions/blazeface")) == len(files), 15)
    yolo = sorted(messages(collector, "/predictions/320n"), key=lambda message: message["seq"])
    faces = sorted(messages(collector, "/predictions/blazeface"), key=lambda message: message["seq"])

    session = ort.InferenceSession(str(model_path("nudenet-yolov8n")), providers=["CPUExecutionProvider"])
    labels = [detection["label"] for message in yolo for detection in message["detections"]]
    assert "FACE_FEMALE" in labels and "FACE_MALE" in labels
    names = ultralytics_card(onnx_metadata(model_path("nudenet-yolov8n")), "n")[0]["labels"]
    for path, message in zip(files, yolo, strict=True):
        expected = nudenet_reference(session, load_rgb(path), names)
        published = message["detections"]
        assert [d["label"] for d in published] == [label for label, _, _ in expected], path.name
        for detection, (_, score, box) in zip(published, expected, strict=True):
            assert detection["score"] == pytest.approx(score, abs=2e-3), path.name
            assert same_box(detection["box"], box), (path.name, detection["box"], box)

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(model_path("blazeface-short-range")))
    interpreter.allocate_tensors()
    found = 0
    for path, message in zip(files, faces, strict=True):
        expected = blazeface_reference(interpreter, load_rgb(path))
        published = message["detections"]
        assert len(published) == len(expected), path.name
        found += len(published)
        for detection, (score, box) in zip(published, expected, strict=True):
            assert detection["label"] == "face" and detection["score"] == pytest.approx(score, abs=2e-3)
            assert same_box(detection["box"], box), (path.name, detection["box"], box)
    assert found >= 30
    assert any(message["detections"] == [] for message in faces)  # the coffee cup: a prediction all the same
