"""Cameras end to end: a video file made at test time from real photos, played by the camera source into the real
NudeNet (YOLOv8n) detector bundle in the real daemon, over the real broker. Boxes are in the source frame's pixels
and match the original model run directly on the same decoded frames; a model slower than the file's frame rate
drops frames, and every frame is accounted for (decoded = delivered = predicted + dropped); snapshots of chosen
detections are published retained; a covered camera (black frames) raises drift."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from converter.card_inference import onnx_metadata, ultralytics_card
from converter.cli import main as convert
from tests.support.broker import Collector
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config
from tests.support.detectors import load_rgb, nudenet_reference, write_photo_folders
from tests.support.third_party import model_path
from tests.support.tiers import tier
from tests.support.video import HEIGHT, WIDTH, decoded_frames, photo_frames, write_video

pytest.importorskip("av")


@pytest.fixture(scope="module")
@tier("slow")
def nudenet_bundle(tmp_path_factory):
    """NudeNet in float, so the daemon must reproduce the original model's boxes (not an int8 model's)."""
    root = tmp_path_factory.mktemp("camera")
    _, evaluation = write_photo_folders(root / "photos")
    bundle = root / "nudenet.bundle"
    assert convert([str(model_path("nudenet-yolov8n")), "-o", str(bundle), "--target", "x86_64", "--eval",
                    str(evaluation), "--quantize", "none", "--no-latency"]) == 0
    return bundle


def same_box(left: list[float], right: list[float], pixels: float = 2.0) -> bool:
    return bool(np.all(np.abs(np.asarray(left) - np.asarray(right)) <= pixels))


def test_a_video_file_through_the_camera_source_gives_the_original_models_boxes(tmp_path, broker, nudenet_bundle):
    video = write_video(tmp_path / "photos.mp4", photo_frames(), fps=10, repeat=2)
    frames = decoded_frames(video)
    source = {"type": "camera", "url": str(video), "realtime": False}
    snapshot = {"labels": ["FACE_MALE"], "min_score": 0.3, "interval_s": 0, "max_bytes": 60_000}
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=nudenet_bundle, source=source,
                          model={"snapshot": snapshot})
    with Collector(broker.port, "edge/dev-1/#") as collector:
        daemon = DaemonProcess(config, "--exit-when-done")
        assert daemon.wait(120) == 0, daemon.output()
        assert wait_until(lambda: len(messages(collector, "/predictions/320n")) == len(frames), 15)
    published = sorted(messages(collector, "/predictions/320n"), key=lambda message: message["seq"])

    session = ort.InferenceSession(str(model_path("nudenet-yolov8n")), providers=["CPUExecutionProvider"])
    names = ultralytics_card(onnx_metadata(model_path("nudenet-yolov8n")), "n")[0]["labels"]
    found = 0
    for index, (pixels, message) in enumerate(zip(frames, published, strict=True)):
        assert pixels.shape == (HEIGHT, WIDTH, 3)
        expected = nudenet_reference(session, pixels, names)
        detections = message["detections"]
        assert [d["label"] for d in detections] == [label for label, _, _ in expected], index
        for detection, (_, score, box) in zip(detections, expected, strict=True):
            assert detection["score"] == pytest.approx(score, abs=2e-3), index
            assert same_box(detection["box"], box), (index, detection["box"], box)
            x1, y1, x2, y2 = detection["box"]
            assert 0 <= x1 < x2 <= WIDTH and 0 <= y1 < y2 <= HEIGHT  # the 640 x 480 frame, not the 320 x 320 input
        found += len(detections)
    assert found >= 4  # the astronaut's and the cameraman's faces, at least, in both of their frames

    # snapshots: the frames with a male face, retained, the JPEG within its size limit, the same detections
    snapshots = messages(collector, "/snapshot/320n")
    expected_seqs = [m["seq"] for m in published if any(d["label"] == "FACE_MALE" and d["score"] >= 0.3
                                                         for d in m["detections"])]
    assert expected_seqs and sorted(s["seq"] for s in snapshots) == expected_seqs
    by_seq = {m["seq"]: m for m in published}
    for snap in snapshots:
        jpeg = base64.b64decode(snap["jpeg"])
        assert len(jpeg) == snap["bytes"] <= 60_000
        assert Image.open(io.BytesIO(jpeg)).size == (snap["width"], snap["height"]) == (WIDTH, HEIGHT)
        assert snap["detections"] == by_seq[snap["seq"]]["detections"] and snap["trigger"]["label"] == "FACE_MALE"
    with Collector(broker.port, "edge/dev-1/snapshot/#") as late:  # a dashboard that connects later
        assert late.wait_for(lambda received: any(retain for _, _, retain in received), 10)
        assert json.loads(late.snapshot()[0][1])["seq"] == expected_seqs[-1]


def test_a_model_slower_than_the_camera_drops_frames_and_counts_every_one(tmp_path, broker, nudenet_bundle):
    """120 frames at 200 fps (0.6 s): YOLOv8n takes several milliseconds a frame on this machine, so the camera
    outruns it. The model works on the newest frame; every decoded frame is either predicted or counted dropped."""
    video = write_video(tmp_path / "fast.mp4", photo_frames(), fps=200, repeat=24)
    source = {"type": "camera", "url": str(video)}
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=nudenet_bundle, source=source)

    def settled(message: dict) -> bool:
        model = message.get("models", {}).get("320n")
        if not model or model["source_health"]["state"] != "finished" or model["queue_depth"]:
            return False
        frames = model["source_health"]["frames"]
        return frames["delivered"] == model["predictions"] + frames["dropped"]

    with Collector(broker.port, "edge/dev-1/#") as collector:
        daemon = DaemonProcess(config)
        try:
            assert wait_until(lambda: any(settled(m) for m in messages(collector, "/stats")), 60), daemon.output()
        finally:
            assert daemon.terminate() == 0, daemon.output()
    model = next(m for m in messages(collector, "/stats") if settled(m))["models"]["320n"]
    frames = model["source_health"]["frames"]
    assert frames["decoded"] == frames["delivered"] == 120
    assert frames["dropped"] > 0 and model["dropped"] == frames["dropped"]
    assert model["predictions"] == len(messages(collector, "/predictions/320n")) < 120
    assert not messages(collector, "/errors")  # dropping frames is a camera's normal day, not an error


def test_a_covered_camera_raises_drift(tmp_path, broker, nudenet_bundle):
    """The detector's own eval photos (the bundle's drift reference) as a video, then the lens covered: black
    frames. Nothing is published while the photos play (no state change); `drift` comes within 8 black frames."""
    eval_faces = sorted((nudenet_bundle.parent / "photos" / "eval").glob("faces*.png"))
    photos = [load_rgb(path) for path in eval_faces]
    black = [np.zeros_like(photos[0])] * 12
    video = write_video(tmp_path / "covered.mp4", photos + black, fps=10)
    shown = len(photos)
    source = {"type": "camera", "url": str(video), "realtime": False}
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=nudenet_bundle, source=source,
                          model={"drift": {"interval_s": 3600}, "max_batch": 1})  # one frame at a time, as live
    with Collector(broker.port, "edge/dev-1/drift/#") as collector:
        daemon = DaemonProcess(config, "--exit-when-done")
        assert daemon.wait(120) == 0, daemon.output()
        assert collector.sync()
    reports = messages(collector, "/drift/320n")
    assert reports, "no drift report"
    first = reports[0]
    assert first["state"] in ("warning", "drift") and first["window"]["samples_seen"] > shown  # not the photos
    final = next(report for report in reports if report["state"] == "drift")
    assert final["window"]["samples_seen"] <= shown + 8
    contrast = final["channels"]["contrast"]
    assert contrast["level"] == "drift" and contrast["out_of_range"] >= 0.8
    assert contrast["mean"] < contrast["reference"][0]
