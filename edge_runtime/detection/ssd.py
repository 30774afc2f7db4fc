"""Anchor-based SSD heads (MediaPipe's BlazeFace, palm and pose detectors, SSD MobileNets without post-process).

The model predicts offsets relative to anchors that are not in the graph: they are generated from options exactly
as MediaPipe's SsdAnchorsCalculator does, and decoded as its TensorsToDetectionsCalculator does (box offsets
scaled by x/y/w/h_scale relative to the anchor, sigmoid scores clipped first). Both option sets are written in
the card under the same names as in the model's .pbtxt.
"""

from __future__ import annotations

import math

import numpy as np

from edge_runtime.card import DetectionOutput, SsdAnchors
from edge_runtime.detection.candidates import Candidates, pick_output


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    if count == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * index / (count - 1.0)


def ssd_anchors(options: SsdAnchors, input_height: int, input_width: int) -> np.ndarray:
    """[N, 4] anchors x_center, y_center, w, h (normalised), in MediaPipe's order (SsdAnchorsCalculator)."""
    height = options.input_size_height or input_height
    width = options.input_size_width or input_width
    strides = options.strides
    parts = []
    layer = 0
    while layer < options.num_layers:
        ratios, scales = [], []
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            scale = _scale(options.min_scale, options.max_scale, last, len(strides))
            if last == 0 and options.reduce_boxes_in_lowest_layer:
                ratios += [1.0, 2.0, 0.5]
                scales += [0.1, scale, scale]
            else:
                ratios += list(options.aspect_ratios)
                scales += [scale] * len(options.aspect_ratios)
                if options.interpolated_scale_aspect_ratio > 0:
                    following = (1.0 if last == len(strides) - 1
                                 else _scale(options.min_scale, options.max_scale, last + 1, len(strides)))
                    scales.append(math.sqrt(scale * following))
                    ratios.append(options.interpolated_scale_aspect_ratio)
            last += 1
        root = np.sqrt(np.asarray(ratios, dtype=np.float64))
        anchor_w = np.asarray(scales) * root
        anchor_h = np.asarray(scales) / root
        if options.feature_map_height:
            map_h, map_w = options.feature_map_height[layer], options.feature_map_width[layer]
        else:
            map_h, map_w = math.ceil(height / strides[layer]), math.ceil(width / strides[layer])
        y, x, a = np.meshgrid(np.arange(map_h), np.arange(map_w), np.arange(len(ratios)), indexing="ij")
        layer_anchors = np.empty((x.size, 4), dtype=np.float64)
        layer_anchors[:, 0] = (x.ravel() + options.anchor_offset_x) / map_w
        layer_anchors[:, 1] = (y.ravel() + options.anchor_offset_y) / map_h
        if options.fixed_anchor_size:
            layer_anchors[:, 2:] = 1.0
        else:
            layer_anchors[:, 2] = anchor_w[a.ravel()]
            layer_anchors[:, 3] = anchor_h[a.ravel()]
        parts.append(layer_anchors)
        layer = last
    return np.concatenate(parts).astype(np.float32)


