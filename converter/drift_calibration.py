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

from converter.drift_variance import DESIGN_SHIFT, CusumDesign, Q, cusum_design, pseudo_recordings
from converter.drift_windows import single_recording_metrics
from edge_runtime.card import FeatureInput, ModelCard, TimeSeriesInput
from edge_runtime.drift.monitor import DriftMonitor, Thresholds
from edge_runtime.drift.reference import DriftReference, build_reference

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
    width: int = 1  # samples per model input window: how long a class change takes to reach the predictions

    @property
    def class_lag(self) -> int:
        """Predictions between a hop's arrival and the prediction of the window centred on it (the monitor's
        `class_lag`)."""
        return round(self.width / 2 / self.hop) if self.width > self.hop else 0


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
    return SampleStream(values, np.concatenate(labels).astype(np.int64), segments, hop=min(hop, width), width=width)


def _fold_of(recordings: list[tuple[int, int, int]]) -> list[int]:
    """The fold of each (pseudo-)recording: every class's recordings, in stream order, split into FOLDS contiguous
    groups, so every fold holds every class, no recording is split between a fold and the reference it is compared
    with, and a pseudo-recording's neighbours (which may be cut from the same real recording) mostly share its
    fold rather than the reference."""
    folds = [0] * len(recordings)
    for cls in {c for _, _, c in recordings}:
        own = [index for index, (_, _, c) in enumerate(recordings) if c == cls]
        for position, index in enumerate(own):
            folds[index] = position * FOLDS // len(own)
    return folds


def class_tour(k: int) -> list[int]:
    """Classes in an order where every class follows every other once (an Eulerian circuit of the complete directed
    graph, Hierholzer's algorithm): a device meets every change of activity, and each one has its own lag."""
    if k < 2:
        return list(range(k))
    unused = {a: [b for b in range(k) if b != a] for a in range(k)}
    stack, tour = [0], []
    while stack:
        if unused[stack[-1]]:
            stack.append(unused[stack[-1]].pop())
        else:
            tour.append(stack.pop())
    return tour[::-1]


