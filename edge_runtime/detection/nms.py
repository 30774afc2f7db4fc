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
    """[K, K] IoU > threshold, without the division (intersection x (1 + t) > t x (area_a + area_b)). The
    coordinates are laid out [4, K] so that x and y go through each min/max together with K-long inner loops:
    fewer numpy calls, which is what a frame's few dozen candidates cost."""
    corners = np.ascontiguousarray(boxes.T)
    low, high = corners[:2], corners[2:]
    extent = np.minimum(high[:, :, None], high[:, None, :])
    extent -= np.maximum(low[:, :, None], low[:, None, :])
    np.maximum(extent, 0, out=extent)
    intersection = extent[0] * extent[1]
    size = np.maximum(high - low, 0)
    area = size[0] * size[1]
    return intersection * (1 + iou_threshold) > iou_threshold * np.add.outer(area, area)


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
        return order[_greedy_dense(_overlapping(shifted, iou_threshold), max_detections)]
    return order[_greedy_rows(shifted, iou_threshold, max_detections)]


def _greedy_dense(overlapping: np.ndarray, max_detections: int) -> list[int]:
    """Greedy NMS over a precomputed [K, K] overlap matrix (boxes sorted best first): a step per kept box, not per
    candidate (the next kept box is the first one still standing)."""
    standing = np.ones(len(overlapping), dtype=bool)
    apart = ~overlapping
    keep: list[int] = []
    index = 0
    while True:
        keep.append(index)
        if len(keep) == max_detections:
            return keep
        standing &= apart[index]
        standing[index] = False  # a box of zero area does not overlap itself
        index = int(standing.argmax())
        if not standing[index]:
            return keep


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
