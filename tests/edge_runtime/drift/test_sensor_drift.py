"""Camera and microphone drift: frame statistics against the ranges the calibration data showed. Real photos and
real speech stay `ok`; a covered camera (black frames), a blinded one (white), one out of focus (blurred), a
frozen feed and a silent microphone are `drift` within a window of frames."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from edge_runtime.card import ModelCard
from edge_runtime.config import DriftConfig
from edge_runtime.drift.sensor import (
    AUDIO_STATISTICS,
    IMAGE_WINDOW,
    SensorDriftMonitor,
    audio_statistics,
    image_statistic_names,
    image_statistics,
    reference_ranges,
)
from edge_runtime.drift.tracker import DriftTracker
from edge_runtime.stream import ImageFrame
from tests.support.speech import RATE, speech
from tests.support.video import photo_frames

PHOTOS = ("astronaut", "coffee", "chelsea", "camera", "rocket", "hubble_deep_field", "coins", "page", "moon")


@pytest.fixture(scope="module")
def photos():
    return photo_frames(PHOTOS)


@pytest.fixture(scope="module")
def image_section(photos):
    values = np.stack([image_statistics(frame, "rgb") for frame in photos])
    return reference_ranges(values, image_statistic_names("rgb"), "image")


def blurred(frame: np.ndarray, radius: float = 6) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).filter(ImageFilter.GaussianBlur(radius)))


def run(monitor: SensorDriftMonitor, frames: list[np.ndarray]) -> list[str]:
    states = []
    for frame in frames:
        monitor.update(image_statistics(frame, "rgb"))
        states.append(("ok", "warning", "drift")[monitor.level()])
    return states


def test_the_calibrated_photos_themselves_are_ok(photos, image_section):
    monitor = SensorDriftMonitor(image_section)
    assert run(monitor, [photos[i % len(photos)] for i in range(3 * IMAGE_WINDOW)]) == ["ok"] * 3 * IMAGE_WINDOW
    assert monitor.evaluate()["state"] == "ok"


@pytest.mark.parametrize(("fault", "statistic"), [
    ("covered", "contrast"), ("blinded", "brightness_r"), ("out of focus", "sharpness")])
def test_a_covered_blinded_or_blurred_camera_drifts_within_a_window(fault, statistic, photos, image_section):
    monitor = SensorDriftMonitor(image_section)
    run(monitor, photos[:5])  # a normal start
    faulty = {"covered": np.zeros_like(photos[0]), "blinded": np.full_like(photos[0], 250),
              "out of focus": None}[fault]
    frames = [blurred(photos[i % 5]) if faulty is None else faulty for i in range(IMAGE_WINDOW)]
    states = run(monitor, frames)
    assert states[-1] == "drift" and states.index("drift") <= 0.8 * IMAGE_WINDOW, states
    report = monitor.evaluate()
    assert report["channels"][statistic]["level"] == "drift" and report["top_channels"]
    assert report["reasons"] and report["window"]["filled"] == IMAGE_WINDOW


def test_a_frozen_feed_is_stuck(photos, image_section):
    monitor = SensorDriftMonitor(image_section, stuck_run=20)
    states = run(monitor, [photos[0]] * 20)
    assert states[-2] == "ok" and states[-1] == "drift"
    assert "stuck" in monitor.evaluate()["reasons"][0]


def test_detections_are_reported_not_judged(photos, image_section):
    monitor = SensorDriftMonitor(image_section)
    for index in range(4):
        detections = [{"label": "face", "score": 0.8, "box": [0, 0, 1, 1]}] * (index % 2)
        monitor.update(image_statistics(photos[0], "rgb"), detections)
    assert monitor.evaluate()["outputs"] == {"detections": {"per_frame": 0.5, "frames": 4},
                                             "confidence": {"mean": 0.8}}


def speech_windows(samples: np.ndarray, window: int = 576, hop: int = 512) -> list[np.ndarray]:
    return [samples[end - window:end] for end in range(window, len(samples) + 1, hop)]


def test_speech_is_ok_and_a_silent_microphone_drifts():
    samples = speech()
    reference = speech_windows(samples[: 15 * RATE])
    section = reference_ranges(np.stack([audio_statistics(w) for w in reference]), AUDIO_STATISTICS, "audio")
    monitor = SensorDriftMonitor(section)
    for window in speech_windows(samples[15 * RATE:]):  # the other half of the conversation
        monitor.update(audio_statistics(window))
        assert monitor.level() == 0
    silent = np.zeros(576, np.float32)
    levels = []
    for _ in range(monitor.window):
        monitor.update(audio_statistics(silent))
        levels.append(monitor.level())
    assert levels[-1] == 2 and levels.index(2) < monitor.window
    assert monitor.evaluate()["channels"]["level_db"]["mean"] == -100.0


def test_the_tracker_watches_an_image_model_and_publishes_the_change(photos, image_section):
    card = ModelCard.model_validate({"name": "cam", "input": {"kind": "image", "height": 32, "width": 32}})
    published = []
    tracker = DriftTracker("cam", {"sensor_drift": image_section}, card, DriftConfig(), published.append)
    assert tracker.enabled
    frames = [ImageFrame(ts=float(i), pixels=photos[i % 5]) for i in range(5)]
    tracker.observe(frames, [{"values": [0.0]}] * 5)
    black = [ImageFrame(ts=10.0 + i, pixels=np.zeros_like(photos[0])) for i in range(IMAGE_WINDOW)]
    tracker.observe(black, [{"values": [0.0]}] * IMAGE_WINDOW)
    assert published and published[-1]["state"] == "drift" and published[-1]["model"] == "cam"
    assert tracker.summary()["state"] == "drift"
    old = DriftTracker("cam", {}, card, DriftConfig(), published.append)  # a bundle from before: no reference
    assert not old.enabled and "no image drift reference" in old.unavailable
