"""How close a converted model stays to the original: accuracy, top-1 agreement, cosine similarity."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Fidelity:
    """Candidate outputs compared with the original model's on the same samples."""

    samples: int
    agreement: float | None  # share of samples whose top-1 class matches the original's
    cosine_mean: float
    cosine_min: float
    max_abs_diff: float
    accuracy: float | None = None  # against labels, when the data has them
    matched_boxes: float | None = None  # detectors: the matched-box rate against the original's detections

    def as_dict(self) -> dict:
        return {key: (round(value, 6) if isinstance(value, float) else value) for key, value in asdict(self).items()}


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(scores.reshape(len(scores), -1), axis=1) == labels))


def _rows(array: np.ndarray) -> np.ndarray:
    return array.reshape(len(array), -1).astype(np.float64)


def decisions(rows: np.ndarray, threshold: float) -> np.ndarray:
    """Per row, what the device publishes as `decision` (edge_runtime.postprocess.decide): a value reaches the
    threshold."""
    return rows.max(axis=1) >= threshold if rows.shape[1] else np.zeros(len(rows), dtype=bool)


def compare(
    original: np.ndarray,
    candidate: np.ndarray,
    *,
    classification: bool,
    labels: np.ndarray | None = None,
    threshold: float | None = None,
) -> Fidelity:
    """Compare one output tensor of two models, sample by sample. `agreement` is top-1 agreement for a classifier,
    decision agreement for a regression output with a threshold (a voice-activity model: speech or not)."""
    left, right = _rows(original), _rows(candidate)
    norms = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
    dots = np.sum(left * right, axis=1)
    cosine = np.where(norms > 0, dots / np.maximum(norms, 1e-30), np.where(np.allclose(left, right), 1.0, 0.0))
    agreement = None
    if classification:
        agreement = float(np.mean(np.argmax(left, axis=1) == np.argmax(right, axis=1)))
    elif threshold is not None and len(left):
        agreement = float(np.mean(decisions(left, threshold) == decisions(right, threshold)))
    return Fidelity(
        samples=len(left),
        agreement=agreement,
        cosine_mean=float(np.mean(cosine)),
        cosine_min=float(np.min(cosine)),
        max_abs_diff=float(np.max(np.abs(left - right))) if left.size else 0.0,
        accuracy=accuracy(right, labels) if (classification and labels is not None) else None,
    )


def quality_loss(reference: Fidelity, candidate: Fidelity) -> float:
    """What the accuracy gate compares: for detectors the share of boxes not matched, else accuracy lost with
    labels, else the share of changed top-1 answers, else what the cosine similarity lost."""
    if candidate.matched_boxes is not None:
        return 1.0 - candidate.matched_boxes
    if reference.accuracy is not None and candidate.accuracy is not None:
        return reference.accuracy - candidate.accuracy
    if candidate.agreement is not None:
        return 1.0 - candidate.agreement
    return 1.0 - candidate.cosine_mean
