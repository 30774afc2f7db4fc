"""YOLO heads on hand-built tensors: both orientations, with and without objectness, pixels or normalised, and the
letterbox undone so boxes land on the source frame."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.card import ModelCard
from edge_runtime.detection import DetectionDecoder, letterbox


def card(labels=("cat", "dog", "bird"), **output) -> ModelCard:
    return ModelCard.model_validate({
        "name": "det", "labels": list(labels) if labels else None,
        "input": {"kind": "image", "height": 320, "width": 320, "resize": "letterbox"},
        "output": {"kind": "detection", "format": "yolo", **output}})


def head(boxes, scores, objectness=None, anchors=50, channels_first=True) -> np.ndarray:
    """A [1, 4+classes(+1), anchors] head (or transposed) with the given boxes (cx, cy, w, h) in the first
    columns and low scores everywhere else."""
    classes = len(scores[0])
    rows = 4 + classes + (objectness is not None)
    values = np.zeros((rows, anchors), np.float32)
    values[:4] = np.array([160, 160, 10, 10], np.float32)[:, None]
    values[-classes:] = 0.01
    for column, (box, score) in enumerate(zip(boxes, scores, strict=True)):
        values[:4, column] = box
        values[-classes:, column] = score
        if objectness is not None:
            values[4, column] = objectness[column]
    if objectness is not None:
        values[4, len(boxes):] = 0.01
    return (values if channels_first else values.T)[None]


BOXES = [[100, 100, 40, 60], [104, 102, 40, 60], [100, 100, 40, 60], [250, 200, 20, 20]]
SCORES = [[0.9, 0.1, 0.0], [0.8, 0.0, 0.0], [0.0, 0.7, 0.0], [0.0, 0.0, 0.3]]


@pytest.mark.parametrize("channels_first", [True, False])
def test_v8_head_in_either_orientation(channels_first):
    found = DetectionDecoder(card()).decode({"output0": head(BOXES, SCORES, channels_first=channels_first)})[0]
    # box 1 overlaps box 0 of the same class and goes; box 2 overlaps too but is a dog
    assert found.as_dicts(["cat", "dog", "bird"]) == [
        {"label": "cat", "score": 0.9, "box": [80.0, 70.0, 120.0, 130.0]},
        {"label": "dog", "score": 0.7, "box": [80.0, 70.0, 120.0, 130.0]},
        {"label": "bird", "score": 0.3, "box": [240.0, 190.0, 260.0, 210.0]},
    ]


@pytest.mark.parametrize("channels_first", [True, False])
def test_v5_head_with_objectness_multiplies_the_class_score(channels_first):
    tensor = head(BOXES, SCORES, objectness=[0.5, 0.9, 1.0, 1.0], channels_first=channels_first)
    found = DetectionDecoder(card()).decode({"output0": tensor})[0]
    # 0.9 * 0.5 = 0.45 now loses to 0.8 * 0.9 = 0.72 among the overlapping cats
    assert [(d["label"], d["score"]) for d in found.as_dicts(["cat", "dog", "bird"])] == [
        ("cat", 0.72), ("dog", 0.7), ("bird", 0.3)]


def test_without_labels_the_shorter_axis_is_the_channels_and_objectness_comes_from_the_card():
    tensor = head(BOXES, SCORES, objectness=[0.5, 0.9, 1.0, 1.0])
    assert len(DetectionDecoder(card(labels=None, objectness=True)).decode({"o": tensor})[0]) == 3
    plain = DetectionDecoder(card(labels=None)).decode({"o": head(BOXES, SCORES)})[0]
    assert plain.classes.tolist() == [0, 1, 2]


def test_normalised_boxes_are_scaled_to_input_pixels_auto_or_as_the_card_says():
    normalised = [[x / 320 for x in box] for box in BOXES]
    tensor = head(normalised, SCORES)
    expected = DetectionDecoder(card()).decode({"o": head(BOXES, SCORES)})[0].boxes
    for units in ("auto", "normalized"):
        found = DetectionDecoder(card(boxes=units)).decode({"o": tensor})[0]
        assert np.allclose(found.boxes, expected, atol=1e-3)


def test_boxes_map_back_through_the_letterbox():
    transform = letterbox(640, 480, 320, 320)  # scale 0.5, 40 pixels of padding on top
    found = DetectionDecoder(card()).decode({"o": head(BOXES, SCORES)}, [transform])[0]
    assert found.boxes[0].tolist() == [160.0, 60.0, 240.0, 180.0]


def test_threshold_and_max_detections():
    boxes = [[20 + 30 * i, 20, 10, 10] for i in range(9)]
    scores = [[0.2 + 0.05 * i, 0, 0] for i in range(9)]
    found = DetectionDecoder(card(score_threshold=0.3, max_detections=4)).decode({"o": head(boxes, scores)})[0]
    assert np.allclose(found.scores, [0.6, 0.55, 0.5, 0.45])


def test_a_frame_with_nothing_is_an_empty_list():
    assert DetectionDecoder(card()).decode({"o": np.zeros((1, 7, 30), np.float32)})[0].as_dicts(None) == []


def test_a_head_that_fits_no_yolo_layout_is_refused_with_the_shapes():
    with pytest.raises(ValueError, match=r"3 classes has 7 or 8 values per box.*\[9, 50\]"):
        DetectionDecoder(card()).decode({"o": np.zeros((1, 9, 50), np.float32)})


def test_batches_decode_per_image():
    batch = np.concatenate([head(BOXES, SCORES), np.zeros((1, 7, 50), np.float32)])
    found = DetectionDecoder(card()).decode({"o": batch})
    assert [len(frame) for frame in found] == [3, 0]
