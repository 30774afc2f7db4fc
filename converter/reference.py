"""Reference statistics that drift detection on the device compares live data against.

Per input channel: quantile bin edges from the calibration data (fixed, so the device never re-derives bins from
new data), the share of values in each bin, min/max/mean/std. For classifiers the same histograms per class,
because a real stream holds long runs of one class and must be compared against that class's reference, not the
mixture of all. For the outputs: the class distribution and a confidence histogram.
"""

from __future__ import annotations

import numpy as np

from converter.data import Dataset
from converter.sensor_reference import sensor_drift_section
from edge_runtime.card import ModelCard

REFERENCE_SCHEMA = 1
QUANTILE_BINS = 10
CONFIDENCE_EDGES = [round(x, 2) for x in np.linspace(0.0, 1.0, 11)]


def channel_axis(card: ModelCard | None, input_name: str, rank: int) -> int:
    """Which axis of a batched input indexes channels: the card's, else 1 (NCHW, NCW, [batch, features])."""
    if card is not None and card.input.name in (None, input_name):
        return card.input.channel_axis
    return 1 if rank >= 2 else 0


def _by_channel(array: np.ndarray, axis: int) -> np.ndarray:
    """[channels, values]: every value of a channel across samples and positions."""
    if array.ndim == 1:
        return array.reshape(1, -1)
    moved = np.moveaxis(array, axis, 0)
    return moved.reshape(moved.shape[0], -1).astype(np.float64)


def _quantile_edges(values: np.ndarray) -> list[float]:
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, QUANTILE_BINS + 1)))
    if len(edges) < 2:  # a constant channel: one bin around the value
        edges = np.array([values[0] - 0.5, values[0] + 0.5]) if values.size else np.array([0.0, 1.0])
    return [float(edge) for edge in edges]


def bin_shares(values: np.ndarray, edges: list[float]) -> list[float]:
    """Share of values per bin; values outside the edges count in the outer bins, as on the device."""
    inner = np.asarray(edges[1:-1])
    counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(edges) - 1)
    return [float(count) for count in counts / max(len(values), 1)]


def _channel_summary(values: np.ndarray, edges: list[float]) -> dict:
    return {
        "count": int(values.size),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "shares": bin_shares(values, edges),
    }


def _confidences(scores: np.ndarray, kind: str) -> np.ndarray:
    rows = scores.reshape(len(scores), -1).astype(np.float64)
    sums = rows.sum(axis=1)
    probabilities = kind == "probabilities" or (
        kind == "auto" and np.all(rows >= 0) and np.allclose(sums, 1.0, atol=1e-3)
    )
    if not probabilities:
        rows = np.exp(rows - rows.max(axis=1, keepdims=True))
        rows /= rows.sum(axis=1, keepdims=True)
    return rows.max(axis=1)


def reference_statistics(
    calibration: Dataset, scores: np.ndarray, card: ModelCard | None, *, classification: bool
) -> dict:
    """Statistics of model-ready inputs and of the model's outputs on the calibration data."""
    labels = card.labels if card and card.labels else None
    predicted = np.argmax(scores.reshape(len(scores), -1), axis=1) if classification else None
    class_ids, class_source = (
        (calibration.labels, "labels")
        if calibration.labels is not None
        else (
            predicted,
            "predictions",
        )
    )
    inputs = {}
    for name, array in calibration.inputs.items():
        axis = channel_axis(card, name, array.ndim)
        channels = []
        for values in _by_channel(array, axis):
            edges = _quantile_edges(values)
            channels.append({"edges": edges, **_channel_summary(values, edges)})
        entry: dict = {"channel_axis": axis, "channels": channels}
        if classification and class_ids is not None:
            per_class = {}
            for class_id in np.unique(class_ids):
                rows = array[class_ids == class_id]
                per_class[str(int(class_id))] = [
                    _channel_summary(values, channel["edges"])
                    for values, channel in zip(_by_channel(rows, axis), channels, strict=True)
                ]
            entry["per_class"] = per_class
        inputs[name] = entry
    outputs: dict = {"kind": "classification" if classification else "regression"}
    if classification:
        count = scores.reshape(len(scores), -1).shape[1]
        distribution = np.bincount(predicted, minlength=count) / len(predicted)
        confidence = _confidences(scores, card.output.scores if card else "auto")
        outputs.update(
            {
                "classes": labels or [str(index) for index in range(count)],
                "class_source": class_source,
                "predicted_distribution": [float(share) for share in distribution],
                "confidence": {
                    "edges": CONFIDENCE_EDGES,
                    "shares": bin_shares(confidence, CONFIDENCE_EDGES),
                    "mean": float(confidence.mean()),
                    "std": float(confidence.std()),
                },
            }
        )
        if calibration.labels is not None:
            outputs["label_distribution"] = [
                float(share) for share in np.bincount(calibration.labels, minlength=count) / len(calibration.labels)
            ]
    else:
        flat = scores.reshape(len(scores), -1).astype(np.float64)
        outputs["values"] = {"mean": flat.mean(axis=0).tolist(), "std": flat.std(axis=0).tolist()}
    document = {
        "schema": REFERENCE_SCHEMA,
        "source": calibration.source,
        "samples": len(calibration),
        "inputs": inputs,
        "outputs": outputs,
    }
    drift = _drift(calibration, predicted, card, classification)
    if drift is not None:
        document["drift"] = drift
    sensor = sensor_drift_section(calibration, card)  # cameras and microphones: ranges of frame statistics
    if sensor is not None:
        document["sensor_drift"] = sensor
    return document


def _drift(calibration: Dataset, predicted: np.ndarray | None, card: ModelCard | None, classification: bool
           ) -> dict | None:
    """The on-device drift reference with cross-fitted thresholds, for single-input sensor models with a card."""
    from converter.drift_calibration import drift_section

    if card is None or len(calibration.inputs) != 1:
        return None
    name, array = next(iter(calibration.inputs.items()))
    if card.input.name not in (None, name):
        return None
    n_classes = len(card.labels) if (classification and card.labels) else 1
    windows = predicted if (classification and predicted is not None) else np.zeros(len(array), dtype=np.int64)
    labels = calibration.labels if n_classes > 1 else None
    return drift_section(array, labels, windows, card, n_classes)
