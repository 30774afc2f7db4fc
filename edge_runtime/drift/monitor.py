"""Drift detection on the device, in constant time per sample and fixed memory.

The model worker calls `update` once per prediction with the samples that prediction added to the stream (a hop
of a time series, or one feature vector) and the class the model predicted. The monitor keeps the last `window`
samples as bin numbers in a ring, so a histogram update costs the same whatever the uptime. `evaluate` compares:

- per input channel: PSI and Jensen-Shannon distance of the window's histogram against the mixture of the class
  references weighted by the classes predicted in the window (classifiers) or the pooled reference; the share of
  samples outside the range their class showed in the reference; a stuck channel (the same value many times in a
  row where the reference varies); the share of samples rejected as NaN/infinite;
- a two-sided CUSUM on each channel's per-class standardised hop means, which sees an abrupt shift long before
  a whole window has filled;
- the outputs: class mix against the reference class distribution (reported, counted toward the state only if
  configured), confidence mean, spread and trend.

Thresholds come from the bundle, calibrated by the converter on held-out parts of the calibration data.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge_runtime.drift.missing import MissingSamples
from edge_runtime.drift.reference import DriftReference

LEVELS = ("ok", "warning", "drift")
_EPS = 1e-4
WINDOW_METRICS = ("psi", "js", "out_of_range")
Z_CLIP = 3.0
#: With a calibrated per-class slack, a hop adds at most this much above its slack: a model lags a class change by
#: about half its window, and each of those hops (judged against the old class) must count for little.
SLACK_CLIP = 1.0
MIXED_SHARE = 0.05  # a class with at least this share of a window holds the window to its bounds
WINDOW_EVERY = 5  # predictions between two computations of the window metrics in `level`


Bounds = tuple[float, float] | list[tuple[float, float]]


@dataclass
class Thresholds:
    """(warning, drift) per metric; a metric at or above a bound raises the state to that level.

    The per-channel metrics (psi, js, out_of_range, cusum) take one pair for every channel, or one pair per
    channel: channels differ in how much they vary without drift, and one bound for all would be set by the
    noisiest channel and blind on the quiet ones.
    """

    psi: Bounds = (0.2, 0.4)
    js: Bounds = (0.2, 0.3)
    out_of_range: Bounds = (0.05, 0.15)
    cusum: Bounds = (8.0, 16.0)
    missing: tuple[float, float] = (0.01, 0.05)
    class_mix: tuple[float, float] = (0.5, 1.0)
    stuck_run: int = 50
    # Optional [K][C] (warning, drift) pairs per class for the window metrics: a window is held to the bounds of
    # the classes predicted in it (`DriftMonitor.window_bounds`), so a quiet class does not inherit the bound of
    # the noisiest one. Absent in older bundles: the per-channel bounds apply.
    psi_by_class: list | None = None
    js_by_class: list | None = None

    def for_channel(self, metric: str, channel: int) -> tuple[float, float]:
        bounds = getattr(self, metric)
        if bounds and isinstance(bounds[0], list | tuple):
            return tuple(bounds[channel])
        return tuple(bounds)

    def as_dict(self) -> dict:
        def plain(value):
            if isinstance(value, list | tuple):
                return [plain(item) for item in value]
            return value

        return {key: plain(value) for key, value in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict) -> Thresholds:
        def pairs(value):
            if isinstance(value, list) and value and isinstance(value[0], list) and value[0] and isinstance(
                    value[0][0], list):
                return value  # per class: kept as nested lists
            if isinstance(value, list) and value and isinstance(value[0], list):
                return [tuple(item) for item in value]
            return tuple(value) if isinstance(value, list) else value

        return cls(**{key: pairs(value) for key, value in data.items() if key in cls.__dataclass_fields__})


def psi(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Population stability index per row (channel) of two share matrices [C, B]."""
    a, e = np.clip(actual, _EPS, None), np.clip(expected, _EPS, None)
    return np.sum((a - e) * np.log(a / e), axis=-1)


