"""The converter's image and audio drift reference: statistics of the raw frames or windows the device will see,
from a folder (decoded by the device's code) or from model-ready npz data mapped back to pixels."""

from __future__ import annotations

import numpy as np
from PIL import Image

from converter.data import Dataset
from converter.sensor_reference import sensor_drift_section
from edge_runtime.card import ModelCard
from edge_runtime.drift.sensor import audio_statistics, image_statistics
from edge_runtime.stream import ImageFrame
from edge_runtime.window import Preprocessor
from tests.support.video import photo_frames

IMAGE = {"kind": "image", "height": 48, "width": 64, "normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.25]}}


def test_a_folder_of_photos_gives_the_ranges_of_the_decoded_photos(tmp_path):
    photos = photo_frames(("astronaut", "coffee", "moon"))
    for index, pixels in enumerate(photos):
        Image.fromarray(pixels).save(tmp_path / f"{index}.png")
    card = ModelCard.model_validate({"name": "cam", "input": IMAGE})
    section = sensor_drift_section(Dataset({"x": np.zeros((3, 3, 48, 64), np.float32)}, None, str(tmp_path)), card)
    values = np.stack([image_statistics(pixels, "rgb") for pixels in photos])
    assert section["statistics"] == ["brightness_r", "brightness_g", "brightness_b", "contrast", "sharpness"]
    np.testing.assert_allclose(section["low"], values.min(axis=0))
    np.testing.assert_allclose(section["high"], values.max(axis=0))
    assert section["kind"] == "image" and section["count"] == 3


def test_model_ready_npz_images_are_mapped_back_to_pixels(tmp_path):
    card = ModelCard.model_validate({"name": "cam", "input": IMAGE})
    frames = [ImageFrame(0.0, np.asarray(Image.fromarray(p).resize((64, 48)))) for p in photo_frames(("coffee",))]
    model_ready = Preprocessor(card).image(frames)
    section = sensor_drift_section(Dataset({"x": model_ready}, None, str(tmp_path / "data.npz")), card)
    expected = image_statistics(frames[0].pixels, "rgb")
    np.testing.assert_allclose(section["low"], expected, atol=2e-3)


def test_audio_windows_and_features():
    windows = np.random.default_rng(0).normal(0, 0.1, (20, 400)).astype(np.float32)
    raw = ModelCard.model_validate({"name": "mic", "input": {"kind": "audio", "rate_hz": 16000, "window": 400,
                                                             "hop": 160}})
    section = sensor_drift_section(Dataset({"x": windows}, None, "data.npz"), raw)
    np.testing.assert_allclose(section["high"], np.stack([audio_statistics(w) for w in windows]).max(axis=0))
    featured = ModelCard.model_validate({"name": "kws", "input": {
        "kind": "audio", "rate_hz": 16000, "window": 400, "hop": 160, "features": {"type": "log_mel", "n_mels": 8,
                                                                                    "n_fft": 128, "hop_length": 64}}})
    assert sensor_drift_section(Dataset({"x": np.zeros((20, 8, 5))}, None, "data.npz"), featured) is None
