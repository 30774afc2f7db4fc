"""Drift for cameras and microphones: is the sensor still showing the model the kind of input it was made for?

A camera does not drift like an accelerometer: one fixed camera sees one scene, far narrower than the varied
photos a detector is calibrated on, so comparing histograms with the calibration data would alarm all day. What
goes wrong with a camera is that it is covered (black), blinded (white, glare), out of focus or frozen; with a
microphone, that it is dead (digital silence), unplugged into noise, or clipping. Each of those puts a simple
statistic of the frame or window outside everything the calibration data showed. So, per frame (or audio window):

- images: brightness per channel (mean / 255), contrast (standard deviation of the luma / 255), sharpness
  (log10 of 1 + the variance of a 3x3 Laplacian of the luma), on a copy subsampled to at most 160 pixels wide,
  so the cost per frame is constant whatever the camera's resolution;
- audio: level (RMS in dBFS, floored at -100), spectral centroid (share of the Nyquist frequency) and clipping
  (share of samples at full scale);

and the converter stores the range each statistic took over the calibration data (`sensor_drift` in the bundle's
reference, converter/reference.py). The monitor keeps the last `window` frames' statistics in a ring (fixed
memory) and reports, per statistic, the share of them outside the reference range widened by a margin; a share at
or above the `out_of_range` bounds (0.5 warning, 0.8 drift by default) raises the state, and so does a statistic
that stays exactly the same for `stuck_run` frames in a row where the calibration data varied (a frozen feed,
digital silence). A covered camera at 5 frames/s is `drift` after 8 frames. Detectors also report detections per
frame and their mean confidence (the outputs section), for a person to read; they do not raise the state, since
an empty scene is not a fault.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from edge_runtime.drift.missing import MissingSamples
from edge_runtime.drift.monitor import LEVELS

#: frames or windows the out-of-range share is taken over
IMAGE_WINDOW = 10
AUDIO_WINDOW = 30
#: the reference range is widened by this share of its span, and at least by the statistic's floor below
MARGIN_SHARE = 0.1
MARGIN_FLOOR = {"brightness": 0.03, "contrast": 0.02, "sharpness": 0.15, "level_db": 6.0, "centroid": 0.03,
                "clipping": 0.01}
DEFAULT_BOUNDS = (0.5, 0.8)
DEFAULT_STUCK_RUN = 50
#: widest image the statistics are computed on (subsampled by a whole stride)
STAT_WIDTH = 160
SILENCE_DB = -100.0


def image_statistic_names(channel_order: str) -> list[str]:
    channels = ["brightness"] if channel_order == "gray" else [f"brightness_{c}" for c in channel_order]
    return [*channels, "contrast", "sharpness"]


def image_statistics(pixels: np.ndarray, channel_order: str) -> np.ndarray:
    """[brightness per channel, contrast, sharpness] of one uint8 frame [height, width, channels]."""
    stride = max(1, -(-pixels.shape[1] // STAT_WIDTH))
    small = pixels[::stride, ::stride].astype(np.float32)
    brightness = small.reshape(-1, small.shape[2]).mean(axis=0) / 255.0
    if small.shape[2] == 1:
        luma = small[:, :, 0]
    else:
        red, green, blue = (small[:, :, channel_order.index(c)] for c in "rgb")
        luma = 0.299 * red + 0.587 * green + 0.114 * blue
    contrast = float(luma.std()) / 255.0
    if luma.shape[0] >= 3 and luma.shape[1] >= 3:
        laplacian = (luma[1:-1, :-2] + luma[1:-1, 2:] + luma[:-2, 1:-1] + luma[2:, 1:-1] - 4 * luma[1:-1, 1:-1])
        sharpness = float(np.log10(1.0 + laplacian.var()))
    else:
        sharpness = 0.0
    return np.array([*brightness.tolist(), contrast, sharpness], dtype=np.float64)


AUDIO_STATISTICS = ["level_db", "centroid", "clipping"]


def audio_statistics(samples: np.ndarray) -> np.ndarray:
    """[level in dBFS, spectral centroid (share of Nyquist), clipping share] of one window of samples in [-1, 1)."""
    samples = np.asarray(samples, dtype=np.float64).reshape(-1)
    rms = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
    level = max(SILENCE_DB, 20.0 * np.log10(rms)) if rms > 0 else SILENCE_DB
    power = np.abs(np.fft.rfft(samples - samples.mean())) ** 2 if samples.size > 1 else np.zeros(1)
    total = float(power.sum())
    centroid = float((power * np.linspace(0.0, 1.0, len(power))).sum() / total) if total > 1e-12 else 0.0
    clipping = float(np.mean(np.abs(samples) >= 0.99)) if samples.size else 0.0
    return np.array([level, centroid, clipping], dtype=np.float64)


def reference_ranges(values: np.ndarray, names: list[str], kind: str) -> dict:
    """The bundle's `sensor_drift` section from [n, S] statistics of the calibration frames or windows."""
    values = np.asarray(values, dtype=np.float64)
    return {"kind": kind, "statistics": names, "count": len(values),
            "low": values.min(axis=0).tolist(), "high": values.max(axis=0).tolist(),
            "mean": values.mean(axis=0).tolist(), "std": values.std(axis=0).tolist(),
            "window": IMAGE_WINDOW if kind == "image" else AUDIO_WINDOW}


