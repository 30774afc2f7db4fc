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

from edge_runtime.card import ModelCard
from edge_runtime.detection import DetectionDecoder, Detections
from edge_runtime.detection.nms import iou_matrix

MATCH_IOU = 0.5
#: `score_error` decodes candidates at this share of the card's score threshold
LENIENT_THRESHOLD = 0.25


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


def score_error(reference: list[Detections], candidate: list[Detections]) -> float:
    """A continuous version of the matched-box loss, for ranking what hurts before a box is actually lost: per box
    of the original, 1 - IoU x min(1, score ratio) of its best same-class box in the candidate's detections (decode
    those with a lower score threshold, so a box that fell just under the card's threshold still counts as nearly
    kept); 1 for a box with no overlapping box at all. Mean over the original's boxes; 0 when identical."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} images against {len(candidate)}")
    losses = []
    for left, right in zip(reference, candidate, strict=True):
        if not len(left):
            continue
        if not len(right):
            losses.append(np.ones(len(left)))
            continue
        overlap = iou_matrix(left.boxes, right.boxes)
        overlap[left.classes[:, None] != right.classes[None, :]] = 0.0
        ratio = np.minimum(1.0, right.scores[None, :] / np.maximum(left.scores[:, None], 1e-9))
        losses.append(1.0 - np.max(overlap * ratio, axis=1))
    return float(np.mean(np.concatenate(losses))) if losses else 0.0


def lenient_decoder(card: ModelCard) -> DetectionDecoder:
    """The card's decoder at a quarter of its score threshold: what `score_error` reads a candidate's boxes with."""
    output = card.output.model_copy(update={"score_threshold": card.output.score_threshold * LENIENT_THRESHOLD})
    return DetectionDecoder(card.model_copy(update={"output": output}))
