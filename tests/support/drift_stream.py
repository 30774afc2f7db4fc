"""Stream real held-out sensor data through the model and a drift monitor, exactly as the daemon does, with
sensor faults injected from a chosen sample on. Shared by the drift tests and benchmarks/drift.py.

The stream is the held-out BasicMotions recordings (those neither the calibration nor the converter's evaluation
saw; sample_models/recording.py) in class runs of 1,000 samples, raw units; faults are applied to raw values, the
way a broken sensor would deliver them. The held-out half has 2,000 distinct samples, so longer clean streams are
the same recordings in other class orders (`CLASS_ORDERS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from converter.drift_calibration import drift_section
from edge_runtime.card import ModelCard
from edge_runtime.drift.monitor import DriftMonitor, Thresholds
from edge_runtime.drift.reference import DriftReference
from edge_runtime.postprocess import predictions
from edge_runtime.stream import SampleBlock
from edge_runtime.window import Preprocessor, SlidingWindow
from edge_runtime.yaml_source import load_model
from sample_models import SampleModel
from sample_models.recording import activity_stream

CLASS_RUN = 1000  # samples of each activity in a row
#: class orders of the clean streams: every class follows every other and runs first and last once
CLASS_ORDERS = ((0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2), (2, 0, 3, 1))

Fault = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (values [n, C], pooled std [C]) -> faulty values


def offset(channel: int, sigmas: float) -> Fault:
    return lambda values, std: values + np.eye(values.shape[1])[channel] * sigmas * std


def gain(channel: int, factor: float) -> Fault:
    def apply(values: np.ndarray, std: np.ndarray) -> np.ndarray:
        out = values.copy()
        out[:, channel] *= factor
        return out

    return apply


def noise(channel: int, sigmas: float, seed: int = 0) -> Fault:
    rng = np.random.default_rng(seed)

    def apply(values: np.ndarray, std: np.ndarray) -> np.ndarray:
        out = values.copy()
        out[:, channel] += rng.normal(0.0, sigmas * std[channel], len(values))
        return out

    return apply


def stuck(channel: int) -> Fault:
    def apply(values: np.ndarray, std: np.ndarray) -> np.ndarray:
        out = values.copy()
        out[:, channel] = values[0, channel]
        return out

    return apply


def swap(first: int, second: int) -> Fault:
    def apply(values: np.ndarray, std: np.ndarray) -> np.ndarray:
        out = values.copy()
        out[:, [first, second]] = values[:, [second, first]]
        return out

    return apply


@dataclass
class DriftSetup:
    """The activity model, its card, and the drift reference/thresholds the converter computes for it."""

    card: ModelCard
    session: ort.InferenceSession
    section: dict
    raw: np.ndarray  # held-out raw samples [4000, 6] in class runs, class index order
    labels: np.ndarray  # true class per sample
    class_names: list[str]
    raw_std: np.ndarray  # pooled std of the raw training channels (what "k sigma" means)

    def monitor(self, *, pooled: bool = False, fixed_psi_bands: bool = False, window: int | None = None
                ) -> DriftMonitor:
        reference = DriftReference.from_dict(self.section["reference"])
        thresholds = Thresholds.from_dict(self.section["thresholds"])
        if pooled:  # the naive peer: one pooled histogram per channel
            reference.shares = reference.pooled_shares[None]
            reference.mean, reference.std = reference.pooled_mean[None], reference.pooled_std[None]
            reference.mean_scale = reference.pooled_std[None]
            reference.low, reference.high = reference.low.min(axis=0)[None], reference.high.max(axis=0)[None]
            reference.class_prior, reference.counts = np.ones(1), reference.counts.sum(keepdims=True)
        if fixed_psi_bands:  # and the textbook PSI bands, nothing else
            inf = (float("inf"), float("inf"))
            thresholds = Thresholds(psi=(0.1, 0.25), js=inf, out_of_range=inf, cusum=inf, missing=inf,
                                    class_mix=inf, stuck_run=10**9)
        return DriftMonitor(reference, thresholds, window=window or self.section["window"],
                            channel_names=self.section["channel_names"], class_names=self.class_names,
                            class_lag=self.section.get("class_lag", 0))

    def clean_streams(self) -> list[np.ndarray]:
        """The held-out recordings in every class order of CLASS_ORDERS (16,000 samples)."""
        return [activity_stream(order)[0] for order in CLASS_ORDERS]


def setup(sample: SampleModel) -> DriftSetup:
    card = load_model(sample.card_path, ModelCard)
    session = ort.InferenceSession(str(sample.onnx_path), providers=["CPUExecutionProvider"])
    calibration = np.load(sample.calibration_path)
    scores = session.run(None, {card.input.name or "x": calibration["x"]})[0]
    section = drift_section(calibration["x"], calibration["y"], scores.argmax(axis=1), card, len(card.labels))
    raw, labels, names = activity_stream()
    std = np.asarray(card.input.normalize.std)
    return DriftSetup(card, session, section, raw, labels, names, std)


@dataclass
class StreamResult:
    states: list[tuple[int, str]]  # (samples streamed so far, state) after every prediction
    first_warning: int | None  # samples after the fault start (or the stream start) until the first warning
    first_drift: int | None
    last_report: dict
    seconds_in_monitor: float
    predictions: int


def run_stream(setup_: DriftSetup, monitor: DriftMonitor, raw: np.ndarray, *, fault: Fault | None = None,
               fault_start: int = 0, evaluate_every: int = 10) -> StreamResult:
    """Window, normalise, predict and monitor the stream hop by hop, as the daemon's model worker does."""
    import time

    spec = setup_.card.input
    values = raw.astype(np.float32).copy()
    if fault is not None:
        values[fault_start:] = fault(values[fault_start:], setup_.raw_std).astype(np.float32)
    window = SlidingWindow(spec.window, spec.hop, spec.channels)
    preprocess = Preprocessor(setup_.card)
    mean, std = np.asarray(spec.normalize.mean), np.asarray(spec.normalize.std)
    states, spent = [], 0.0
    first_warning = first_drift = None
    report: dict = {}
    seen = 0
    count = 0
    previous = 0
    for start in range(0, len(values), spec.hop):
        block = values[start : start + spec.hop]
        ts = (np.arange(start, start + len(block)) / spec.rate_hz).astype(np.float64)
        for _, win in window.push(SampleBlock(ts, block)):
            scores = setup_.session.run(None, {spec.name or "x": preprocess.time_series(win[None])})[0]
            result = predictions(scores, setup_.card)[0]
            new = win if count == 0 else win[-spec.hop :]
            tick = time.perf_counter()
            monitor.update((new - mean) / std, result["class"], result["score"])
            level = monitor.level()  # what the daemon runs after every prediction
            spent += time.perf_counter() - tick
            if level != previous or count % evaluate_every == 0:  # the full report only when it is published
                report = monitor.evaluate()
            previous = level
            count += 1
            seen = start + len(block)
            states.append((seen, ("ok", "warning", "drift")[level]))
            after = seen - fault_start
            if level >= 1 and first_warning is None and after > 0:
                first_warning = after
            if level == 2 and first_drift is None and after > 0:
                first_drift = after
    return StreamResult(states, first_warning, first_drift, report, spent, count)
