"""From a detector's output tensors to detections in the source frame: decode (per format), NMS, map back.

One `DetectionDecoder` per model card; `decode` takes a batch's outputs and each frame's `ImageTransform` and
returns one `Detections` per frame, boxes in the frame's own pixels. Everything is vectorised numpy: decoding
and NMS cost a small fraction of the inference (benchmarks/detection.py measures it on the real models).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime.card import DetectionOutput, ImageInput, ModelCard
from edge_runtime.detection.candidates import Candidates
from edge_runtime.detection.geometry import ImageTransform
from edge_runtime.detection.nms import nms
from edge_runtime.detection.postprocessed import PostprocessedDecoder
from edge_runtime.detection.ssd import SsdDecoder
from edge_runtime.detection.yolo import YoloDecoder


@dataclass(frozen=True)
class Detections:
    """One frame's detections, best first: [K, 4] x1, y1, x2, y2, [K] scores, [K] class ids."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def as_dicts(self, labels: list[str] | None) -> list[dict]:
        """`[{label, score, box}]` as the prediction document carries them (box rounded to 0.1 pixel)."""
        def name(index: int) -> str:
            return labels[index] if labels and 0 <= index < len(labels) else str(index)

        return [{"label": name(int(index)), "score": round(float(score), 4),
                 "box": [round(float(value), 1) for value in box]}
                for box, score, index in zip(self.boxes, self.scores, self.classes, strict=True)]


class DetectionDecoder:
    """The decoder a card asks for; ValueError from `decode` when the outputs do not fit the card."""

    def __init__(self, card: ModelCard):
        spec, image = card.output, card.input
        if not isinstance(spec, DetectionOutput) or not isinstance(image, ImageInput):
            raise ValueError(f"model {card.name} is not a detector (output kind {spec.kind}, input {image.kind})")
        self.spec, self.labels = spec, card.labels
        self.width, self.height = image.width, image.height
        if spec.format == "yolo":
            self.format = YoloDecoder(spec, image.width, image.height, len(card.labels) if card.labels else None)
        elif spec.format == "ssd":
            self.format = SsdDecoder(spec, image.width, image.height)
        else:
            self.format = PostprocessedDecoder(spec, image.width, image.height)
        self.suppress = spec.format != "postprocessed"  # a post-processed graph has run its own NMS

    def decode(self, outputs: dict[str, np.ndarray],
               transforms: list[ImageTransform | None] | None = None) -> list[Detections]:
        """Detections per frame; a None transform (or none given) keeps boxes in model-input pixels."""
        candidates = self.format.candidates(outputs)
        transforms = transforms if transforms is not None else [None] * len(candidates)
        if len(transforms) != len(candidates):
            raise ValueError(f"{len(transforms)} frames but outputs for {len(candidates)}")
        return [self._frame(found, transform) for found, transform in zip(candidates, transforms, strict=True)]

    def _frame(self, found: Candidates, transform: ImageTransform | None) -> Detections:
        spec = self.spec
        if self.suppress:
            keep = nms(found.boxes, found.scores, found.classes, spec.iou_threshold, spec.max_detections)
        else:
            keep = np.argsort(-found.scores, kind="stable")[:spec.max_detections]
        boxes = found.boxes[keep]
        if transform is not None:
            boxes = transform.to_source(boxes)
        return Detections(boxes, found.scores[keep], found.classes[keep])
