"""Drift reference and thresholds, calibrated honestly on the calibration data itself.

Fixed PSI bands (0.1/0.25) are wrong for small windows and for per-class comparisons, so every threshold is
measured: the calibration stream is split into folds of whole contiguous runs (recordings), each fold is streamed
through the device's own `DriftMonitor` in its given order, against a reference built from the *other* folds
(cross-fitting), and the largest value each metric reaches on this clean data, with a margin, becomes its warning
bound; twice that, its drift bound. Nothing is tuned on the samples it is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime.card import FeatureInput, ModelCard, TimeSeriesInput
from edge_runtime.drift.monitor import DriftMonitor, Thresholds
from edge_runtime.drift.reference import build_reference

FOLDS = 4
DEFAULT_WINDOW = 500
WARNING_MARGIN = 2.0
DRIFT_MARGIN = 3.0
FLOORS = {"psi": 0.05, "js": 0.05, "out_of_range": 0.01, "cusum": 4.0}


@dataclass
class SampleStream:
    """Calibration inputs as the device sees them: one row per sample, its class, and where runs break."""

    values: np.ndarray  # [T, C]
    classes: np.ndarray  # [T]
    segments: list[tuple[int, int]]  # contiguous runs [start, end)
    hop: int


def sample_stream(inputs: np.ndarray, classes: np.ndarray, card: ModelCard) -> SampleStream | None:
    """Undo the windowing: consecutive windows that overlap by window - hop continue one run; anything else
    starts a new run. Each window's class goes to the samples it added. None for inputs without a stream."""
    spec = card.input
    if isinstance(spec, FeatureInput):
        values = inputs.reshape(len(inputs), -1).astype(np.float64)
        return SampleStream(values, classes.astype(np.int64), [(0, len(values))], hop=1)
    if not isinstance(spec, TimeSeriesInput):
        return None
    windows = inputs if spec.layout == "channels_last" else np.transpose(inputs, (0, 2, 1))  # [N, W, C]
    width, hop = windows.shape[1], spec.hop
    rows, labels, segments = [], [], []
    start = 0
    previous = None
    for window, cls in zip(windows, classes, strict=True):
        continues = previous is not None and hop < width and np.array_equal(window[: width - hop], previous[hop:])
        if continues:
            rows.append(window[width - hop :])
            labels.append(np.full(hop, cls))
        else:
            if rows:
                end = sum(len(r) for r in rows)
                segments.append((start, end))
                start = end
            rows.append(window)
            labels.append(np.full(width, cls))
        previous = window
    values = np.concatenate(rows).astype(np.float64)
    segments.append((start, len(values)))
    return SampleStream(values, np.concatenate(labels).astype(np.int64), segments, hop=min(hop, width))


def _folds(stream: SampleStream) -> list[list[tuple[int, int]]]:
    """Whole runs dealt round-robin into folds, so every fold holds several classes; a single long run is cut
    into chunks first."""
    segments = stream.segments
    if len(segments) < 2 * FOLDS:
        total = len(stream.values)
        cuts = np.linspace(0, total, 2 * FOLDS + 1).astype(int)
        segments = [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]
    return [segments[index::FOLDS] for index in range(FOLDS)]


def _feed(monitor: DriftMonitor, stream: SampleStream, segments: list[tuple[int, int]], predicted: np.ndarray,
          record) -> None:
    for start, end in segments:
        for block in range(start, end, stream.hop):
            rows = slice(block, min(block + stream.hop, end))
            monitor.update(stream.values[rows], int(np.bincount(predicted[rows]).argmax()))
            record(monitor)


def calibrate(stream: SampleStream, predicted: np.ndarray, n_classes: int, window: int = DEFAULT_WINDOW
              ) -> tuple[Thresholds, dict]:
    """Cross-fitted thresholds for a monitor of `window` samples; also returns what was observed."""
    folds = _folds(stream)
    fold_sizes = [sum(end - start for start, end in fold) for fold in folds]
    window = int(min(window, max(50, min(fold_sizes) // 2)))
    channels = stream.values.shape[1]
    observed = {metric: np.zeros(channels) for metric in FLOORS}
    longest_run = 1
    evaluations = 0
    classes = n_classes if n_classes > 1 else None
    for index, fold in enumerate(folds):
        runs = [run for other, segments in enumerate(folds) if other != index for run in segments]
        rows = np.concatenate([np.arange(start, end) for start, end in runs])
        offsets = np.cumsum([0] + [end - start for start, end in runs])
        reference = build_reference(stream.values[rows], stream.classes[rows] if classes else None, n_classes,
                                    segments=list(zip(offsets[:-1], offsets[1:], strict=True)))
        monitor = DriftMonitor(reference, Thresholds(), window=window)

        def record(m: DriftMonitor) -> None:
            nonlocal longest_run, evaluations
            values = m.metrics()
            observed["cusum"] = np.maximum(observed["cusum"], values["cusum"])
            longest_run = max(longest_run, int(values["run"].max()))
            if m.filled:
                evaluations += 1
                for metric in ("psi", "js", "out_of_range"):
                    observed[metric] = np.maximum(observed[metric], values[metric])

        _feed(monitor, stream, fold, predicted, record)
    bounds = {
        metric: [
            (round(max(value * WARNING_MARGIN, FLOORS[metric]), 4),
             round(max(value * DRIFT_MARGIN, FLOORS[metric] * DRIFT_MARGIN), 4))
            for value in per_channel
        ]
        for metric, per_channel in observed.items()
    }
    thresholds = Thresholds(**bounds, stuck_run=max(20, 2 * longest_run))
    details = {
        "method": f"cross-fitted over {FOLDS} folds of whole runs; warning = {WARNING_MARGIN} x and drift = "
                  f"{DRIFT_MARGIN} x the largest value each metric reached on held-out clean data",
        "window": window,
        "evaluations": evaluations,
        "observed_max": {metric: [round(float(v), 4) for v in value] for metric, value in observed.items()},
        "longest_identical_run": longest_run,
    }
    return thresholds, details


def drift_section(inputs: np.ndarray, labels: np.ndarray | None, predicted_windows: np.ndarray, card: ModelCard,
                  n_classes: int) -> dict | None:
    """The `drift` part of the bundle's reference statistics: reference, thresholds and how they were found."""
    classes_for_reference = labels if labels is not None else predicted_windows
    stream = sample_stream(inputs, classes_for_reference, card)
    if stream is None:
        return None
    predicted = sample_stream(inputs, predicted_windows, card).classes
    thresholds, details = calibrate(stream, predicted, n_classes)
    reference = build_reference(stream.values, stream.classes if n_classes > 1 else None, n_classes,
                                segments=stream.segments)
    spec = card.input
    names = getattr(spec, "channel_names", None) or getattr(spec, "feature_names", None)
    return {
        "schema": 1,
        "window": details["window"],
        "hop": stream.hop,
        "samples": len(stream.values),
        "runs": len(stream.segments),
        "class_source": "labels" if labels is not None else "predictions",
        "channel_names": names or [f"ch{index}" for index in range(stream.values.shape[1])],
        "reference": reference.as_dict(),
        "thresholds": thresholds.as_dict(),
        "calibration": details,
    }
