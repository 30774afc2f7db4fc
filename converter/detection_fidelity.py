"""Detection fidelity: how many of the original model's boxes a converted model still finds.

Both models' outputs are decoded by the device's own decoder (edge_runtime/detection) with the card's thresholds,
so the comparison is between the detections the device would publish. A box matches when the other model has a
box of the same class overlapping it with IoU >= 0.5 (each box matched at most once, best scores first). The
matched-box rate is matched pairs over the larger of the two box counts, so boxes lost and boxes invented both
count against it; it is what the accuracy gate measures for detectors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from edge_runtime.detection import Detections
from edge_runtime.detection.nms import iou_matrix

MATCH_IOU = 0.5


@dataclass(frozen=True)
class BoxMatch:
    images: int
    original: int  # boxes the original model found
    candidate: int  # boxes the converted model found
    matched: int

    @property
    def rate(self) -> float:
        """Matched pairs over the larger box count; 1.0 when neither model found anything."""
        larger = max(self.original, self.candidate)
        return self.matched / larger if larger else 1.0

    def as_dict(self) -> dict:
        return {**asdict(self), "rate": round(self.rate, 6)}


def _matched(reference: Detections, candidate: Detections) -> int:
    if not len(reference) or not len(candidate):
        return 0
    overlap = iou_matrix(reference.boxes, candidate.boxes)
    overlap[reference.classes[:, None] != candidate.classes[None, :]] = 0.0
    used = np.zeros(len(candidate), dtype=bool)
    matched = 0
    for row in np.argsort(-reference.scores, kind="stable"):
        ious = np.where(used, 0.0, overlap[row])
        best = int(np.argmax(ious))
        if ious[best] >= MATCH_IOU:
            used[best] = True
            matched += 1
    return matched


def match_boxes(reference: list[Detections], candidate: list[Detections]) -> BoxMatch:
    """Compare two models' detections on the same images, image by image."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} images against {len(candidate)}")
    return BoxMatch(
        images=len(reference),
        original=sum(len(found) for found in reference),
        candidate=sum(len(found) for found in candidate),
        matched=sum(_matched(left, right) for left, right in zip(reference, candidate, strict=True)),
    )


def summary(found: list[Detections], labels: list[str] | None) -> dict:
    """What the original model found on the verification images: boxes per label, images with any."""
    counts: Counter[str] = Counter()
    for frame in found:
        for index in frame.classes:
            counts[labels[index] if labels and 0 <= index < len(labels) else str(int(index))] += 1
    return {"images": len(found), "images_with_boxes": sum(1 for frame in found if len(frame)),
            "boxes": sum(counts.values()), "by_label": dict(counts.most_common())}
