"""What "normal" looks like for drift detection: fixed bins, per-class histograms, ranges and moments.

Built by the converter from the calibration stream (and, for threshold calibration, from parts of it), stored in
the bundle, read by the device. Per class, because a real stream is long runs of one class: a window that is all
"standing" must be compared with standing, not with the mixture of every activity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BINS = 10
_EPS_STD = 1e-6
# The daemon judges a hop of samples at a time; neighbouring samples of a sensor are strongly correlated, so a
# hop's mean varies about as much as the mean of this many independent samples would.
HOP_EFFECTIVE_SAMPLES = 4


def quantile_edges(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Inner bin edges (bins - 1 of them) at the quantiles of one channel; duplicates removed."""
    inner = np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.unique(inner)


def bin_index(values: np.ndarray, inner_edges: list[np.ndarray]) -> np.ndarray:
    """[n, C] values -> [n, C] bin numbers; values beyond the outer edges fall in the outer bins."""
    out = np.empty(values.shape, dtype=np.int16)
    for channel, edges in enumerate(inner_edges):
        out[:, channel] = np.searchsorted(edges, values[:, channel], side="right")
    return out


@dataclass
class DriftReference:
    """Reference statistics of one input stream. Shapes: C channels, K classes (1 when pooled), B bins."""

    inner_edges: list[np.ndarray]  # per channel, sorted, length bins_c - 1
    shares: np.ndarray  # [K, C, B] share of samples per bin; a channel with fewer bins has zeros beyond
    pooled_shares: np.ndarray  # [C, B]
    mean: np.ndarray  # [K, C]
    std: np.ndarray  # [K, C]
    low: np.ndarray  # [K, C] smallest value seen
    high: np.ndarray  # [K, C] largest value seen
    class_prior: np.ndarray  # [K] share of samples per class
    counts: np.ndarray  # [K] samples per class
    pooled_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [C]
    pooled_std: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [C]
    # [K, C] how far a short stretch's mean strays from the class mean without any drift: the spread of the class
    # mean between runs (people, mounts, sessions) combined with the within-run spread of a few samples' mean
    mean_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # [K, C] the CUSUM's slack per class and channel, in units of `mean_scale`: how far a new recording's hop means
    # may stray for good (its own offset among recordings) without accumulating. Empty in bundles made before it
    # existed: the monitor then uses its single default slack, as those bundles were calibrated for.
    cusum_slack: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def channels(self) -> int:
        return len(self.inner_edges)

    @property
    def classes(self) -> int:
        return self.shares.shape[0]

    @property
    def bins(self) -> int:
        return self.shares.shape[2]

    def as_dict(self) -> dict:
        return {
            "inner_edges": [edges.tolist() for edges in self.inner_edges],
            "shares": self.shares.round(6).tolist(),
            "pooled_shares": self.pooled_shares.round(6).tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "class_prior": self.class_prior.tolist(),
            "counts": self.counts.tolist(),
            "pooled_mean": self.pooled_mean.tolist(),
            "pooled_std": self.pooled_std.tolist(),
            "mean_scale": self.mean_scale.tolist(),
            **({"cusum_slack": self.cusum_slack.tolist()} if self.cusum_slack.size else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> DriftReference:
        return cls(
            inner_edges=[np.asarray(edges, dtype=np.float64) for edges in data["inner_edges"]],
            shares=np.asarray(data["shares"], dtype=np.float64),
            pooled_shares=np.asarray(data["pooled_shares"], dtype=np.float64),
            mean=np.asarray(data["mean"], dtype=np.float64),
            std=np.asarray(data["std"], dtype=np.float64),
            low=np.asarray(data["low"], dtype=np.float64),
            high=np.asarray(data["high"], dtype=np.float64),
            class_prior=np.asarray(data["class_prior"], dtype=np.float64),
            counts=np.asarray(data["counts"], dtype=np.float64),
            pooled_mean=np.asarray(data["pooled_mean"], dtype=np.float64),
            pooled_std=np.asarray(data["pooled_std"], dtype=np.float64),
            mean_scale=np.asarray(data["mean_scale"], dtype=np.float64),
            cusum_slack=np.asarray(data.get("cusum_slack", []), dtype=np.float64),
        )


def build_reference(
    values: np.ndarray,
    classes: np.ndarray | None,
    n_classes: int,
    *,
    segments: list[tuple[int, int]] | None = None,
    inner_edges: list[np.ndarray] | None = None,
) -> DriftReference:
    """Reference statistics of a [T, C] sample stream whose samples belong to `classes` [T] (None: pooled);
    `segments` are its contiguous runs [start, end), which give the between-run spread of each class mean."""
    values = np.asarray(values, dtype=np.float64)
    channels = values.shape[1]
    if inner_edges is None:
        inner_edges = [quantile_edges(values[:, c]) for c in range(channels)]
    bins = max(len(edges) for edges in inner_edges) + 1
    k = n_classes if classes is not None else 1
    labels = classes if classes is not None else np.zeros(len(values), dtype=np.int64)
    index = bin_index(values, inner_edges)
    shares = np.zeros((k, channels, bins))
    mean, std = np.zeros((k, channels)), np.zeros((k, channels))
    low, high = np.zeros((k, channels)), np.zeros((k, channels))
    counts = np.zeros(k)
    pooled_mean, pooled_std = values.mean(axis=0), values.std(axis=0)
    for cls in range(k):
        rows = labels == cls
        counts[cls] = rows.sum()
        if not counts[cls]:  # a class the data never shows: fall back on the pooled statistics
            shares[cls] = _shares(index, channels, bins)
            mean[cls], std[cls] = pooled_mean, pooled_std
            low[cls], high[cls] = values.min(axis=0), values.max(axis=0)
            continue
        shares[cls] = _shares(index[rows], channels, bins)
        mean[cls], std[cls] = values[rows].mean(axis=0), values[rows].std(axis=0)
        low[cls], high[cls] = values[rows].min(axis=0), values[rows].max(axis=0)
    std = np.maximum(std, _EPS_STD)
    between = _between_run_std(values, labels, k, segments or [(0, len(values))])
    return DriftReference(
        inner_edges=inner_edges,
        shares=shares,
        pooled_shares=_shares(index, channels, bins),
        mean=mean,
        std=std,
        low=low,
        high=high,
        class_prior=counts / max(counts.sum(), 1.0),
        counts=counts,
        pooled_mean=pooled_mean,
        pooled_std=np.maximum(pooled_std, _EPS_STD),
        mean_scale=np.sqrt(between**2 + std**2 / HOP_EFFECTIVE_SAMPLES),
    )


def _between_run_std(values: np.ndarray, labels: np.ndarray, k: int, segments: list[tuple[int, int]]) -> np.ndarray:
    """[K, C] standard deviation, across runs, of each run's mean for each class (0 with fewer than 2 runs)."""
    out = np.zeros((k, values.shape[1]))
    for cls in range(k):
        means = []
        for start, end in segments:
            rows = labels[start:end] == cls
            if rows.sum() >= 10:
                means.append(values[start:end][rows].mean(axis=0))
        if len(means) >= 2:
            out[cls] = np.std(np.asarray(means), axis=0, ddof=1)
    return out


def _shares(index: np.ndarray, channels: int, bins: int) -> np.ndarray:
    out = np.zeros((channels, bins))
    for channel in range(channels):
        out[channel] = np.bincount(index[:, channel], minlength=bins)[:bins]
    return out / max(len(index), 1)
