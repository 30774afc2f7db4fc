"""How far a new recording's hop means stray from a class's reference mean: variance components for the CUSUM.

A hop mean of class k on a device is  m = mu_k + b + e:  b is the recording's own offset (another person, mount or
session: the between-recording spread tau, plus the error of the reference mean itself, which a few recordings
pin down only to tau / sqrt(J)), and e is the within-recording noise, whose sums grow with the long-run variance of
the hop means (neighbouring hops are correlated: overlapping windows give the predicted class, and sensor signals
are smooth or periodic, so the variance of a sum of n hops is not n times that of one hop).

Estimated per class and channel, from the calibration stream cut into recordings (one-way random-effects model,
method of moments):
- omega^2: the largest per-hop variance of the mean of n consecutive hops (n = 1, 2, 4, 8, up to a quarter of a
  recording) around their recording's mean: the short-term noise the CUSUM accumulates, autocorrelation included;
- tau^2: the variance of the recordings' means minus what their own noise explains (omega^2 / hops), at least 0;
- the prediction variance of a new recording's offset from the reference mean: tau^2 (1 + 1/J) + omega^2 / hops.

Recording boundaries are seldom visible: windows cut from recordings played end to end overlap across the joins, so
a class arrives as one long run. Then the runs are cut into pseudo-recordings (`pseudo_recordings`) of a length that
gives every class at least MIN_RECORDINGS of them. A piece cut at an arbitrary point straddles real recordings and
averages their offsets, so for those classes the spread of the piece means is taken whole as between-recording
spread (its noise is not subtracted): an upper bound, where the method of moments would understate it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_RECORDINGS = 8  # a class with fewer runs than this is cut into pseudo-recordings
MIN_RECORDING_HOPS = 4
SCALES = (1, 2, 4, 8)  # hops per sum, for the long-run variance
#: The CUSUM lets a recording stray by Q prediction standard deviations of its offset without accumulating
#: (about 95% of new recordings under a normal random-effects model) ...
Q = 2.0
#: ... and never less than half the smallest offset it is designed to see, in the card's normalised units (channel
#: standard deviations): classic CUSUM design (slack = shift / 2), which also keeps a quiet class (standing still)
#: from alarming on a recording that differs by a hundredth of a channel's range.
DESIGN_SHIFT = 0.5


@dataclass
class CusumDesign:
    """Per class and channel [K, C], normalised units: the scale of a hop's deviation and the slack of the CUSUM."""

    scale: np.ndarray  # omega: long-run standard deviation of a hop mean within a recording
    slack: np.ndarray  # in units of `scale`: max(DESIGN_SHIFT / 2, Q * predicted offset sd) / omega
    between: np.ndarray  # tau: between-recording standard deviation of the class mean
    offset_sd: np.ndarray  # predicted standard deviation of a new recording's mean about the reference mean
    recordings: np.ndarray  # [K] recordings (or pseudo-recordings) each class's estimate rests on


