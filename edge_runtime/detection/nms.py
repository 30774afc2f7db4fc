"""Class-aware non-maximum suppression in vectorised numpy: the part of decoding that decides which boxes stay.

Boxes of different classes never suppress each other: each class's boxes are moved to their own region of the
plane (offset by class id times a span larger than any box) and one greedy NMS runs over all of them, the trick
torchvision's `batched_nms` and ultralytics use. The greedy loop costs one vectorised IoU row per kept box, and
it stops once `max_detections` boxes are kept.
"""

from __future__ import annotations

import numpy as np


def iou_matrix(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """[A, B] intersection over union of x1, y1, x2, y2 boxes (outer products: no [A, B, 2] temporaries, and
    np.maximum rather than np.clip, whose call overhead dominates at the sizes a frame has)."""
    width = np.minimum.outer(first[:, 2], second[:, 2]) - np.maximum.outer(first[:, 0], second[:, 0])
    height = np.minimum.outer(first[:, 3], second[:, 3]) - np.maximum.outer(first[:, 1], second[:, 1])
    intersection = np.maximum(width, 0) * np.maximum(height, 0)
    area_first = np.maximum(first[:, 2] - first[:, 0], 0) * np.maximum(first[:, 3] - first[:, 1], 0)
    area_second = np.maximum(second[:, 2] - second[:, 0], 0) * np.maximum(second[:, 3] - second[:, 1], 0)
    union = np.add.outer(area_first, area_second) - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)


def _overlapping(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """[K, K] IoU > threshold, without the division."""
    width = np.minimum.outer(boxes[:, 2], boxes[:, 2]) - np.maximum.outer(boxes[:, 0], boxes[:, 0])
    height = np.minimum.outer(boxes[:, 3], boxes[:, 3]) - np.maximum.outer(boxes[:, 1], boxes[:, 1])
    intersection = np.maximum(width, 0) * np.maximum(height, 0)
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    return intersection > iou_threshold * (np.add.outer(area, area) - intersection)


#: up to this many candidates the IoU matrix is computed once and the greedy pass reads rows of it; beyond, one
#: IoU row per kept box (memory stays linear in the candidates)
DENSE_LIMIT = 512


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float,
        max_detections: int) -> np.ndarray:
    """Indices of the boxes kept, best score first; a box is dropped when it overlaps a better box of its own
    class by more than `iou_threshold`."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    shifted = boxes[order].astype(np.float32, copy=False)
    if classes.any():  # boxes of different classes never overlap once each class has its own region
        span = float(shifted.max()) - min(float(shifted.min()), 0.0) + 1.0
        shifted = shifted + (classes[order].astype(np.float32) * span)[:, None]
    if len(order) <= DENSE_LIMIT:
        overlapping = _overlapping(shifted, iou_threshold)
        removed = np.zeros(len(order), dtype=bool)
        keep: list[int] = []
        for index in range(len(order)):
            if removed[index]:
                continue
            keep.append(index)
            if len(keep) == max_detections:
                break
            removed |= overlapping[index]
        return order[keep]
    return order[_greedy_rows(shifted, iou_threshold, max_detections)]


def _greedy_rows(boxes: np.ndarray, iou_threshold: float, max_detections: int) -> list[int]:
    """Greedy NMS over boxes sorted best first, one vectorised IoU row per kept box."""
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    remaining = np.arange(len(boxes))
    keep: list[int] = []
    while remaining.size and len(keep) < max_detections:
        best, rest = remaining[0], remaining[1:]
        keep.append(int(best))
        width = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        height = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        intersection = width * height
        union = areas[best] + areas[rest] - intersection
        iou = np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)
        remaining = rest[iou <= iou_threshold]
    return keep
