"""--calibration/--eval folders of images: prepared by the device's own decode and preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from converter.errors import ConversionError
from converter.image_data import load_image_folder
from converter.model_info import TensorInfo
from edge_runtime.card import ModelCard
from edge_runtime.decode import decode_image
from edge_runtime.window import Preprocessor

INPUTS = [TensorInfo("images", ["batch", 3, 32, 48], "float32")]
CARD = ModelCard.model_validate({"name": "m", "input": {"kind": "image", "height": 32, "width": 48,
                                                        "resize": "letterbox", "channel_order": "bgr"}})


def test_images_become_exactly_what_the_device_feeds(tmp_path):
    rng = np.random.default_rng(0)
    for index, size in enumerate([(20, 30), (64, 64), (100, 40)]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(tmp_path / f"{index}.png")
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "gray.png")
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_image_folder(tmp_path, CARD, INPUTS, what="calibration")
    assert data.inputs["images"].shape == (4, 3, 32, 48) and data.labels is None
    frame = decode_image((tmp_path / "2.png").read_bytes(), CARD.input, 2**20)
    assert np.array_equal(data.inputs["images"][2], Preprocessor(CARD).image([frame])[0])


def test_a_folder_needs_an_image_card_and_readable_images(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    with pytest.raises(ConversionError, match="nothing says how to feed them"):
        load_image_folder(tmp_path, None, INPUTS, what="calibration")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(ConversionError, match=r"broken\.jpg: not a decodable JPEG or PNG"):
        load_image_folder(tmp_path, CARD, INPUTS, what="calibration")


def test_an_empty_folder_and_a_card_of_another_size(tmp_path):
    with pytest.raises(ConversionError, match="has no .png/.jpg/.jpeg files"):
        load_image_folder(tmp_path, CARD, INPUTS, what="evaluation")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    with pytest.raises(ConversionError, match=r"makes images of shape \[3, 32, 48\].*\[batch, 3, 64, 64\]"):
        load_image_folder(tmp_path, CARD, [TensorInfo("images", ["batch", 3, 64, 64], "float32")], what="x")
