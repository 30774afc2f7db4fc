"""Class-aware NMS on hand-built boxes, checked against a plain greedy loop written the obvious way."""

from __future__ import annotations

import numpy as np

from edge_runtime.detection.nms import iou_matrix, nms


def slow_nms(boxes, scores, classes, threshold, limit):
    """Greedy NMS, one class at a time, box by box: the textbook definition."""
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    kept = []
    for i in order:
        if len(kept) == limit:
            break
        if all(classes[i] != classes[k] or iou_matrix(boxes[i:i + 1], boxes[k:k + 1])[0, 0] <= threshold
               for k in kept):
            kept.append(i)
    return kept


def test_iou_of_known_boxes():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    assert np.allclose(iou_matrix(a, b), [[50 / 150, 0.0, 1.0]])


def test_overlapping_boxes_of_one_class_are_suppressed_but_not_across_classes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, classes, 0.45, 100).tolist() == [0, 2, 3]


def test_max_detections_keeps_the_best():
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(6)], np.float32)
    scores = np.array([0.1, 0.9, 0.3, 0.8, 0.5, 0.2], np.float32)
    assert nms(boxes, scores, np.zeros(6, int), 0.45, 3).tolist() == [1, 3, 4]


def test_random_boxes_agree_with_the_textbook_loop():
    rng = np.random.default_rng(7)
    for _ in range(20):
        count = int(rng.integers(1, 60))
        corner = rng.uniform(0, 200, (count, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(5, 60, (count, 2))], axis=1).astype(np.float32)
        scores = rng.uniform(0, 1, count).astype(np.float32)
        classes = rng.integers(0, 3, count)
        limit = int(rng.integers(1, 20))
        assert nms(boxes, scores, classes, 0.5, limit).tolist() == slow_nms(boxes, scores, classes, 0.5, limit)


def test_no_boxes():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int), 0.5, 10).tolist() == []


def test_boxes_of_zero_area_and_exact_duplicates_end():
    boxes = np.array([[5, 5, 5, 5], [0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 5]], np.float32)
    kept = nms(boxes, np.array([0.9, 0.8, 0.7, 0.6], np.float32), np.zeros(4, np.int64), 0.5, 10)
    assert kept.tolist() == [0, 1, 3]  # a zero-area box overlaps nothing, not even its twin; the duplicate goes