class SsdDecoder:
    def __init__(self, spec: DetectionOutput, width: int, height: int):
        self.spec, self.width, self.height = spec, width, height
        self.anchors = ssd_anchors(spec.anchors, height, width)
        decoder = spec.decoder
        # per anchor, precomputed once: centre/size = raw * multiplier + offset in input pixels, both kept in the
        # model's own coordinate order (no column shuffle per call) and stacked so one gather fetches both
        pixels = np.array([width, height, width, height], np.float32)
        scales = np.array([decoder.x_scale, decoder.y_scale, decoder.w_scale, decoder.h_scale], np.float32)
        multiplier = self.anchors[:, [2, 3, 2, 3]] / scales * pixels
        offset = np.zeros_like(self.anchors)
        offset[:, :2] = self.anchors[:, :2] * pixels[:2]
        if decoder.apply_exponential_on_box_size:  # sizes are exp(raw / scale) * anchor size instead
            multiplier[:, 2:] = 1.0 / scales[2:]
        self._order = [0, 1, 2, 3] if decoder.reverse_output_order else [1, 0, 3, 2]
        inverse = np.argsort(self._order)  # model column -> x, y, w, h position
        self._affine = np.ascontiguousarray(np.stack([multiplier[:, inverse], offset[:, inverse]], axis=1))
        # x, y, w, h (in the model's column order) -> x1, y1, x2, y2 as one 4 x 4 product
        corners = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]], np.float32)
        self._corners = np.ascontiguousarray(corners[inverse])
        self._size_columns = [self._order[2], self._order[3]]  # model columns of w and h
        threshold = spec.score_threshold
        self._logit_threshold = (-np.inf if threshold <= 0 else np.inf if threshold >= 1
                                 else math.log(threshold / (1 - threshold)))
        clip = decoder.score_clipping_thresh
        # bounds on the negated logits: the lower one (-clip) always applies, the upper one (clip) only when the
        # threshold lets logits below -clip through
        self._clip_low = None if clip is None else np.float32(-clip)
        self._clip_high = None if clip is None or self._logit_threshold >= -clip else np.float32(clip)
        names = spec.outputs
        self.boxes_name = names.boxes if names else None
        self.scores_name = names.scores if names else None

    def _tensors(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(boxes [B, N, coords], scores [B, N, classes]): named in the card, else the first two outputs in
        MediaPipe's order (regressors, classificators)."""
        if self.boxes_name or self.scores_name:
            boxes = pick_output(outputs, self.boxes_name, "boxes") if self.boxes_name else None
            scores = pick_output(outputs, self.scores_name, "scores") if self.scores_name else None
            rest = [value for name, value in outputs.items() if name not in (self.boxes_name, self.scores_name)]
            boxes = boxes if boxes is not None else rest[0]
            scores = scores if scores is not None else rest[0]
        else:
            if len(outputs) < 2:
                raise ValueError(f"an SSD head has two outputs (boxes, scores); the model has {len(outputs)}")
            boxes, scores = list(outputs.values())[:2]
        if boxes.ndim == 2:
            boxes, scores = boxes[None], scores.reshape(1, len(scores), -1)
        if scores.ndim == 2:
            scores = scores[..., None]
        count = len(self.anchors)
        if boxes.ndim != 3 or boxes.shape[1] != count or scores.shape[:2] != (boxes.shape[0], count):
            raise ValueError(f"the anchor options make {count} anchors, but the boxes output is {list(boxes.shape)} "
                             f"and the scores output {list(scores.shape)} (expected [batch, {count}, ...])")
        if boxes.shape[2] < self.spec.decoder.box_coord_offset + 4:
            raise ValueError(f"boxes have {boxes.shape[2]} values each, fewer than box_coord_offset + 4")
        return boxes, scores

    def candidates(self, outputs: dict[str, np.ndarray]) -> list[Candidates]:
        boxes, scores = self._tensors(outputs)
        return [self._image(box, score) for box, score in zip(boxes, scores, strict=True)]

    def _image(self, raw_boxes: np.ndarray, raw_scores: np.ndarray) -> Candidates:
        """Threshold first, then decode only the anchors that passed: a frame has hundreds of anchors and a handful
        of candidates, so the per-call cost is a few numpy calls on small arrays."""
        decoder, threshold = self.spec.decoder, self.spec.score_threshold
        single = raw_scores.shape[1] == 1
        best = raw_scores[:, 0] if single else raw_scores.max(axis=1)
        if decoder.sigmoid_score:
            # sigmoid is monotonic: threshold the logits, clip and squash only the survivors
            keep = np.flatnonzero(best >= self._logit_threshold)
            if keep.size == 0:
                return Candidates.empty()
            # the survivors are >= the threshold's logit, so only the upper clip can apply (np.clip's own overhead
            # is several times that of np.minimum at these sizes); float32 is exact enough once clipped at 100
            negated = -best[keep].astype(np.float32, copy=False)
            if self._clip_low is not None:
                np.maximum(negated, self._clip_low, out=negated)
            if self._clip_high is not None:
                np.minimum(negated, self._clip_high, out=negated)
            scores = np.exp(negated)
            scores += 1.0
            np.reciprocal(scores, out=scores)
        else:
            keep = np.flatnonzero(best >= threshold)
            if keep.size == 0:
                return Candidates.empty()
            scores = best[keep].astype(np.float32, copy=False)
        classes = np.zeros(keep.size, np.int64) if single else raw_scores[keep].argmax(axis=1)
        offset = decoder.box_coord_offset
        affine = self._affine[keep]
        values = raw_boxes[keep, offset:offset + 4] * affine[:, 0] + affine[:, 1]  # x, y, w, h in model order
        if decoder.apply_exponential_on_box_size:
            sizes = self._size_columns
            values[:, sizes] = (np.exp(values[:, sizes]) * self.anchors[keep, 2:]
                                * np.array([self.width, self.height], np.float32))
        box = (values @ self._corners).astype(np.float32, copy=False)
        positive = box[:, 2:] > box[:, :2]
        if positive.all():
            return Candidates(box, scores, classes)
        valid = positive.all(axis=1)
        return Candidates(box[valid], scores[valid], classes[valid])
