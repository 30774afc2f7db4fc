"""From model outputs to what a prediction message says: a label and a score, values (and a decision when the
card gives the regression output a threshold), or detections."""

from __future__ import annotations

import numpy as np

from edge_runtime.card import ModelCard
from edge_runtime.detection import DetectionDecoder, ImageTransform


def _as_probabilities(rows: np.ndarray, scores: str) -> np.ndarray:
    """Softmax logits; pass probabilities through. `auto` looks at the rows: non-negative and summing to 1."""
    rows = rows.astype(np.float64)
    is_probability = scores == "probabilities" or (
        scores == "auto" and bool(np.all(rows >= 0)) and bool(np.allclose(rows.sum(axis=1), 1.0, atol=1e-3))
    )
    if is_probability:
        return rows
    shifted = np.exp(rows - rows.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def decide(values: np.ndarray, threshold: float) -> bool:
    """A regression output's decision (speech / no speech): true when any value reaches the threshold. The
    converter judges a converted model by the same function, so the gate counts the decisions a device publishes."""
    return bool(np.max(values) >= threshold) if np.size(values) else False


def predictions(output: np.ndarray, card: ModelCard | None) -> list[dict]:
    """One dict per batch row: `label`, `class` and `score` for classifiers, `values` otherwise."""
    rows = output.reshape(len(output), -1)
    kind = card.output.kind if card else ("classification" if rows.shape[1] > 1 else "regression")
    if kind != "classification":
        threshold = card.output.threshold if card else None
        if threshold is None:
            return [{"values": [float(value) for value in row]} for row in rows]
        return [{"values": [float(value) for value in row], "decision": decide(row, threshold)} for row in rows]
    probabilities = _as_probabilities(rows, card.output.scores if card else "auto")
    labels = card.labels if card and card.labels else None
    results = []
    for row in probabilities:
        index = int(np.argmax(row))
        label = labels[index] if labels and index < len(labels) else str(index)
        results.append({"label": label, "class": index, "score": round(float(row[index]), 6)})
    return results


def detections(decoder: DetectionDecoder, outputs: dict[str, np.ndarray],
               transforms: list[ImageTransform | None]) -> list[dict]:
    """One dict per frame: `detections`, a list of `{label, score, box}` with box x1, y1, x2, y2 in the frame's
    pixels, best first; a frame with nothing found is `{"detections": []}`."""
    return [{"detections": found.as_dicts(decoder.labels)} for found in decoder.decode(outputs, transforms)]
