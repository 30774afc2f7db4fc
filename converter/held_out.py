"""Judging a candidate int8 graph before the gate does: on calibration samples, with the gate's own measure.

The calibration method, the int8 region and the nodes left in float are all chosen by comparing candidate graphs
with the float model. They must be compared the way the gate will judge the bundle: for a detector that is the
matched-box rate of the decoded detections, not the cosine of the raw head tensor (box coordinates of 0-320 next
to class scores of 0-1 keep the cosine at 0.999 while half the boxes are lost). Alongside the gate's measure, a
continuous error ranks candidates the gate's measure cannot tell apart (on a few images, most lose no box).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from converter.conversion import Conversion
from converter.data import Dataset
from converter.detection_fidelity import lenient_decoder, match_boxes, score_error
from converter.evaluate import compare


@dataclass(frozen=True)
class Judgement:
    loss: float  # the gate's measure against the float model: matched boxes lost, accuracy or agreement lost...
    error: float  # continuous: detectors `score_error`, other models the mean relative L2 error of the output
    agreement: float | None  # top-1 or decision agreement of the gate's output (None for a plain regression)
    cosine_mean: float

    @property
    def key(self) -> tuple[float, float]:
        """Sort key: lower is better."""
        return round(self.loss, 9), self.error


def relative_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over samples of |candidate - reference| / |reference| (L2 norms over each sample's values)."""
    left = reference.reshape(len(reference), -1).astype(np.float64)
    right = candidate.reshape(len(candidate), -1).astype(np.float64)
    norms = np.maximum(np.linalg.norm(left, axis=1), 1e-12)
    return float(np.mean(np.linalg.norm(right - left, axis=1) / norms)) if len(left) else 0.0


class HeldOutJudge:
    """Candidates against the float `model` on `data`; the float model runs once."""

    def __init__(self, conversion: Conversion[onnx.ModelProto], model: onnx.ModelProto, data: Dataset):
        self.conversion, self.data = conversion, data
        self.reference = conversion.run(model, data, "held-out (float)")
        self.detections = conversion.detections(self.reference) if conversion.detector is not None else None
        self.lenient = lenient_decoder(conversion.card) if conversion.detector is not None else None

    def __call__(self, model: onnx.ModelProto, label: str) -> Judgement:
        conversion, name = self.conversion, self.conversion.output_name
        outputs = conversion.run(model, self.data, label)
        fidelity = compare(self.reference[name], outputs[name], classification=conversion.classification,
                           threshold=conversion.threshold)
        if self.detections is not None:
            loss = 1.0 - match_boxes(self.detections, conversion.detections(outputs)).rate
            error = score_error(self.detections, self.lenient.decode(outputs))
        else:
            loss = conversion.data_loss(self.data, self.reference[name], outputs[name])
            error = relative_error(self.reference[name], outputs[name])
        return Judgement(float(loss), float(error), fidelity.agreement, fidelity.cosine_mean)
