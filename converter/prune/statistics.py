"""Second moments of every consumer layer's input, gathered on calibration data in one pass.

Both the channel scores and the least-squares refit need, per consumer, the Gram matrix of the rows the layer
multiplies by its weights: im2col patches for a convolution, feature vectors for Gemm/MatMul, with a constant 1
appended for the bias. Patch rows are sampled (at most `max_rows` per layer) so the 32x32 stage of a CNN costs no
more than the 8x8 one, and the Gram is accumulated batch by batch so memory stays at one batch of activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from converter.data import Dataset
from converter.errors import ConversionError
from converter.prune.graph import Consumer
from converter.runner import has_dynamic_batch, make_session

MAX_ROWS = 16384


@dataclass(frozen=True)
class ConvGeometry:
    """A 1-D or 2-D convolution as 2-D: kernel, strides, dilations, begin/end pads, output size."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    out: tuple[int, int]

    @property
    def taps(self) -> int:
        return self.kernel[0] * self.kernel[1]


def _as_2d(values: list[int], fill: int) -> tuple[int, int]:
    return (fill, values[0]) if len(values) == 1 else (values[0], values[1])


def conv_geometry(node: onnx.NodeProto, weight_shape: tuple[int, ...], spatial: tuple[int, ...]) -> ConvGeometry:
    """Resolve a Conv node's attributes (including auto_pad) for an input of the given spatial size."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    dims = len(weight_shape) - 2
    kernel = list(weight_shape[2:])
    strides = list(attrs.get("strides", [1] * dims))
    dilations = list(attrs.get("dilations", [1] * dims))
    pads = list(attrs.get("pads", [0] * (2 * dims)))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    out = []
    for axis in range(dims):
        extent = (kernel[axis] - 1) * dilations[axis] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            size = math.ceil(spatial[axis] / strides[axis])
            total = max((size - 1) * strides[axis] + extent - spatial[axis], 0)
            small, large = total // 2, total - total // 2
            pads[axis], pads[axis + dims] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        elif auto_pad == "VALID":
            pads[axis] = pads[axis + dims] = 0
        out.append((spatial[axis] + pads[axis] + pads[axis + dims] - extent) // strides[axis] + 1)
    begin, end = pads[:dims], pads[dims:]
    top, left = _as_2d(begin, 0)
    bottom, right = _as_2d(end, 0)
    return ConvGeometry(
        kernel=_as_2d(kernel, 1),
        strides=_as_2d(strides, 1),
        dilations=_as_2d(dilations, 1),
        pads=(top, left, bottom, right),
        out=_as_2d(out, 1),
    )


def conv_patches(x: np.ndarray, geometry: ConvGeometry, per_sample: int, rng: np.random.Generator) -> np.ndarray:
    """im2col rows at `per_sample` random output positions of each sample: (rows, C * kh * kw), weight order."""
    if x.ndim == 3:
        x = x[:, :, None, :]
    batch, channels = x.shape[:2]
    top, left, bottom, right = geometry.pads
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    out_h, out_w = geometry.out
    total = out_h * out_w
    count = min(per_sample, total)
    if count == total:
        positions = np.broadcast_to(np.arange(total), (batch, total))
    else:
        positions = np.argsort(rng.random((batch, total)), axis=1)[:, :count]
    taps_h = np.arange(geometry.kernel[0]) * geometry.dilations[0]
    taps_w = np.arange(geometry.kernel[1]) * geometry.dilations[1]
    rows_h = (positions // out_w)[:, :, None] * geometry.strides[0] + taps_h
    rows_w = (positions % out_w)[:, :, None] * geometry.strides[1] + taps_w
    samples = np.arange(batch)[:, None, None, None]
    patches = padded[samples, :, rows_h[:, :, :, None], rows_w[:, :, None, :]]  # (B, m, kh, kw, C)
    return patches.transpose(0, 1, 4, 2, 3).reshape(batch * count, channels * geometry.taps)


@dataclass
class InputMoments:
    """Sum of x x^T over sampled input rows of one consumer, x with a trailing constant 1 (for the bias)."""

    gram: np.ndarray
    rows: int

    @property
    def features(self) -> int:
        return self.gram.shape[0] - 1

    def __add__(self, other: InputMoments) -> InputMoments:
        return InputMoments(self.gram + other.gram, self.rows + other.rows)

    def __sub__(self, other: InputMoments) -> InputMoments:
        return InputMoments(self.gram - other.gram, self.rows - other.rows)

    def variances(self) -> np.ndarray:
        """Per-feature variance: what a channel carries beyond a constant the refit can fold into the bias."""
        mean = self.gram[:-1, -1] / self.rows
        return np.maximum(np.diag(self.gram)[:-1] / self.rows - mean**2, 0.0)


class _Accumulator:
    def __init__(self, consumer: Consumer, node: onnx.NodeProto, weight_shape: tuple[int, ...], per_sample: int):
        self.consumer = consumer
        self.node = node
        self.weight_shape = weight_shape
        self.per_sample = per_sample
        self.geometry: ConvGeometry | None = None
        self.gram: np.ndarray | None = None
        self.shift: np.ndarray | None = None
        self.rows = 0

    def rows_of(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.consumer.op == "Conv":
            if self.geometry is None:
                self.geometry = conv_geometry(self.node, self.weight_shape, tuple(x.shape[2:]))
            return conv_patches(x, self.geometry, self.per_sample, rng)
        if self.consumer.op == "Gemm":
            return x.reshape(len(x), -1)
        flat = x.reshape(len(x), -1, x.shape[-1])
        if flat.shape[1] > self.per_sample:
            keep = np.sort(rng.choice(flat.shape[1], self.per_sample, replace=False))
            flat = flat[:, keep]
        return flat.reshape(-1, x.shape[-1])

    def add(self, x: np.ndarray, rng: np.random.Generator) -> None:
        """Accumulate the Gram of rows shifted by the first batch's mean: float32 products of centred values keep
        their precision (raw ones lose it when a feature's mean dwarfs its spread); `moments` undoes the shift."""
        rows = self.rows_of(np.asarray(x, dtype=np.float32), rng)
        if self.shift is None:
            self.shift = rows.mean(axis=0, dtype=np.float64).astype(np.float32)
        rows = np.concatenate([rows - self.shift, np.ones((len(rows), 1), np.float32)], axis=1)
        product = (rows.T @ rows).astype(np.float64)
        self.gram = product if self.gram is None else self.gram + product
        self.rows += len(rows)

    def moments(self) -> InputMoments:
        """The Gram of the unshifted rows [x, 1] = [y + s, 1] = T [y, 1]: T G_y T' in float64."""
        assert self.gram is not None and self.shift is not None
        size = len(self.gram)
        transform = np.eye(size)
        transform[:-1, -1] = self.shift.astype(np.float64)
        return InputMoments(transform @ self.gram @ transform.T, self.rows)


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of the model that also returns the named intermediate tensors."""
    extended = onnx.ModelProto.FromString(model.SerializeToString())
    present = {output.name for output in extended.graph.output}
    for name in names:
        if name not in present:
            extended.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            present.add(name)
    return extended


def gather_moments(
    model: onnx.ModelProto,
    consumers: list[Consumer],
    data: Dataset,
    *,
    max_rows: int = MAX_ROWS,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, InputMoments]:
    """Input moments of each consumer (by node name) over the calibration data."""
    nodes = {node.name: node for node in model.graph.node}
    weights = {init.name: tuple(init.dims) for init in model.graph.initializer}
    per_sample = max(1, math.ceil(max_rows / len(data)))
    accumulators = [_Accumulator(c, nodes[c.node], weights[c.weight], per_sample) for c in consumers]
    names = sorted({c.input for c in consumers})
    session = make_session(with_outputs(model, names))
    size = batch_size if has_dynamic_batch(session) else 1
    rng = np.random.default_rng(seed)
    for feed in data.batches(size):
        values = dict(zip(names, session.run(names, feed), strict=True))
        for accumulator in accumulators:
            value = values[accumulator.consumer.input]
            if value.dtype != np.float32:
                raise ConversionError(
                    f"pruning works on float32 models; '{accumulator.consumer.input}' is {value.dtype}"
                )
            accumulator.add(value, rng)
    return {a.consumer.node: a.moments() for a in accumulators if a.gram is not None}