def js_distance(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance (base 2, in [0, 1]) per row of two share matrices [C, B]."""
    a, e = np.clip(actual, 1e-12, None), np.clip(expected, 1e-12, None)
    a, e = a / a.sum(axis=-1, keepdims=True), e / e.sum(axis=-1, keepdims=True)
    m = (a + e) / 2
    divergence = 0.5 * np.sum(a * np.log2(a / m), axis=-1) + 0.5 * np.sum(e * np.log2(e / m), axis=-1)
    return np.sqrt(np.clip(divergence, 0.0, None))


def _level(value: float, bounds: tuple[float, float]) -> int:
    return 2 if value >= bounds[1] else 1 if value >= bounds[0] else 0


def _array_level(values: np.ndarray, bounds: np.ndarray) -> int:
    """Highest level any channel reaches; `bounds` is [C, 2] (warning, drift)."""
    return 2 if (values >= bounds[:, 1]).any() else 1 if (values >= bounds[:, 0]).any() else 0


@dataclass
class DriftMonitor:
    reference: DriftReference
    thresholds: Thresholds
    window: int = 500
    cusum_slack: float = 0.25
    class_mix_counts: bool = False
    # Predictions the samples wait for their class: a window's class belongs to the samples in its middle, so the
    # hop that arrives now is judged with the class predicted `class_lag` predictions later (about half a model
    # window). Then a change of activity is attributed where it happened instead of half a window late. 0 (bundles
    # made before it existed): the class predicted with the samples, as those bundles were calibrated.
    class_lag: int = 0
    channel_names: list[str] | None = None
    class_names: list[str] | None = None
    # state
    _bins: np.ndarray = field(init=False, repr=False)
    _outside: np.ndarray = field(init=False, repr=False)
    _classes: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ref = self.reference
        channels, bins, classes = ref.channels, ref.bins, ref.classes
        self._bins = np.zeros((self.window, channels), dtype=np.int64)  # bin + channel * bins (a flat index)
        self._outside = np.zeros((self.window, channels), dtype=bool)
        self._classes = np.zeros(self.window, dtype=np.int64)
        # inner edges padded with +inf to one [C, B - 1] array: binning is one comparison for all channels
        self._edges = np.full((channels, bins - 1), np.inf)
        for channel, edges in enumerate(ref.inner_edges):
            self._edges[channel, : len(edges)] = edges
        self._flat_offset = np.arange(channels) * bins
        self._bounds = {metric: np.array([self.thresholds.for_channel(metric, c) for c in range(channels)])
                        for metric in (*WINDOW_METRICS, "cusum")}
        self._by_class = {}
        for metric in ("psi", "js"):
            table = getattr(self.thresholds, f"{metric}_by_class")
            if table is not None and np.shape(table) == (classes, channels, 2):
                self._by_class[metric] = np.asarray(table, dtype=np.float64)
        self._counts = np.zeros(channels * bins, dtype=np.int64)  # flat [C * B]
        self._class_counts = np.zeros(classes, dtype=np.int64)
        self._outside_counts = np.zeros(channels, dtype=np.int64)
        self._channel_index = np.arange(channels)
        self._low, self._high = ref.low.min(axis=0), ref.high.max(axis=0)
        self._pos = 0
        self._filled = 0
        self.samples_seen = 0
        self._cusum_up = np.zeros(channels)
        self._cusum_down = np.zeros(channels)
        self._last = np.full(channels, np.nan)
        self._run = np.zeros(channels, dtype=np.int64)
        self._confidence: deque[float] = deque(maxlen=max(8, self.window // 4))
        self._waiting: deque[np.ndarray] = deque()  # the last `class_lag` hops, waiting for their class
        self._missing = MissingSamples(self.window)
        self._updates = 0
        self._window_at = 0
        self._window_level: int | None = None
        # the CUSUM's slack and clip per class and channel: calibrated per class (bundles with `cusum_slack`), or the
        # single default slack with z clipped at Z_CLIP (older bundles, calibrated for exactly that)
        shape = (ref.classes, channels)
        if ref.cusum_slack.shape == shape:
            self._slack, self._z_clip = ref.cusum_slack, ref.cusum_slack + SLACK_CLIP
        else:
            self._slack, self._z_clip = np.full(shape, self.cusum_slack), np.full(shape, Z_CLIP)
        self._varies = ref.std.max(axis=0) > 1e-9  # a stuck channel only counts where the reference varies
        if self.channel_names is None or len(self.channel_names) != channels:
            self.channel_names = [f"ch{index}" for index in range(channels)]

    # -- per prediction ------------------------------------------------------------------------------------------
    def update(self, samples: np.ndarray, predicted_class: int = 0, confidence: float | None = None) -> None:
        """Add the samples one prediction brought in ([n, C], model-ready), with the class the model predicted."""
        samples = np.asarray(samples, dtype=np.float64)[-self.window :]
        if confidence is not None:
            self._confidence.append(float(confidence))
        self._updates += 1
        if not len(samples):
            return
        if self.class_lag:  # the hop of `class_lag` predictions ago is in the middle of this prediction's window
            self._waiting.append(samples)
            if len(self._waiting) <= self.class_lag:
                return
            samples = self._waiting.popleft()
        self._add(samples, predicted_class)

    def _add(self, samples: np.ndarray, predicted_class: int) -> None:
        ref = self.reference
        n = len(samples)
        cls = int(predicted_class) if ref.classes > 1 else 0
        flat = ((samples[:, :, None] >= self._edges[None]).sum(axis=2) + self._flat_offset).astype(np.int64)
        # outside everything the reference saw, whatever the class: per-class ranges of a few runs are too narrow
        outside = (samples < self._low) | (samples > self._high)
        end = self._pos + n
        # a slice when the block does not wrap around the ring (always, when the window is a multiple of the hop)
        slots = slice(self._pos, end) if end <= self.window else np.arange(self._pos, end) % self.window
        leaving = self._filled - (self.window - n)
        size = self._counts.size
        if leaving > 0:  # the oldest samples leave the window
            # before the first wrap the first slots are still empty
            gone = slice(end - leaving, end) if isinstance(slots, slice) else slots[n - leaving :]
            self._counts -= np.bincount(self._bins[gone].ravel(), minlength=size)
            self._class_counts -= np.bincount(self._classes[gone], minlength=ref.classes)
            self._outside_counts -= self._outside[gone].sum(axis=0)
        self._bins[slots], self._outside[slots], self._classes[slots] = flat, outside, cls
        self._counts += np.bincount(flat.ravel(), minlength=size)
        self._class_counts[cls] += n
        self._outside_counts += outside.sum(axis=0)
        self._pos = (self._pos + n) % self.window
        self._filled = min(self.window, self._filled + n)
        self.samples_seen += n
        # sequential detector: how far this hop's mean is from its class mean, in units of how far it strays
        # without drift (within-run noise and the differences between runs the reference saw)
        # Clipped (a Huber-style CUSUM): when the activity changes, the first hops of the new one are still
        # attributed to the old class for a few predictions; such a hop adds a bounded amount, not a sensor fault.
        clip, slack = self._z_clip[cls], self._slack[cls]
        z = np.clip((samples.mean(axis=0) - ref.mean[cls]) / ref.mean_scale[cls], -clip, clip)
        self._cusum_up = np.maximum(0.0, self._cusum_up + z - slack)
        self._cusum_down = np.maximum(0.0, self._cusum_down - z - slack)
        # stuck sensor: the same value many samples in a row, counted in whole hops (a run that starts inside a
        # hop is found one hop later, which is cheap to accept and saves a per-sample pass)
        constant = samples.max(axis=0) == samples.min(axis=0)
        self._run = np.where(constant, np.where(samples[0] == self._last, self._run + n, n), 1)
        self._last = samples[-1]

    def record_missing(self, count: int = 1) -> None:
        """Samples the daemon rejected as NaN/infinite: they count toward the missing share."""
        self._missing.record(self.samples_seen, count)

    def missing_share(self) -> float:
        """Rejected samples among the last `window` accepted ones plus those rejected meanwhile."""
        return self._missing.share(self.samples_seen)

    # -- metrics -------------------------------------------------------------------------------------------------
    @property
    def filled(self) -> bool:
        return self._filled >= self.window

    def class_weights(self) -> np.ndarray:
        return self._class_counts / max(self._class_counts.sum(), 1)

    def expected_shares(self) -> np.ndarray:
        """[C, B]: the reference the window is compared with (class mixture, or pooled)."""
        ref = self.reference
        if ref.classes == 1:
            return ref.pooled_shares
        return np.tensordot(self.class_weights(), ref.shares, axes=1)

    def metrics(self, window_metrics: bool = True) -> dict[str, np.ndarray]:
        """Per-channel metric arrays, the numbers the thresholds are calibrated on."""
        ref = self.reference
        weights = self.class_weights()
        expected_std = weights @ ref.std if ref.classes > 1 else ref.std[0]
        values = {
            "cusum": np.maximum(self._cusum_up, self._cusum_down),
            "stuck": (self._run >= self.thresholds.stuck_run) & (expected_std > 1e-9),
            "run": self._run.copy(),
        }
        if window_metrics:
            actual = self._counts.reshape(ref.channels, -1) / max(self._filled, 1)
            expected = self.expected_shares()
            values["psi"] = psi(actual, expected)
            values["js"] = js_distance(actual, expected)
            values["out_of_range"] = self._outside_counts / max(self._filled, 1)
        return values

    def window_bounds(self, metric: str) -> np.ndarray:
        """[C, 2] bounds of a window metric: where the bundle has per-class bounds, the loosest bound among the
        classes that make up a noticeable share of the window. A window of one class is held to that class's bound;
        a window across a change of activity is compared with a class mixture that lags the data (the model names
        the new class half a model window late), so it is held to the looser of the two."""
        table = self._by_class.get(metric)
        if table is None:
            return self._bounds[metric]
        present = self.class_weights() >= MIXED_SHARE
        return table[present].max(axis=0) if present.any() else table.max(axis=0)

    def level(self) -> int:
        """The state as 0/1/2 (ok/warning/drift), computed without building a report: cheap enough to run after
        every prediction, so a state change is published at once."""
        if (self._run >= self.thresholds.stuck_run).any() and (self._varies[self._run >= self.thresholds.stuck_run]
                                                                 .any()):
            return 2
        level = _array_level(np.maximum(self._cusum_up, self._cusum_down), self._bounds["cusum"])
        # the window histograms move by one hop per prediction: their metrics are recomputed every few predictions
        if self.filled:
            if self._updates - self._window_at >= WINDOW_EVERY or self._window_level is None:
                values = self.metrics(window_metrics=True)
                self._window_level = max(_array_level(values[m], self.window_bounds(m)) for m in WINDOW_METRICS)
                self._window_at = self._updates
            level = max(level, self._window_level)
        t = self.thresholds
        if self._missing:
            level = max(level, _level(self.missing_share(), t.missing))
        if self.class_mix_counts and self.reference.classes > 1:
            mix = float(psi(self.class_weights()[None], self.reference.class_prior[None])[0])
            level = max(level, _level(mix, t.class_mix))
        return level

    def evaluate(self) -> dict:
        """The drift message: state, per-channel metrics, output metrics, and the channels that drift most."""
        t = self.thresholds
        values = self.metrics()
        reasons: list[tuple[float, str]] = []
        channels = {}
        scores = np.zeros(self.reference.channels)
        window_bounds = {metric: self.window_bounds(metric) for metric in WINDOW_METRICS}
        for index, name in enumerate(self.channel_names):
            level = 0
            entry = {"cusum": round(float(values["cusum"][index]), 3), "stuck": bool(values["stuck"][index])}
            checks = [("cusum", values["cusum"][index], t.for_channel("cusum", index))]
            if self.filled:
                for metric in WINDOW_METRICS:
                    entry[metric] = round(float(values[metric][index]), 4)
                    checks.append((metric, values[metric][index], tuple(window_bounds[metric][index])))
            for metric, value, bounds in checks:
                metric_level = _level(value, bounds)
                scores[index] = max(scores[index], value / bounds[1])
                if metric_level:
                    bound = bounds[metric_level - 1]
                    reasons.append((value / bounds[1], f"{name} {metric} {value:.3g} >= {bound:.3g}"))
                level = max(level, metric_level)
            if entry["stuck"]:
                level = 2
                scores[index] = max(scores[index], 10.0)
                reasons.append((10.0, f"{name} stuck: {int(values['run'][index])} identical samples"))
            entry["level"] = LEVELS[level]
            channels[name] = entry
        state = max((LEVELS.index(entry["level"]) for entry in channels.values()), default=0)
        missing_share = self.missing_share()
        missing_level = _level(missing_share, t.missing)
        if missing_level:
            reasons.append((missing_share / t.missing[1], f"missing share {missing_share:.3g}"))
        state = max(state, missing_level)
        outputs = self._output_metrics()
        if self.class_mix_counts and outputs.get("class_mix"):
            mix_level = _level(outputs["class_mix"]["psi"], t.class_mix)
            if mix_level:
                reasons.append((outputs["class_mix"]["psi"] / t.class_mix[1], "class mix changed"))
            state = max(state, mix_level)
        order = np.argsort(-scores)
        return {
            "state": LEVELS[state],
            "window": {"size": self.window, "filled": int(self._filled), "samples_seen": int(self.samples_seen)},
            "channels": channels,
            "top_channels": [self.channel_names[i] for i in order if scores[i] > 0][:3],
            "missing_share": round(missing_share, 4),
            "outputs": outputs,
            "reasons": [text for _, text in sorted(reasons, reverse=True)][:5],
        }

    def _output_metrics(self) -> dict:
        ref = self.reference
        out: dict = {}
        if ref.classes > 1:
            current = self.class_weights()
            names = self.class_names or [str(i) for i in range(ref.classes)]
            out["class_mix"] = {
                "current": {name: round(float(share), 4) for name, share in zip(names, current, strict=False)},
                "reference": {name: round(float(share), 4) for name, share in zip(names, ref.class_prior,
                                                                                   strict=False)},
                "psi": round(float(psi(current[None], ref.class_prior[None])[0]), 4),
                "counts_toward_state": self.class_mix_counts,
            }
        if self._confidence:
            confidence = np.fromiter(self._confidence, dtype=np.float64)
            half = len(confidence) // 2
            trend = float(confidence[half:].mean() - confidence[:half].mean()) if half else 0.0
            out["confidence"] = {"mean": round(float(confidence.mean()), 4), "std": round(float(confidence.std()), 4),
                                 "trend": round(trend, 4), "predictions": len(confidence)}
        return out
