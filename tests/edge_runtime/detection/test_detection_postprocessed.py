"""Graphs that end in TFLite_Detection_PostProcess: the four outputs read by name, by TFLite's order, or by what
they hold (TF2 exports list them in another order)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.card import ModelCard
from edge_runtime.detection import DetectionDecoder, stretch


def card(**output) -> ModelCard:
    return ModelCard.model_validate({
        "name": "ssd", "labels": ["person", "bicycle", "car"],
        "input": {"kind": "image", "height": 300, "width": 300, "layout": "nhwc"},
        "output": {"kind": "detection", "format": "postprocessed", "score_threshold": 0.5, **output}})


BOXES = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.6, 0.7], [0, 0, 0, 0]]], np.float32)
CLASSES = np.array([[2.0, 0.0, 1.0, 0.0]], np.float32)
SCORES = np.array([[0.9, 0.7, 0.4, 0.95]], np.float32)  # the last is past `count`
COUNT = np.array([3.0], np.float32)
EXPECTED = [{"label": "car", "score": 0.9, "box": [60.0, 30.0, 180.0, 150.0]},
            {"label": "person", "score": 0.7, "box": [0.0, 0.0, 300.0, 300.0]}]


def test_tflite_order():
    outputs = {"TFLite_Detection_PostProcess": BOXES, "TFLite_Detection_PostProcess:1": CLASSES,
               "TFLite_Detection_PostProcess:2": SCORES, "TFLite_Detection_PostProcess:3": COUNT}
    assert DetectionDecoder(card()).decode(outputs)[0].as_dicts(["person", "bicycle", "car"]) == EXPECTED


def test_tf2_order_is_told_apart_by_what_the_tensors_hold():
    outputs = {"StatefulPartitionedCall:0": SCORES, "StatefulPartitionedCall:1": BOXES,
               "StatefulPartitionedCall:2": COUNT, "StatefulPartitionedCall:3": CLASSES}
    assert DetectionDecoder(card()).decode(outputs)[0].as_dicts(["person", "bicycle", "car"]) == EXPECTED


def test_outputs_named_in_the_card_win():
    outputs = {"a": CLASSES, "b": SCORES, "c": BOXES, "d": COUNT}
    swapped = card(outputs={"classes": "b", "scores": "a", "boxes": "c", "count": "d"})
    found = DetectionDecoder(swapped).decode(outputs)[0]
    assert found.scores.tolist() == [2.0, 1.0]  # told to, it reads the class ids as scores
    assert DetectionDecoder(card(outputs={"boxes": "c", "count": "d", "classes": "a", "scores": "b"})).decode(
        outputs)[0].as_dicts(["person", "bicycle", "car"]) == EXPECTED


def test_no_second_nms_but_max_detections_and_mapping_back():
    outputs = {"boxes": BOXES, "classes": CLASSES, "scores": SCORES, "count": COUNT}
    found = DetectionDecoder(card(max_detections=1)).decode(outputs, [stretch(600, 150, 300, 300)])[0]
    assert found.boxes.tolist() == [[120.0, 15.0, 360.0, 75.0]]


def test_outputs_that_are_no_post_process_are_refused():
    with pytest.raises(ValueError, match="no boxes output"):
        DetectionDecoder(card()).decode({"logits": np.zeros((1, 10), np.float32)})
