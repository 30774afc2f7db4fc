"""One model's drift watch inside the daemon: fed by the model worker after each batch, read by the publisher.

It watches the stream, it never reaches back into it: a failure here is reported and inference goes on.
The worker thread updates it; the daemon's timer asks it for the periodic report; a lock keeps the two apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from edge_runtime.card import AudioInput, FeatureInput, ImageInput, ModelCard, TimeSeriesInput
from edge_runtime.config import DriftConfig
from edge_runtime.drift.monitor import LEVELS, DriftMonitor, Thresholds
from edge_runtime.drift.reference import DriftReference
from edge_runtime.drift.sensor import (
    DEFAULT_BOUNDS,
    DEFAULT_STUCK_RUN,
    SensorDriftMonitor,
    audio_statistics,
    image_statistics,
)


class DriftTracker:
    def __init__(self, model_name: str, reference: dict, card: ModelCard, config: DriftConfig,
                 publish: Callable[[dict], None]):
        self.model_name = model_name
        self.config = config
        self._publish = publish
        self._lock = threading.Lock()
        self._level = 0
        self._first = True
        self.monitor: DriftMonitor | SensorDriftMonitor | None = None
        self.unavailable: str | None = None
        self._sensor = isinstance(card.input, ImageInput | AudioInput)
        if self._sensor:  # cameras and microphones: frame statistics against their calibrated ranges
            self._start_sensor(reference, card, config)
            return
        section = (reference or {}).get("drift")
        spec = card.input
        if not config.enabled:
            self.unavailable = "disabled in the config"
        elif section is None:
            self.unavailable = "the bundle has no drift reference (convert it with a card and calibration data)"
        elif not isinstance(spec, TimeSeriesInput | FeatureInput):
            self.unavailable = f"no drift detection for {spec.kind} inputs"
        if self.unavailable:
            return
        thresholds = Thresholds.from_dict(section["thresholds"])
        for metric, override in config.thresholds.items():
            setattr(thresholds, metric, (override.warning, override.drift))
            if hasattr(thresholds, f"{metric}_by_class"):  # the user's bound replaces the calibrated ones
                setattr(thresholds, f"{metric}_by_class", None)
        if config.stuck_run is not None:
            thresholds.stuck_run = config.stuck_run
        self.monitor = DriftMonitor(
            DriftReference.from_dict(section["reference"]), thresholds, window=int(section["window"]),
            class_mix_counts=config.class_mix_counts, channel_names=list(section["channel_names"]),
            class_names=card.labels, class_lag=int(section.get("class_lag", 0)),
        )
        self.hop = int(section.get("hop", 1))
        normalize = getattr(spec, "normalize", None)
        self._mean = np.asarray(normalize.mean, dtype=np.float64) if normalize else 0.0
        self._std = np.asarray(normalize.std, dtype=np.float64) if normalize else 1.0
        self._features = isinstance(spec, FeatureInput)

    def _start_sensor(self, reference: dict, card: ModelCard, config: DriftConfig) -> None:
        section = (reference or {}).get("sensor_drift")
        if not config.enabled:
            self.unavailable = "disabled in the config"
        elif section is None:
            self.unavailable = (f"the bundle has no {card.input.kind} drift reference (convert it again with "
                                "calibration data)")
        if self.unavailable:
            return
        bounds = config.thresholds.get("out_of_range")
        self.monitor = SensorDriftMonitor(
            section, bounds=(bounds.warning, bounds.drift) if bounds is not None else DEFAULT_BOUNDS,
            stuck_run=config.stuck_run or DEFAULT_STUCK_RUN)
        self._channel_order = card.input.channel_order if isinstance(card.input, ImageInput) else None

    @property
    def enabled(self) -> bool:
        return self.monitor is not None

    def _observe_sensor(self, raw: list, results: list[dict]) -> None:
        """Frames (ImageFrame) or audio windows [window, 1]: their statistics, and a detector's detections."""
        for data, result in zip(raw, results, strict=True):
            if self._channel_order is not None:
                statistics = image_statistics(data.pixels, self._channel_order)
            else:
                statistics = audio_statistics(data)
            self.monitor.update(statistics, result.get("detections"))

    def _observe_stream(self, raw: list[np.ndarray], results: list[dict]) -> None:
        for data, result in zip(raw, results, strict=True):
            if self._features:
                samples = np.asarray(data, dtype=np.float64)[None]
            else:  # a window adds `hop` new samples to the stream; the very first one adds all of its samples
                samples = np.asarray(data if self._first else data[-self.hop :], dtype=np.float64)
            self._first = False
            self.monitor.update((samples - self._mean) / self._std, result.get("class", 0), result.get("score"))

    def observe(self, raw: list[np.ndarray], results: list[dict]) -> None:
        """The raw windows (or feature rows, frames) of one batch and their predictions; publishes on a state
        change."""
        if self.monitor is None:
            return
        report = None
        with self._lock:
            if self._sensor:
                self._observe_sensor(raw, results)
            else:
                self._observe_stream(raw, results)
            level = self.monitor.level()
            if level != self._level:
                self._level = level
                report = self._report_locked()
        if report is not None:
            self._publish(report)

    def record_missing(self, count: int = 1) -> None:
        if self.monitor is not None:
            with self._lock:
                self.monitor.record_missing(count)

    def report(self) -> dict | None:
        if self.monitor is None:
            return None
        with self._lock:
            return self._report_locked()

    def _report_locked(self) -> dict:
        report = self.monitor.evaluate()
        self._level = LEVELS.index(report["state"])
        return {"ts": time.time(), "model": self.model_name, **report}

    def summary(self) -> dict:
        """What `stats` carries: the state and the channels that drift most."""
        if self.monitor is None:
            return {"state": None, "unavailable": self.unavailable}
        report = self.report()
        return {"state": report["state"], "top_channels": report["top_channels"], "reasons": report["reasons"][:2]}
