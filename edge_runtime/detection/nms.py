"""Class-aware non-maximum suppression in vectorised numpy: the part of decoding that decides which boxes stay.

Boxes of different classes never suppress each other: each class's boxes are moved to their own region of the
plane (offset by class id times a span larger than any box) and one greedy NMS runs over all of them, the trick
torchvision's `batched_nms` and ultralytics use. The greedy loop costs one vectorised IoU row per kept box, and
it stops once `max_detections` boxes are kept.
"""

from __future__ import annotations

import numpy as np


def iou_matrix(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """[A, B] intersection over union of x1, y1, x2, y2 boxes."""
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_first = np.prod(np.clip(first[:, 2:] - first[:, :2], 0, None), axis=1)
    area_second = np.prod(np.clip(second[:, 2:] - second[:, :2], 0, None), axis=1)
    union = area_first[:, None] + area_second[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float,
        max_detections: int) -> np.ndarray:
    """Indices of the boxes kept, best score first; a box is dropped when it overlaps a better box of its own
    class by more than `iou_threshold`."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = boxes.astype(np.float32, copy=False)
    span = float(np.max(boxes)) - min(float(np.min(boxes)), 0.0) + 1.0
    shifted = boxes + (classes.astype(np.float32) * span)[:, None]
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (shifted[:, i] for i in range(4))
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size and len(keep) < max_detections:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        width = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        height = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        intersection = width * height
        union = areas[best] + areas[rest] - intersection
        iou = np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
