"""YOLO dense heads: one row (or column) per anchor point, cx, cy, w, h then class scores, objectness optional.

Exporters disagree on the orientation ([1, 4+classes, N] from ultralytics YOLOv8/11, [1, N, 5+classes] from
YOLOv5), on objectness (v5 has it, v8 not) and on units (input pixels, or normalised). The orientation comes from
the shape: the axis that is 4+classes (or 5+classes) wide when the labels say how many classes there are, else the
shorter axis. The score is the best class score, times objectness when there is one.
"""

from __future__ import annotations

import numpy as np

from edge_runtime.card import DetectionOutput
from edge_runtime.detection.candidates import Candidates, corners, is_normalized, pick_output

#: most boxes above the threshold taken into NMS, best first (ultralytics' max_nms)
MAX_CANDIDATES = 30000


class YoloDecoder:
    def __init__(self, spec: DetectionOutput, width: int, height: int, classes: int | None):
        self.spec, self.width, self.height, self.classes = spec, width, height, classes

    def layout(self, shape: tuple[int, int]) -> tuple[bool, bool]:
        """(channels_first, objectness) for one image's head of `shape`; ValueError when it fits no YOLO head."""
        objectness = self.spec.objectness
        if self.classes is None:
            if min(shape) < 5:
                raise ValueError(f"a YOLO head has at least 5 values per box (cx, cy, w, h, score), got {list(shape)}")
            return shape[0] <= shape[1], bool(objectness)
        widths = {4 + self.classes: False, 5 + self.classes: True}
        if objectness is not None:
            widths = {width: flag for width, flag in widths.items() if flag == objectness}
        for channels_first, size in ((True, shape[0]), (False, shape[1])):
            if size in widths:
                return channels_first, widths[size]
        expected = " or ".join(str(width) for width in widths)
        raise ValueError(f"a YOLO head for {self.classes} classes has {expected} values per box on one axis; the "
                         f"output is {list(shape)}")

    def candidates(self, outputs: dict[str, np.ndarray]) -> list[Candidates]:
        head = pick_output(outputs, self.spec.name, "detection")
        if head.ndim == 2:
            head = head[None]
        if head.ndim != 3:
            raise ValueError(f"a YOLO head is [batch, 4+classes, N] or [batch, N, 4+classes], got {list(head.shape)}")
        return [self._image(rows) for rows in head]

    def _image(self, head: np.ndarray) -> Candidates:
        channels_first, objectness = self.layout(head.shape)
        values = head if channels_first else head.T  # [channels, N], a view
        first_class = 5 if objectness else 4
        class_scores = values[first_class:]
        best = class_scores.max(axis=0)
        if objectness:
            best = best * values[4]
        keep = np.flatnonzero(best > self.spec.score_threshold)
        if keep.size == 0:
            return Candidates.empty()
        if keep.size > MAX_CANDIDATES:
            keep = keep[np.argsort(-best[keep], kind="stable")[:MAX_CANDIDATES]]
        box = values[:4, keep].astype(np.float32)
        if is_normalized(self.spec.boxes, box):
            box = box * np.array([[self.width], [self.height], [self.width], [self.height]], dtype=np.float32)
        classes = class_scores[:, keep].argmax(axis=0)
        return Candidates(corners(box[0], box[1], box[2], box[3]), best[keep].astype(np.float32),
                          classes.astype(np.int64))