def _floor(name: str) -> float:
    return next((floor for prefix, floor in MARGIN_FLOOR.items() if name.startswith(prefix)), 0.0)


class SensorDriftMonitor:
    """Out-of-range shares and stuck statistics over the last `window` frames; constant time and memory per
    frame. Same interface as `DriftMonitor` (update, level, evaluate, record_missing) and the same document shape."""

    def __init__(self, section: dict, *, bounds: tuple[float, float] = DEFAULT_BOUNDS,
                 stuck_run: int = DEFAULT_STUCK_RUN, window: int | None = None):
        self.names = list(section["statistics"])
        low, high = np.asarray(section["low"], np.float64), np.asarray(section["high"], np.float64)
        span = high - low
        margin = np.maximum(MARGIN_SHARE * span, [_floor(name) for name in self.names])
        self.low, self.high = low - margin, high + margin
        self.reference_mean = np.asarray(section["mean"], np.float64)
        # a statistic the calibration data never varied (no clipping at all) cannot be "stuck"
        self._varies = np.asarray(section["std"], np.float64) > 1e-9
        self.window = int(window or section.get("window") or IMAGE_WINDOW)
        self.bounds = bounds
        self.stuck_run = stuck_run
        count = len(self.names)
        self._values = np.zeros((self.window, count))
        self._outside = np.zeros((self.window, count), dtype=bool)
        self._outside_counts = np.zeros(count, dtype=np.int64)
        self._pos = self._filled = 0
        self.samples_seen = 0
        self._last = np.full(count, np.nan)
        self._run = np.zeros(count, dtype=np.int64)
        self._outputs: deque[tuple[int, float | None]] = deque(maxlen=self.window)
        self._missing = MissingSamples(self.window)

    def update(self, statistics: np.ndarray, detections: list[dict] | None = None) -> None:
        statistics = np.asarray(statistics, dtype=np.float64)
        outside = (statistics < self.low) | (statistics > self.high)
        slot = self._pos
        if self._filled == self.window:
            self._outside_counts -= self._outside[slot]
        self._values[slot], self._outside[slot] = statistics, outside
        self._outside_counts += outside
        self._pos = (slot + 1) % self.window
        self._filled = min(self.window, self._filled + 1)
        self.samples_seen += 1
        self._run = np.where(statistics == self._last, self._run + 1, 1)
        self._last = statistics
        if detections is not None:
            scores = [float(d["score"]) for d in detections]
            self._outputs.append((len(detections), float(np.mean(scores)) if scores else None))

    def record_missing(self, count: int = 1) -> None:
        self._missing.record(self.samples_seen, count)

    def missing_share(self) -> float:
        return self._missing.share(self.samples_seen)

    def _shares(self) -> np.ndarray:
        return self._outside_counts / max(self._filled, 1)

    def _stuck(self) -> np.ndarray:
        return (self._run >= self.stuck_run) & self._varies

    def level(self) -> int:
        if self._stuck().any():
            return 2
        top = float(self._shares().max()) if self._filled else 0.0
        return 2 if top >= self.bounds[1] else 1 if top >= self.bounds[0] else 0

    def evaluate(self) -> dict:
        shares, stuck = self._shares(), self._stuck()
        current = self._values[: self._filled].mean(axis=0) if self._filled else np.full(len(self.names), np.nan)
        channels, reasons, scores = {}, [], []
        for index, name in enumerate(self.names):
            share = float(shares[index])
            level = 2 if share >= self.bounds[1] else 1 if share >= self.bounds[0] else 0
            if stuck[index]:
                level = 2
                reasons.append((10.0, f"{name} stuck: the same value {int(self._run[index])} frames in a row"))
            if share >= self.bounds[0]:
                reasons.append((share, f"{name} out of range in {share:.0%} of the last {self._filled} frames "
                                       f"(now {current[index]:.3g}, reference {self.low[index]:.3g} to "
                                       f"{self.high[index]:.3g})"))
            scores.append(10.0 if stuck[index] else share)
            channels[name] = {"out_of_range": round(share, 4), "mean": _rounded(current[index]),
                              "reference": [round(float(self.low[index]), 4), round(float(self.high[index]), 4)],
                              "stuck": bool(stuck[index]), "level": LEVELS[level]}
        state = max((LEVELS.index(entry["level"]) for entry in channels.values()), default=0)
        order = np.argsort(-np.asarray(scores))
        return {
            "state": LEVELS[state],
            "window": {"size": self.window, "filled": int(self._filled), "samples_seen": int(self.samples_seen)},
            "channels": channels,
            "top_channels": [self.names[i] for i in order if scores[i] > 0][:3],
            "missing_share": round(self.missing_share(), 4),
            "outputs": self._output_metrics(),
            "reasons": [text for _, text in sorted(reasons, reverse=True)][:5],
        }

    def _output_metrics(self) -> dict:
        if not self._outputs:
            return {}
        counts = [count for count, _ in self._outputs]
        scores = [score for _, score in self._outputs if score is not None]
        return {"detections": {"per_frame": round(float(np.mean(counts)), 3), "frames": len(counts)},
                "confidence": {"mean": round(float(np.mean(scores)), 4) if scores else None}}


def _rounded(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None
