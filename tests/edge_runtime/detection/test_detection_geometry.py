"""Letterbox and stretch: the transform recorded while resizing maps model-input boxes back onto the frame."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.card import ImageInput
from edge_runtime.detection.geometry import letterbox, stretch
from edge_runtime.window import fit_image


def test_letterbox_of_a_wide_frame_pads_top_and_bottom_like_ultralytics():
    transform = letterbox(640, 480, 320, 320)
    assert transform.resized == (320, 240)
    assert (transform.pad_x, transform.pad_y) == (0.0, 40.0)
    # odd padding: ultralytics puts round(dh - 0.1) on top
    assert letterbox(600, 401, 320, 320).pad_y == round((320 - round(401 * 320 / 600)) / 2 - 0.1)


@pytest.mark.parametrize("size", [(640, 480), (300, 451), (1000, 872), (128, 128), (37, 500)])
def test_a_box_drawn_on_the_frame_comes_back_where_it_was(size):
    width, height = size
    source = np.array([[0.1 * width, 0.2 * height, 0.6 * width, 0.9 * height]], np.float32)
    for transform in (letterbox(width, height, 320, 256), stretch(width, height, 320, 256)):
        model = np.empty_like(source)
        model[:, 0::2] = source[:, 0::2] * transform.scale_x + transform.pad_x
        model[:, 1::2] = source[:, 1::2] * transform.scale_y + transform.pad_y
        assert np.allclose(transform.to_source(model), source, atol=1e-3)


def test_boxes_in_the_padding_are_clipped_to_the_frame():
    transform = letterbox(640, 480, 320, 320)
    back = transform.to_source(np.array([[-5, 10, 330, 300]], np.float32))
    assert back.tolist() == [[0, 0, 640, 480]]


def test_letterboxed_pixels_sit_centred_on_the_pad_value():
    spec = ImageInput(height=64, width=64, resize="letterbox", pad_value=114)
    frame = np.full((32, 128, 3), 200, np.uint8)  # 4:1, scaled to 64x16 and centred
    pixels, transform = fit_image(frame, spec)
    assert pixels.shape == (64, 64, 3) and transform.pad_y == 24
    assert np.all(pixels[:24] == 114) and np.all(pixels[40:] == 114) and np.all(pixels[24:40] == 200)


def test_stretch_is_still_the_default():
    spec = ImageInput(height=8, width=8)
    pixels, transform = fit_image(np.zeros((16, 32, 3), np.uint8), spec)
    assert spec.resize == "stretch" and pixels.shape == (8, 8, 3)
    assert (transform.scale_x, transform.scale_y, transform.pad_x, transform.pad_y) == (0.25, 0.5, 0, 0)
