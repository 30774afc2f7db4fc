"""One model's pruning state: its channel groups, layer maps and MAC counts, and how to build a pruned copy.

Everything `--prune RATIO` and `--prune auto` share lives here; allocation.py decides the ratios for `auto`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from converter.data import Dataset
from converter.errors import ConversionError
from converter.prune.flops import layer_macs
from converter.prune.graph import ChannelGraph, ChannelGroup, analyse, normalize_constants
from converter.prune.layers import LinearMap, linear_map
from converter.prune.refit import refit
from converter.prune.scoring import activation_scores, kept_count, magnitude_scores, strongest
from converter.prune.statistics import InputMoments, gather_moments
from converter.prune.surgery import prune_model

#: Kept channel counts are rounded to a multiple of this (when a group is a multiple of it): CPU GEMM and
#: convolution kernels work on blocks of 4-16 channels, and a ragged count wastes part of a block.
CHANNEL_MULTIPLE = 8
SCORINGS = ("activation", "magnitude")

Keep = dict[int, np.ndarray]


@dataclass
class GroupChange:
    """One row of the pruning report."""

    name: str
    producers: list[str]
    before: int
    after: int


def _nothing_prunable(graph: ChannelGraph) -> str:
    lines = [
        f"  {group.name} ({group.size} channels): left alone: {'; '.join(group.pinned) or 'a single channel'}"
        for group in graph.left_alone()
    ]
    detail = ("\n" + "\n".join(lines)) if lines else " (no Conv, Gemm or MatMul layer with constant weights)"
    return "nothing to prune in this model: no channel group can be removed without changing its outputs" + detail


class ChannelPruner:
    def __init__(
        self,
        model: onnx.ModelProto,
        *,
        scoring: str = "activation",
        refit_layers: bool = True,
        channel_multiple: int = CHANNEL_MULTIPLE,
    ):
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}")
        self.model = normalize_constants(model)
        self.graph = analyse(self.model)
        if not self.graph.prunable():
            raise ConversionError(_nothing_prunable(self.graph))
        self.scoring = scoring
        self.refit_layers = refit_layers
        self.channel_multiple = channel_multiple
        self.nodes = {node.name: node for node in self.model.graph.node}
        self.arrays = {init.name: numpy_helper.to_array(init) for init in self.model.graph.initializer}
        self.maps: dict[str, LinearMap] = {
            c.node: linear_map(c, self.nodes[c.node], self.arrays) for c in self.graph.consumers
        }
        self.macs = layer_macs(self.model)

    @property
    def groups(self) -> list[ChannelGroup]:
        return self.graph.prunable()

    def moments(self, data: Dataset, **kwargs) -> dict[str, InputMoments]:
        """Input moments of the consumers that read a prunable group (the others are never scored or refitted)."""
        prunable = {group.id for group in self.groups}
        consumers = [
            consumer
            for consumer in self.graph.consumers
            if any(segment.group in prunable for segment in self.graph.resolve(consumer.layout).segments)
        ]
        return gather_moments(self.model, consumers, data, **kwargs)

    def scores(self, moments: dict[str, InputMoments]) -> dict[int, np.ndarray]:
        if self.scoring == "magnitude":
            return magnitude_scores(self.graph, self.arrays)
        return activation_scores(self.graph, self.maps, moments)

    def keep(self, ratios: dict[int, float], scores: dict[int, np.ndarray]) -> Keep:
        keep = {}
        for group_id, ratio in ratios.items():
            size = self.graph.groups[group_id].size
            count = kept_count(size, ratio, self.channel_multiple)
            if ratio > 0 and count < size:
                keep[group_id] = strongest(scores[group_id], count)
        return keep

    def build(self, keep: Keep, moments: dict[str, InputMoments] | None) -> onnx.ModelProto:
        """The pruned model; consumers of pruned groups are refitted when moments are given and refit is on."""
        refitted = {}
        if self.refit_layers and moments is not None:
            for consumer in self.graph.consumers:
                layout = self.graph.resolve(consumer.layout)
                if any(segment.group in keep for segment in layout.segments) and consumer.node in moments:
                    positions = self.graph.positions(layout, keep)
                    refitted[consumer.node] = refit(moments[consumer.node], self.maps[consumer.node], positions)
        return prune_model(self.model, self.graph, keep, refitted)

    def estimated_macs(self, keep: Keep) -> int:
        """MACs of Conv/Gemm/MatMul layers after pruning, from the kept fractions of their inputs and outputs."""
        fraction_in: dict[str, float] = {}
        for consumer in self.graph.consumers:
            layout = self.graph.resolve(consumer.layout)
            fraction_in[consumer.node] = len(self.graph.positions(layout, keep)) / self.graph.layout_size(layout)
        for count in self.graph.counts:  # depthwise convolutions scale with their channels
            if count.kind == "group":
                layout = self.graph.resolve(count.layout)
                fraction_in[count.node] = len(self.graph.positions(layout, keep)) / self.graph.layout_size(layout)
        fraction_out: dict[str, float] = {}
        for group_id, kept in keep.items():
            for producer in self.graph.groups[group_id].producers:
                fraction_out[producer.node] = len(kept) / self.graph.groups[group_id].size
        total = 0.0
        for node, macs in self.macs.items():
            total += macs * fraction_in.get(node, 1.0) * fraction_out.get(node, 1.0)
        return int(total)

    def changes(self, keep: Keep) -> list[GroupChange]:
        return [
            GroupChange(
                name=group.name,
                producers=[producer.node for producer in group.producers],
                before=group.size,
                after=len(keep.get(group.id, range(group.size))),
            )
            for group in self.groups
        ]

    def left_alone(self) -> list[dict]:
        return [
            {"name": group.name, "channels": group.size, "reasons": group.pinned or ["a single channel"]}
            for group in self.graph.left_alone()
        ]
