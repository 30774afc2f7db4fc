"""What PSI and Jensen-Shannon distance reach on a window that lies inside ONE new recording.

A device watches one wearer, one mount, one machine for a long time, so a whole drift window often comes from a
single recording. Cross-fitted streams of the calibration data mix several short recordings into every window,
which averages their differences away and makes clean windows look closer to the reference than a device's are.
So each held-out recording is also judged on its own, with a random-effects model of its histogram:

    chi2(window of n samples, reference) ~ A + C / n

A is the recording's own distance from the class reference (the between-recording part, which no window size
averages away) and C / n the sampling noise of n correlated samples (C = (bins - 1) x the variance inflation of the
autocorrelation). C comes from the distance between the two halves of each recording (4 C / L on average: no
between-recording part, all noise), A from the whole recording's distance minus its noise (C / L). A recording's
histogram, its deviation from the reference shrunk to what a window of the device's size would keep, is then
measured with the device's own PSI and JS functions.
"""

from __future__ import annotations

import numpy as np

from edge_runtime.drift.monitor import js_distance, psi
from edge_runtime.drift.reference import DriftReference, bin_index

_EPS = 1e-4


def _shares(bins: np.ndarray, width: int) -> np.ndarray:
    """[C, width] share of samples per bin, per channel, of [n, C] bin numbers."""
    out = np.zeros((bins.shape[1], width))
    for channel in range(bins.shape[1]):
        out[channel] = np.bincount(bins[:, channel], minlength=width)[:width]
    return out / max(len(bins), 1)


def _chi2(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Symmetric chi-square distance per row: the chi-square of small differences, bounded where a bin is empty."""
    return np.sum((actual - expected) ** 2 / np.clip((actual + expected) / 2, _EPS, None), axis=-1)


def single_recording_metrics(values: np.ndarray, recordings: list[tuple[int, int, int]], reference: DriftReference,
                             window: int, cut: set[int] = frozenset()) -> dict[str, np.ndarray]:
    """Largest PSI and JS distance [K, C] expected of a `window`-sample window inside any of these held-out
    recordings (start, end, class) of each class against `reference` (built without them): each recording's
    histogram with its deviation from the reference scaled to the window's noise
    (sqrt((A + C / window) / (A + C / length))), measured with the device's own metric functions. For a class
    whose recordings are pieces cut from one run (`cut`), the halves of a piece may lie in two real recordings, so
    their distance is not noise alone: such a piece's histogram is taken as it is (no shrinking, an upper bound)."""
    channels, width = reference.channels, reference.bins
    rows = []
    for start, end, cls in recordings:
        if end - start < 4:
            continue
        bins = bin_index(values[start:end], reference.inner_edges).astype(np.int64)
        expected = reference.shares[cls] if reference.classes > 1 else reference.pooled_shares
        middle = len(bins) // 2
        shares = _shares(bins, width)
        halves = _chi2(_shares(bins[:middle], width), _shares(bins[middle:], width))
        rows.append((cls, end - start, shares, expected, _chi2(shares, expected), halves))
    predicted = {"psi": np.zeros((reference.classes, channels)), "js": np.zeros((reference.classes, channels))}
    for cls in {row[0] for row in rows}:
        own = [row for row in rows if row[0] == cls]
        noise = np.mean([length * halves / 4 for _, length, _, _, _, halves in own], axis=0)  # C per channel
        if cls in cut:
            noise = np.zeros_like(noise)
        for _, length, shares, expected, whole, _ in own:
            between = np.maximum(whole - noise / length, 0.0)  # A
            scale = np.sqrt((between + noise / window) / np.maximum(between + noise / length, 1e-12)) if noise.any() \
                else np.ones_like(between)
            scale = np.minimum(scale, 1.0)[:, None]
            window_shares = expected + scale * (shares - expected)
            predicted["psi"][cls] = np.maximum(predicted["psi"][cls], psi(window_shares, expected))
            predicted["js"][cls] = np.maximum(predicted["js"][cls], js_distance(window_shares, expected))
    return predicted