def class_stretches(classes: np.ndarray, segments: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(start, end, class) of every maximal run of one class inside a segment."""
    out = []
    for start, end in segments:
        labels = classes[start:end]
        if not len(labels):
            continue
        cuts = np.flatnonzero(np.diff(labels)) + 1
        bounds = [0, *cuts.tolist(), len(labels)]
        out += [(start + a, start + b, int(labels[a])) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return out


def pseudo_recordings(classes: np.ndarray, segments: list[tuple[int, int]], hop: int
                      ) -> tuple[list[tuple[int, int, int]], set[int]]:
    """The stream's recordings as (start, end, class): its class stretches, and where a class has fewer than
    MIN_RECORDINGS of them, those stretches cut into equal pieces (whole hops) so that it has that many; and the
    classes that were cut."""
    stretches = class_stretches(classes, segments)
    out, cut = [], set()
    for cls in sorted({c for _, _, c in stretches}):
        own = [(a, b) for a, b, c in stretches if c == cls]
        if len(own) >= MIN_RECORDINGS:
            out += [(a, b, cls) for a, b in own]
            continue
        cut.add(cls)
        total_hops = sum((b - a) // hop for a, b in own)
        length = hop * max(MIN_RECORDING_HOPS, total_hops // MIN_RECORDINGS)
        for a, b in own:
            cuts = list(range(a, b, length))
            if len(cuts) > 1 and b - cuts[-1] < length // 2:  # a short tail joins the piece before it
                cuts.pop()
            out += [(c, d, cls) for c, d in zip(cuts, [*cuts[1:], b], strict=True)]
    return sorted(out), cut


def _hop_means(values: np.ndarray, start: int, end: int, hop: int) -> np.ndarray:
    """[n, C] means of the whole hops of one recording, on the grid the device uses (from its start)."""
    count = (end - start) // hop
    return values[start : start + count * hop].reshape(count, hop, -1).mean(axis=1)


def _short_run_variance(series: list[np.ndarray]) -> np.ndarray:
    """[C] the per-hop variance of sums of n consecutive hop means around each recording's mean, for n up to a
    quarter of a recording (n in SCALES; the largest wins), pooled over recordings, unbiased within one. Longer
    scales are left out on purpose: whatever persists longer than that is the recording's offset, and belongs to
    the between-recording spread (and the slack), not to the noise (and the scale)."""
    channels = series[0].shape[1]
    shortest = min(len(hops) for hops in series)
    best = np.zeros(channels)
    for n in SCALES:
        if n > 1 and n > shortest // 4:
            break
        squares, dof = np.zeros(channels), 0
        for hops in series:
            blocks = len(hops) // n
            if blocks < 2:
                continue
            means = hops[: blocks * n].reshape(blocks, n, -1).mean(axis=1)
            squares += ((means - means.mean(axis=0)) ** 2).sum(axis=0)
            dof += blocks - 1
        if dof >= 2:
            best = np.maximum(best, n * squares / dof)
    return best


def cusum_design(values: np.ndarray, classes: np.ndarray, n_classes: int, recordings: list[tuple[int, int, int]],
                 hop: int, fallback_std: np.ndarray, cut: set[int] = frozenset()) -> CusumDesign:
    """Variance components per class and channel (see the module docstring). For a class whose recordings are
    pieces cut from a run (`cut`), the spread of the piece means is taken whole as between-recording spread: a
    piece straddles real recordings, so subtracting its noise would leave too little (an upper bound instead of an
    estimate, on purpose). A class without two usable
    recordings borrows the median between/within ratio of the classes that have them; one with no data at all
    takes its scale from `fallback_std` [K, C] (the class's sample standard deviation)."""
    channels = values.shape[1]
    omega = np.zeros((n_classes, channels))
    tau = np.full((n_classes, channels), np.nan)
    counts = np.zeros(n_classes, dtype=np.int64)
    total_hops = np.zeros(n_classes)
    for cls in range(n_classes):
        series = [_hop_means(values, a, b, hop) for a, b, c in recordings if c == cls and (b - a) // hop >= 2]
        counts[cls] = len(series)
        total_hops[cls] = sum(len(s) for s in series)
        omega[cls] = _short_run_variance(series) ** 0.5 if series else 0.0
        if not omega[cls].any():
            omega[cls] = fallback_std[cls] if len(series) < 2 else omega[cls]
        if len(series) >= 2:
            means = np.stack([s.mean(axis=0) for s in series])
            noise = 0.0 if cls in cut else omega[cls] ** 2 * np.mean([1.0 / len(s) for s in series])
            tau[cls] = np.sqrt(np.maximum(means.var(axis=0, ddof=1) - noise, 0.0))
    omega = np.maximum(omega, 1e-6)
    known = ~np.isnan(tau[:, 0])
    ratio = np.median(tau[known] / omega[known], axis=0) if known.any() else np.ones(channels)
    tau = np.where(np.isnan(tau), ratio * omega, tau)
    offset_sd = np.sqrt(tau**2 * (1.0 + 1.0 / np.maximum(counts, 1))[:, None]
                        + omega**2 / np.maximum(total_hops, 1)[:, None])
    slack = np.maximum(DESIGN_SHIFT / 2, Q * offset_sd) / omega
    return CusumDesign(scale=omega, slack=slack, between=tau, offset_sd=offset_sd, recordings=counts)
