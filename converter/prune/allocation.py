"""`--prune auto`: spend an accuracy budget where it buys the most work removed.

1. Cross-fitting: the calibration data is split into folds; each fold's layer moments are gathered once, and a
   candidate is judged on fold k with its layers refitted on the other folds (Gram matrices add up, so this costs
   a subtraction, not another pass). Every calibration sample is then an out-of-sample judge of the refit.
2. Sensitivity scan: each group alone pruned at each ratio level; its cost is the relative output error on a
   held-out fold (smooth, unlike accuracy on a few hundred samples), its gain the multiply-accumulates removed.
3. A path from nothing pruned to everything at the top level, one step at a time, each step the move with the
   best MACs saved per unit of sensitivity (a greedy walk along the cost/gain frontier).
4. A binary search along that path for the furthest point the judge accepts: the accuracy loss (or top-1
   changes without labels) cross-fitted on the calibration data and, when the user gave --eval data, measured
   there too (the larger counts). Calibration data is usually a slice of the training set, where a model is
   surer of itself than on new data; the evaluation data is what the accuracy gate will judge the bundle on,
   as in NNCF's accuracy control and Intel Neural Compressor's tuning loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from converter.data import Dataset
from converter.prune.pruner import ChannelPruner
from converter.prune.statistics import MAX_ROWS, InputMoments
from converter.runner import make_session, run_dataset

LEVELS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)
FOLDS = 4

Ratios = dict[int, float]
Judge = Callable[[Ratios], float]


@dataclass
class SearchStep:
    ratios: dict[str, float]
    macs: int
    loss: float
    within_budget: bool


@dataclass
class Allocation:
    ratios: Ratios
    steps: list[SearchStep] = field(default_factory=list)
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)


def relative_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    left = reference.reshape(len(reference), -1).astype(np.float64)
    right = candidate.reshape(len(candidate), -1).astype(np.float64)
    return float(np.mean(np.sum((left - right) ** 2, axis=1) / np.maximum(np.sum(left**2, axis=1), 1e-12)))


class CrossFit:
    """Layer moments per fold of the calibration data, and out-of-sample outputs of a candidate allocation."""

    def __init__(self, pruner: ChannelPruner, data: Dataset, output_name: str, folds: int = FOLDS):
        self.pruner = pruner
        self.data = data
        self.output_name = output_name
        index = np.arange(len(data))
        self.parts = [index[index % folds == fold] for fold in range(folds)]
        self.fold_moments = [pruner.moments(data.subset(part), max_rows=MAX_ROWS // folds) for part in self.parts]
        self.total = {
            node: sum((m[node] for m in self.fold_moments[1:]), self.fold_moments[0][node])
            for node in self.fold_moments[0]
        }

    def without(self, fold: int) -> dict[str, InputMoments]:
        return {node: moments - self.fold_moments[fold][node] for node, moments in self.total.items()}

    def fold_output(self, ratios: Ratios, fold: int) -> np.ndarray:
        moments = self.without(fold)
        keep = self.pruner.keep(ratios, self.pruner.scores(moments))
        model = self.pruner.build(keep, moments)
        return run_dataset(make_session(model), self.data.subset(self.parts[fold]))[self.output_name]

    def outputs(self, ratios: Ratios) -> np.ndarray:
        pieces = [self.fold_output(ratios, fold) for fold in range(len(self.parts))]
        result = np.empty((len(self.data), *pieces[0].shape[1:]), dtype=pieces[0].dtype)
        for part, piece in zip(self.parts, pieces, strict=True):
            result[part] = piece
        return result


def _frontier_path(gains: dict[int, list[int]], costs: dict[int, list[float]]) -> list[dict[int, int]]:
    """Level per group, step by step: each step takes the move with the most gain per unit of cost."""
    levels = {group: 0 for group in gains}
    path = [dict(levels)]
    while True:
        best, best_value = None, -1.0
        for group, current in levels.items():
            for level in range(current + 1, len(gains[group])):
                gain = gains[group][level] - gains[group][current]
                cost = max(costs[group][level] - costs[group][current], 1e-9)
                if gain > 0 and gain / cost > best_value:
                    best, best_value = (group, level), gain / cost
        if best is None:
            return path
        levels[best[0]] = best[1]
        path.append(dict(levels))


def allocate(
    pruner: ChannelPruner,
    cross: CrossFit,
    *,
    reference: np.ndarray,
    judge: Judge,
    budget: float,
    advance: Callable[[str], None] | None = None,
) -> Allocation:
    """Per-group ratios for the budget; `reference` = the unpruned model's outputs on the calibration data and
    `judge(ratios)` the accuracy loss of a candidate as the gate measures it."""
    step = advance or (lambda _: None)
    groups = pruner.groups
    names = {group.id: group.name for group in groups}
    held_out = cross.parts[0]
    base_macs = pruner.estimated_macs({})
    gains: dict[int, list[int]] = {}
    costs: dict[int, list[float]] = {}
    sensitivity: dict[str, dict[str, float]] = {}
    for group in groups:
        gains[group.id], costs[group.id] = [0], [0.0]
        for level in LEVELS:
            step(f"sensitivity of {group.name} at {level:g}")
            ratios = {group.id: level}
            output = cross.fold_output(ratios, 0)
            gains[group.id].append(base_macs - pruner.estimated_macs(pruner.keep(ratios, _any_scores(pruner))))
            costs[group.id].append(relative_error(reference[held_out], output))
        levels = zip(LEVELS, costs[group.id][1:], strict=True)
        sensitivity[group.name] = {f"{level:g}": round(cost, 6) for level, cost in levels}
    path = _frontier_path(gains, costs)

    def ratios_at(index: int) -> Ratios:
        return {group: (LEVELS[level - 1] if level else 0.0) for group, level in path[index].items()}

    steps: list[SearchStep] = []
    judged: dict[int, bool] = {0: True}

    def within(index: int) -> bool:
        if index not in judged:
            step(f"accuracy check of step {index} of {len(path) - 1}")
            ratios = ratios_at(index)
            value = judge(ratios)
            judged[index] = value <= budget
            macs = pruner.estimated_macs(pruner.keep(ratios, _any_scores(pruner)))
            steps.append(SearchStep({names[g]: r for g, r in ratios.items()}, macs, round(value, 6), judged[index]))
        return judged[index]

    low, high = 0, len(path) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if within(middle):
            low = middle
        else:
            high = middle - 1
    return Allocation({g: r for g, r in ratios_at(low).items() if r > 0}, steps, sensitivity)


def _any_scores(pruner: ChannelPruner) -> dict[int, np.ndarray]:
    """Placeholder scores: only the kept counts matter when counting MACs."""
    return {group.id: np.zeros(group.size) for group in pruner.groups}
