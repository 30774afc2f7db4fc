"""How much each channel matters, and which ones a group keeps.

Activation-aware score: a channel's share of what its consumers compute, var(x_j) * ||w_j||^2 summed over the
features it feeds (its kh*kw taps, or its flattened block), each consumer's shares normalised to sum 1 so that a
wide head does not outvote a convolution. The variance (not the raw second moment) is used because a channel that
is nearly constant on real data is exactly what the refit can fold into the bias. The magnitude score (L1 norm of
the producers' filters) is the classic data-free criterion, kept as the baseline the benchmark compares against.
"""

from __future__ import annotations

import numpy as np

from converter.prune.graph import ChannelGraph
from converter.prune.layers import LinearMap
from converter.prune.statistics import InputMoments


def activation_scores(
    graph: ChannelGraph, maps: dict[str, LinearMap], moments: dict[str, InputMoments]
) -> dict[int, np.ndarray]:
    scores = {group.id: np.zeros(group.size) for group in graph.prunable()}
    for consumer in graph.consumers:
        layout = graph.resolve(consumer.layout)
        touched = [s.group for s in layout.segments if s.group in scores]
        if not touched or consumer.node not in moments:
            continue
        linear = maps[consumer.node]
        contribution = moments[consumer.node].variances() * np.sum(linear.coefficients**2, axis=1)
        per_position = contribution.reshape(-1, linear.taps).sum(axis=1)
        total = per_position.sum()
        if total <= 0:
            continue
        for group in set(touched):
            positions = graph.channel_positions(layout, group)
            scores[group] += per_position[positions].sum(axis=1) / total
    return scores


def magnitude_scores(graph: ChannelGraph, arrays: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    scores = {}
    for group in graph.prunable():
        total = np.zeros(group.size)
        for producer in group.producers:
            weight = np.moveaxis(np.abs(arrays[producer.weight]), producer.axis, 0)
            norms = weight.reshape(group.size, -1).sum(axis=1)
            total += norms / max(norms.sum(), 1e-12)
        scores[group.id] = total
    return scores


def kept_count(size: int, ratio: float, multiple: int = 1) -> int:
    """Channels left after removing `ratio` of `size`, rounded to a multiple the kernels like (at least one)."""
    keep = size - int(round(ratio * size))
    if multiple > 1 and size % multiple == 0 and size >= 2 * multiple:
        keep = max(multiple, int(round(keep / multiple)) * multiple)
    return int(min(size, max(1, keep)))


def strongest(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` highest scores, in channel order (stable for ties)."""
    order = np.argsort(-scores, kind="stable")[:count]
    return np.sort(order)
