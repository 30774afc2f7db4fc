"""Quantize: onnxruntime's static QDQ quantizer with the board's signedness, and fp16 for GPU boards.

The calibration method is chosen by measured fidelity on calibration samples held out from calibration, not by
habit; when the accuracy gate fails, `sensitive_nodes` ranks nodes by how much signal they lose to quantization
(onnxruntime's qdq_loss_debug) so the pipeline can leave the worst in float and try again.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
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

from converter.conversion import Conversion
from converter.data import Dataset
from converter.errors import ConversionError
from converter.evaluate import compare
from converter.int8_region import choose_region
from converter.opset_upgrade import prepare_for_qdq
from edge_runtime.board import Board

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
_QUANT_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
#: Rounds of leaving more of the most sensitive nodes in float (1, 2, 4, 8 more) before the gate refuses.
MAX_EXCLUSION_ROUNDS = 4


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
        warnings.catch_warnings(),  # numpy's all-NaN warnings and the like: a failure is reported as one line
    ):
        warnings.simplefilter("ignore")
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


def choose_calibration(
    conversion: Conversion[onnx.ModelProto],
    settings: QuantizeSettings,
    calibration: Dataset,
    model: onnx.ModelProto | None = None,
) -> str:
    """Quantize with each calibration method on 3/4 of the calibration data, keep the one whose outputs
    stay closest to the float model on the held-out quarter."""
    model = conversion.float_model if model is None else model
    report = conversion.report
    if len(calibration) < 8:
        report.notes.append("fewer than 8 calibration samples: calibration method fixed to minmax")
        return "minmax"
    index = np.arange(len(calibration))
    fit, held_out = calibration.subset(index % 4 != 3), calibration.subset(index % 4 == 3)
    float_out = conversion.run(model, held_out, "held-out (float)")[conversion.output_name]
    trials = []
    for method in CALIBRATION_METHODS:
        with conversion.progress.bar(f"calibrate {method}", len(fit)) as advance:
            candidate = quantize_int8(model, settings, fit, method=method, advance=advance)
        out = conversion.run(candidate, held_out, f"held-out ({method})")[conversion.output_name]
        fidelity = compare(float_out, out, classification=conversion.classification, threshold=conversion.threshold)
        trials.append(CalibrationTrial(method, fidelity.agreement, round(fidelity.cosine_mean, 6)))
    best = max(trials, key=lambda t: (t.agreement if t.agreement is not None else 0.0, t.cosine_mean))
    best.chosen = True
    report.calibration = [trial.__dict__ for trial in trials]
    return best.method


def _choose_region(
    conversion: Conversion[onnx.ModelProto], settings: QuantizeSettings, model: onnx.ModelProto, calibration: Dataset
) -> list[str]:
    """The operator types to quantize: the board's list, widened where this host measured it faster."""
    board = conversion.board
    base = list(settings.op_types or board.quantization.fast_ops)
    if not conversion.options.measure_latency:
        measurable = "not measured (--no-latency)"
    elif not board.runs_on_this_host():
        measurable = f"not measured: the target '{board.name}' is {board.arch} and this host is {platform.machine()}"
    else:
        measurable = ""
    reference: dict[int, np.ndarray] = {}

    def quantize(graph: onnx.ModelProto, op_types: list[str], data: Dataset) -> onnx.ModelProto:
        return quantize_int8(graph, replace(settings, op_types=op_types), data)

    def loss(graph: onnx.ModelProto, data: Dataset) -> float:
        key = id(data)
        if key not in reference:
            reference[key] = conversion.run(model, data, "held-out (float)")[conversion.output_name]
        outputs = conversion.run(graph, data, "held-out (int8 region)")[conversion.output_name]
        return conversion.data_loss(data, reference[key], outputs)

    with conversion.progress.bar("int8 region", 1) as advance:
        choice = choose_region(
            model, base, calibration, quantize, loss, measurable=measurable, budget=conversion.options.max_accuracy_drop
        )
        advance(1)
    conversion.report.int8_region = choice.as_dict()
    return choice.op_types


def _int8_stage(conversion: Conversion[onnx.ModelProto]) -> str:
    """Quantize, then while the accuracy gate fails leave the most sensitive nodes in float."""
    calibration = conversion.data.calibration
    if calibration is None:
        raise ConversionError("int8 quantization needs --calibration DATA.npz (or use --quantize none)")
    settings = QuantizeSettings.for_board(conversion.board)
    opset = prepare_for_qdq(conversion.float_model, settings.per_channel, calibration.first())
    model, settings.per_channel = opset.model, opset.per_channel
    if opset.note:
        conversion.report.notes.append(opset.note)
    settings.op_types = _choose_region(conversion, settings, model, calibration)
    method = choose_calibration(conversion, settings, calibration, model)
    with conversion.progress.bar(f"calibrate {method} (all data)", len(calibration)) as advance:
        quantized = quantize_int8(model, settings, calibration, method=method, advance=advance)
    stage = f"int8 {settings.describe()}, {method}"
    conversion.record(stage, quantized, "int8")
    excluded: list[str] = []
    rounds = 0
    while conversion.loss(stage) > conversion.options.max_accuracy_drop and rounds < MAX_EXCLUSION_ROUNDS:
        rounds += 1
        samples = calibration.subset(slice(0, min(64, len(calibration))))
        ranking = [name for name, _ in sensitive_nodes(model, quantized, samples) if name not in excluded]
        if not ranking:
            break
        excluded += ranking[: 2 ** (rounds - 1)]
        with conversion.progress.bar(f"re-quantize without {len(excluded)} node(s)", len(calibration)) as advance:
            quantized = quantize_int8(
                model, settings, calibration, method=method, nodes_to_exclude=excluded, advance=advance
            )
        stage = f"int8, {len(excluded)} node(s) in float"
        conversion.record(stage, quantized, "mixed", note="excluded: " + ", ".join(excluded))
    conversion.report.excluded_nodes = excluded
    return stage


def quantize_pass(conversion: Conversion[onnx.ModelProto]) -> None:
    """The pipeline's `quantize`: the float model to the precision the board runs best (or the one asked for)."""
    report = conversion.report
    if conversion.quantize == "int8":
        conversion.quantized_stage = _int8_stage(conversion)
        report.passes["quantize"] = "ran (int8)"
    elif conversion.quantize == "fp16":
        conversion.record("fp16", quantize_fp16(conversion.float_model), "fp16")
        conversion.quantized_stage = "fp16"
        report.passes["quantize"] = "ran (fp16)"
    else:
        report.passes["quantize"] = "off (--quantize none)"
