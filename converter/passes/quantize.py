"""Quantize: onnxruntime's static QDQ quantizer with the board's signedness, and fp16 for GPU boards.

The calibration method is chosen by measured fidelity on calibration samples held out from calibration, not by
habit; when the accuracy gate fails, `sensitive_nodes` ranks nodes by how much signal they lose to quantization
(onnxruntime's qdq_loss_debug) so the pipeline can leave the worst in float and try again.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from converter.data import Dataset
from edge_runtime.board import Board

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
_QUANT_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}


class DatasetReader(CalibrationDataReader):
    """Feeds a Dataset to the calibrator in small batches and reports progress."""

    def __init__(self, dataset: Dataset, batch_size: int, advance: Callable[[int], None] | None = None):
        self.dataset = dataset
        self.batch_size = batch_size
        self.advance = advance
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is not None and self.advance:
            self.advance(len(next(iter(batch.values()))))
        return batch

    def rewind(self) -> None:
        self._batches = iter(self.dataset.batches(self.batch_size))


@dataclass
class QuantizeSettings:
    """What the board allows, in onnxruntime's terms."""

    activation_type: QuantType
    weight_type: QuantType
    per_channel: bool
    reduce_range: bool
    op_types: list[str] | None

    @classmethod
    def for_board(cls, board: Board) -> QuantizeSettings:
        support = board.quantization
        return cls(
            activation_type=_QUANT_TYPES[support.activations],
            weight_type=_QUANT_TYPES[support.weights],
            per_channel=support.per_channel,
            reduce_range=support.reduce_range,
            op_types=support.fast_ops or None,
        )

    def describe(self) -> str:
        act = "U8" if self.activation_type == QuantType.QUInt8 else "S8"
        wgt = "U8" if self.weight_type == QuantType.QUInt8 else "S8"
        scope = "per-channel" if self.per_channel else "per-tensor"
        return f"QDQ {act}{wgt} {scope}" + (" reduce-range" if self.reduce_range else "")


@dataclass
class CalibrationTrial:
    method: str
    agreement: float | None
    cosine_mean: float
    chosen: bool = False


@dataclass
class QuantizeOutcome:
    model: onnx.ModelProto
    method: str
    trials: list[CalibrationTrial] = field(default_factory=list)


def quantize_int8(
    model: onnx.ModelProto,
    settings: QuantizeSettings,
    calibration: Dataset,
    *,
    method: str = "minmax",
    nodes_to_exclude: Sequence[str] = (),
    batch_size: int = 16,
    advance: Callable[[int], None] | None = None,
) -> onnx.ModelProto:
    """One run of onnxruntime's static quantizer; the model is written to and read from a temporary folder."""
    logging.getLogger("root").setLevel(logging.ERROR)
    if method != "minmax":
        batch_size = 1  # the histogram calibrators stack per-batch arrays and need equal batch sizes
    with (
        tempfile.TemporaryDirectory(prefix="edge-quantize-") as workdir,
        contextlib.redirect_stdout(io.StringIO()),  # the calibrators print progress to stdout
    ):
        source, target = Path(workdir) / "float.onnx", Path(workdir) / "int8.onnx"
        onnx.save(model, str(source))
        quantize_static(
            str(source),
            str(target),
            DatasetReader(calibration, batch_size, advance),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=settings.op_types,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=settings.activation_type,
            weight_type=settings.weight_type,
            nodes_to_exclude=list(nodes_to_exclude),
            calibrate_method=CALIBRATION_METHODS[method],
        )
        return onnx.load(str(target))


def quantize_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Float16 weights and arithmetic with float32 inputs and outputs, for GPU boards (TensorRT, CUDA)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True)


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in model.graph.node for output in node.output}


def sensitive_nodes(
    float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, samples: Dataset, *, batch_size: int = 16
) -> list[tuple[str, float]]:
    """Nodes of the float model ranked by the signal-to-quantization-noise they lose (dB), worst first.

    A node's loss is the SQNR of its inputs in the quantized model minus the SQNR of its output: errors
    accumulate along the graph, so the raw SQNR of late tensors would blame the last layers for everything.
    """
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    with tempfile.TemporaryDirectory(prefix="edge-qdq-debug-") as workdir:
        paths = {}
        for name, model in (("float", float_model), ("qdq", qdq_model)):
            plain, augmented = Path(workdir) / f"{name}.onnx", Path(workdir) / f"{name}.aug.onnx"
            onnx.save(model, str(plain))
            modify_model_output_intermediate_tensors(str(plain), str(augmented))
            paths[name] = str(augmented)
        float_acts = collect_activations(paths["float"], DatasetReader(samples, batch_size))
        qdq_acts = collect_activations(paths["qdq"], DatasetReader(samples, batch_size))
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    sqnr = {name: values["xmodel_err"] for name, values in errors.items() if "xmodel_err" in values}
    graph_inputs = {value.name for value in float_model.graph.input}
    ranking = []
    for node in float_model.graph.node:
        outputs = [sqnr[name] for name in node.output if name in sqnr]
        if not outputs or not node.name:
            continue
        inputs = [sqnr[name] for name in node.input if name in sqnr and name not in graph_inputs]
        before = min(inputs) if inputs else max(outputs)
        ranking.append((node.name, float(before - min(outputs))))
    ranking.sort(key=lambda item: item[1], reverse=True)
    return ranking