def _toured(recordings: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """A fold's recordings as a stream that visits the classes in `class_tour` order, each visit playing the class's
    next recordings (again from its first when they run out)."""
    by_class: dict[int, list[tuple[int, int]]] = {}
    for a, b, cls in sorted(recordings):
        by_class.setdefault(cls, []).append((a, b))
    classes = sorted(by_class)
    tour = [classes[index] for index in class_tour(len(classes))]
    visits = {cls: tour.count(cls) for cls in classes}
    taken = dict.fromkeys(classes, 0)
    out = []
    for cls in tour:
        own = by_class[cls]
        per_visit = -(-len(own) // visits[cls])
        out += [own[(taken[cls] + i) % len(own)] for i in range(per_visit)]
        taken[cls] += per_visit
    return out


def _feed(monitor: DriftMonitor, stream: SampleStream, segments: list[tuple[int, int]], predicted: np.ndarray,
          record) -> None:
    """Stream the segments one after the other, a hop per update, as the device would. The class of a hop is what
    most of the model's window ending there predicts: the calibration windows never straddle two activities, a
    device's do, and for about half a window after a change the model still names the old one. Those hops are
    judged against the wrong class, and the cross-fitted thresholds must have seen that happen."""
    labels = np.concatenate([predicted[start:end] for start, end in segments])
    done = 0
    for start, end in segments:
        for block in range(start, end, stream.hop):
            rows = slice(block, min(block + stream.hop, end))
            done += rows.stop - rows.start
            monitor.update(stream.values[rows], int(np.bincount(labels[max(0, done - stream.width) : done]).argmax()))
            record(monitor)


def reference_with_design(stream: SampleStream, recordings: list[tuple[int, int, int]], n_classes: int,
                          cut: set[int] = frozenset()) -> tuple[DriftReference, CusumDesign]:
    """The drift reference of these recordings of the stream, with the CUSUM's per-class scale and slack from their
    variance components (converter/drift_variance.py)."""
    classes = n_classes if n_classes > 1 else None
    pieces, offset = [], 0
    local = []
    for a, b, cls in recordings:
        pieces.append(np.arange(a, b))
        local.append((offset, offset + b - a, cls))
        offset += b - a
    rows = np.concatenate(pieces)
    values, labels = stream.values[rows], stream.classes[rows]
    reference = build_reference(values, labels if classes else None, n_classes,
                                segments=[(a, b) for a, b, _ in local])
    k = reference.classes
    design = cusum_design(values, labels if classes else np.zeros(len(values), dtype=np.int64), k,
                          local if classes else [(a, b, 0) for a, b, _ in local], stream.hop, reference.std, cut)
    reference.mean_scale, reference.cusum_slack = design.scale, design.slack
    return reference, design


def _pairs(values: np.ndarray, floor: float) -> list:
    """(warning, drift) bounds from the largest clean values, elementwise over the last axis's leading shape."""
    warning = np.maximum(values * WARNING_MARGIN, floor)
    drift = np.maximum(values * DRIFT_MARGIN, floor * DRIFT_MARGIN)
    return np.round(np.stack([warning, drift], axis=-1), 4).tolist()


def calibrate(stream: SampleStream, predicted: np.ndarray, n_classes: int, window: int = DEFAULT_WINDOW
              ) -> tuple[Thresholds, dict]:
    """Cross-fitted thresholds for a monitor of `window` samples; also returns what was observed."""
    recordings, cut = pseudo_recordings(
        stream.classes if n_classes > 1 else np.zeros(len(stream.values), np.int64), stream.segments, stream.hop)
    fold_of = _fold_of(recordings)
    folds = [_toured([r for r, f in zip(recordings, fold_of, strict=True) if f == index]) for index in range(FOLDS)]
    fold_sizes = [sum(b - a for (a, b, _), f in zip(recordings, fold_of, strict=True) if f == index)
                  for index in range(FOLDS)]
    window = int(min(window, max(50, min(fold_sizes) // 2)))
    channels = stream.values.shape[1]
    k = max(n_classes, 1)
    observed = {metric: np.zeros(channels) for metric in FLOORS}
    # the window metrics per class too: a streamed window counts for the class most of it was predicted as
    by_class = {metric: np.zeros((k, channels)) for metric in ("psi", "js")}
    single_max = {metric: np.zeros((k, channels)) for metric in ("psi", "js")}
    longest_run = 1
    evaluations = 0
    for index, fold in enumerate(folds):
        others = [r for r, f in zip(recordings, fold_of, strict=True) if f != index]
        reference, _ = reference_with_design(stream, others, n_classes, cut)
        monitor = DriftMonitor(reference, Thresholds(), window=window, class_lag=stream.class_lag)
        pooled = reference.classes == 1

        def record(m: DriftMonitor, pooled: bool = pooled) -> None:
            nonlocal longest_run, evaluations
            values = m.metrics()
            observed["cusum"] = np.maximum(observed["cusum"], values["cusum"])
            longest_run = max(longest_run, int(values["run"].max()))
            if m.filled:
                evaluations += 1
                for metric in ("psi", "js", "out_of_range"):
                    observed[metric] = np.maximum(observed[metric], values[metric])
                dominant = 0 if pooled else int(np.argmax(m.class_weights()))
                for metric in by_class:
                    by_class[metric][dominant] = np.maximum(by_class[metric][dominant], values[metric])

        _feed(monitor, stream, fold, predicted, record)
        # a window inside one new recording, which the mixed windows of the stream above understate
        held_out = [r for r, f in zip(recordings, fold_of, strict=True) if f == index]
        single = single_recording_metrics(stream.values, held_out, reference, window, cut)
        for metric in single_max:
            single_max[metric][: len(single[metric])] = np.maximum(single_max[metric][: len(single[metric])],
                                                                   single[metric])
    streamed = {metric: observed[metric].copy() for metric in by_class}
    for metric in by_class:
        by_class[metric] = np.maximum(by_class[metric], single_max[metric])
        observed[metric] = np.maximum(observed[metric], by_class[metric].max(axis=0))
    bounds = {metric: _pairs(per_channel, FLOORS[metric]) for metric, per_channel in observed.items()}
    per_class = {f"{metric}_by_class": _pairs(values, FLOORS[metric]) for metric, values in by_class.items()}
    thresholds = Thresholds(**bounds, **(per_class if n_classes > 1 else {}), stuck_run=max(20, 2 * longest_run))
    details = {
        "method": f"cross-fitted over {FOLDS} folds of whole recordings; warning = {WARNING_MARGIN} x and drift = "
                  f"{DRIFT_MARGIN} x the largest value each metric reached on held-out clean data (PSI and JS per "
                  "class, and also predicted for a window inside one held-out recording)",
        "window": window,
        "recordings": len(recordings),
        "recording_boundaries": "cut from runs" if cut else "seen",
        "evaluations": evaluations,
        "observed_max": {metric: [round(float(v), 4) for v in value] for metric, value in observed.items()},
        "streamed_max": {metric: [round(float(v), 4) for v in value] for metric, value in streamed.items()},
        "single_recording_max": {metric: np.round(value, 4).tolist() for metric, value in single_max.items()},
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
    recordings, cut = pseudo_recordings(
        stream.classes if n_classes > 1 else np.zeros(len(stream.values), np.int64), stream.segments, stream.hop)
    reference, design = reference_with_design(stream, recordings, n_classes, cut)
    details["cusum"] = _design_summary(design)
    spec = card.input
    names = getattr(spec, "channel_names", None) or getattr(spec, "feature_names", None)
    return {
        "schema": 1,
        "window": details["window"],
        "hop": stream.hop,
        "class_lag": stream.class_lag,
        "samples": len(stream.values),
        "runs": len(stream.segments),
        "class_source": "labels" if labels is not None else "predictions",
        "channel_names": names or [f"ch{index}" for index in range(stream.values.shape[1])],
        "reference": reference.as_dict(),
        "thresholds": thresholds.as_dict(),
        "calibration": details,
    }


def _design_summary(design: CusumDesign) -> dict:
    """What the report shows of the CUSUM design: per class and channel, in normalised units."""
    def rounded(array: np.ndarray) -> list:
        return np.round(array, 4).tolist()

    return {"method": f"random-effects variance components per class: slack = max({DESIGN_SHIFT} / 2, {Q} x the "
                      "predicted sd of a new recording's offset), in units of the long-run sd of a hop mean",
            "recordings_per_class": design.recordings.tolist(), "hop_scale": rounded(design.scale),
            "between_recordings_sd": rounded(design.between), "offset_sd": rounded(design.offset_sd),
            "slack": rounded(design.slack)}
