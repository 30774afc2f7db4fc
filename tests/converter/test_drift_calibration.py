"""The drift calibration's statistics on synthetic streams whose between-recording spread is known: estimated
from visible recordings and from runs without boundaries, and what ignoring it would cost on new recordings."""

from __future__ import annotations

import numpy as np
import pytest

import converter.drift_variance as variance
from converter.drift_calibration import SampleStream, calibrate, class_tour, reference_with_design
from converter.drift_variance import cusum_design, pseudo_recordings
from edge_runtime.drift.monitor import DriftMonitor

HOP = 10
LENGTH = 200  # samples per recording
WITHIN = 0.5  # within-recording noise (AR(1), this marginal sd)
RHO = 0.6


def recordings(rng: np.random.Generator, count: int, between: float, classes: int = 2, channels: int = 2
               ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """`count` recordings per class in class order: class mean (3 * class) + a recording offset (sd `between`) +
    AR(1) noise. Returns values [T, C], classes [T], the recordings' (start, end)."""
    values, labels, bounds = [], [], []
    for cls in range(classes):
        for _ in range(count):
            noise = np.zeros((LENGTH, channels))
            noise[0] = rng.normal(0, WITHIN, channels)
            for t in range(1, LENGTH):
                noise[t] = RHO * noise[t - 1] + rng.normal(0, WITHIN * np.sqrt(1 - RHO**2), channels)
            start = sum(len(v) for v in values)
            values.append(3.0 * cls + rng.normal(0, between, channels) + noise)
            labels.append(np.full(LENGTH, cls))
            bounds.append((start, start + LENGTH))
    return np.concatenate(values), np.concatenate(labels), bounds


def stream_of(values, labels, segments) -> SampleStream:
    return SampleStream(values, labels, segments, hop=HOP, width=50)


def test_between_recording_spread_is_estimated_from_visible_recordings():
    rng = np.random.default_rng(0)
    values, labels, bounds = recordings(rng, 30, between=0.3)
    pieces, cut = pseudo_recordings(labels, bounds, HOP)
    assert cut == set() and len(pieces) == 60
    design = cusum_design(values, labels, 2, pieces, HOP, np.ones((2, 2)))
    assert np.all(np.abs(design.between - 0.3) < 0.1), design.between
    # the long-run sd of a hop mean: AR(1) hop means vary more than independent samples would (rho > 0)
    assert np.all(design.scale > WITHIN / np.sqrt(HOP))
    assert np.all(design.offset_sd > design.between)  # plus the reference mean's own error


def test_runs_without_boundaries_are_cut_into_pseudo_recordings_and_keep_the_spread():
    """The same data as one run per class (the windows overlap across the joins): the spread is not lost."""
    rng = np.random.default_rng(1)
    values, labels, _ = recordings(rng, 10, between=0.4)
    runs = [(0, 10 * LENGTH), (10 * LENGTH, 20 * LENGTH)]
    pieces, cut = pseudo_recordings(labels, runs, HOP)
    assert cut == {0, 1} and len(pieces) >= 2 * variance.MIN_RECORDINGS
    assert all((b - a) % HOP == 0 or b in (10 * LENGTH, 20 * LENGTH) for a, b, _ in pieces)
    design = cusum_design(values, labels, 2, pieces, HOP, np.ones((2, 2)), cut)
    assert np.all(design.between > 0.2), design.between


def new_recordings_alarm(between: float, monkeypatch: pytest.MonkeyPatch | None = None) -> int:
    """Calibrate on 12 recordings per class, then stream 8,000 samples of 20 new recordings (new offsets) in class
    runs through the monitor; the number of predictions in warning or drift."""
    rng = np.random.default_rng(2)
    values, labels, bounds = recordings(rng, 12, between=between)
    stream = stream_of(values, labels, bounds)
    thresholds, _ = calibrate(stream, labels, 2)
    pieces, cut = pseudo_recordings(labels, bounds, HOP)
    reference, _ = reference_with_design(stream, pieces, 2, cut)
    monitor = DriftMonitor(reference, thresholds, window=400, class_lag=stream.class_lag)
    fresh, fresh_labels, _ = recordings(np.random.default_rng(3), 20, between=between)
    alarms = 0
    for start in range(0, len(fresh), HOP):
        monitor.update(fresh[start : start + HOP], int(fresh_labels[start]))
        alarms += monitor.level() > 0
    return alarms


def test_new_recordings_raise_nothing_when_the_spread_is_calibrated():
    assert new_recordings_alarm(between=0.4) == 0


def test_ignoring_the_between_recording_spread_alarms_on_new_recordings(monkeypatch):
    """The same, with the slack's random-effects term switched off (Q = 0: only the design floor): the CUSUM
    then accumulates every new recording's own offset and alarms. This is what the calibration is for."""
    monkeypatch.setattr(variance, "Q", 0.0)
    assert new_recordings_alarm(between=0.4) > 50


def test_every_change_of_class_happens_once_in_the_tour():
    for k in (2, 3, 4, 6):
        tour = class_tour(k)
        pairs = list(zip(tour[:-1], tour[1:], strict=True))
        assert len(pairs) == k * (k - 1) and len(set(pairs)) == len(pairs) and all(a != b for a, b in pairs)
