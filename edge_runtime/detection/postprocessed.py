"""Graphs that end in a detection post-process (TFLite_Detection_PostProcess, TF Object Detection API exports):
the model already decoded and suppressed; what is left is reading its four outputs.

Outputs: boxes [batch, N, 4] as ymin, xmin, ymax, xmax (normalised unless the card says pixels), classes
[batch, N], scores [batch, N], count [batch]. Named in the card (`outputs: {boxes, classes, scores, count}`), else
found by shape: boxes are the [.., 4] tensor, count the one with one value per image; of the other two, classes
are the one holding whole numbers only, else the first in TFLite's order (boxes, classes, scores, count).
"""

from __future__ import annotations

import numpy as np

from edge_runtime.card import DetectionOutput
from edge_runtime.detection.candidates import Candidates, is_normalized, pick_output

ROLES = ("boxes", "classes", "scores", "count")


def _whole(array: np.ndarray) -> bool:
    return bool(np.all(np.floor(array) == array))


def assign_outputs(outputs: dict[str, np.ndarray], named: dict[str, str | None]) -> dict[str, np.ndarray]:
    """Role -> tensor; ValueError when the outputs do not look like a detection post-process."""
    found = {role: pick_output(outputs, name, role) for role, name in named.items() if name}
    taken = {id(value) for value in found.values()}
    rest = [value for value in outputs.values() if id(value) not in taken]
    if "boxes" not in found:
        boxes = [value for value in rest if value.ndim == 3 and value.shape[-1] == 4]
        if not boxes:
            raise ValueError("no boxes output ([batch, N, 4]) among the model's outputs "
                             f"{[list(value.shape) for value in outputs.values()]}")
        found["boxes"] = boxes[0]
        rest = [value for value in rest if value is not boxes[0]]
    batch = found["boxes"].shape[0]
    if "count" not in found:
        counts = [value for value in rest if value.size == batch]
        if not counts:
            raise ValueError("no count output (one value per image) among the model's outputs")
        found["count"] = counts[-1]
        rest = [value for value in rest if value is not counts[-1]]
    missing = [role for role in ("classes", "scores") if role not in found]
    if len(rest) < len(missing):
        raise ValueError(f"a detection post-process has 4 outputs (boxes, classes, scores, count); "
                         f"the model has {len(outputs)}")
    if len(missing) == 2:
        first, second = rest[:2]
        if _whole(second) and not _whole(first):
            first, second = second, first
        found["classes"], found["scores"] = first, second
    elif missing:
        found[missing[0]] = rest[0]
    return found


class PostprocessedDecoder:
    def __init__(self, spec: DetectionOutput, width: int, height: int):
        self.spec, self.width, self.height = spec, width, height
        names = spec.outputs
        self.named = {role: getattr(names, role) for role in ROLES} if names else {}

    def candidates(self, outputs: dict[str, np.ndarray]) -> list[Candidates]:
        tensors = assign_outputs(outputs, self.named)
        boxes, classes, scores = tensors["boxes"], tensors["classes"], tensors["scores"]
        counts = tensors["count"].reshape(len(boxes), -1)[:, 0]
        results = []
        for box, label, score, count in zip(boxes, classes.reshape(len(boxes), -1),
                                            scores.reshape(len(boxes), -1), counts, strict=True):
            valid = min(int(count), len(box))
            keep = np.flatnonzero(score[:valid] > self.spec.score_threshold)
            if keep.size == 0:
                results.append(Candidates.empty())
                continue
            ymin_xmin_ymax_xmax = box[keep].astype(np.float32)
            xyxy = ymin_xmin_ymax_xmax[:, [1, 0, 3, 2]]
            if is_normalized(self.spec.boxes, xyxy):
                xyxy = xyxy * np.array([self.width, self.height, self.width, self.height], dtype=np.float32)
            results.append(Candidates(xyxy, score[keep].astype(np.float32), label[keep].astype(np.int64)))
        return results
