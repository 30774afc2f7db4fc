"""Quantize: onnxruntime's static QDQ quantizer with the board's signedness, and fp16 for GPU boards.

The calibration method is chosen by measured fidelity on calibration samples held out from calibration, not by
habit, judged as the gate judges (converter/held_out.py: matched boxes for a detector); when the accuracy gate
fails, the nodes whose int8 inputs alone cost the most at the output (converter/sensitivity.py) are left in float
and it tries again.
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
from converter.held_out import HeldOutJudge
from converter.int8_region import choose_region
from converter.opset_upgrade import prepare_for_qdq
from converter.sensitivity import rank_nodes
from edge_runtime.board import Board

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
_QUANT_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
#: Rounds of leaving more of the most sensitive nodes in float (1, 2, 4, 8 more) before the gate refuses.
MAX_EXCLUSION_ROUNDS = 4
#: Calibration samples the per-node sensitivity is measured on (one run of them per quantized node)
SENSITIVITY_SAMPLES = 16


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
    loss: float | None = None  # the gate's measure on the held-out quarter
    error: float | None = None  # the continuous error that breaks ties (converter/held_out.py)


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
    judge = HeldOutJudge(conversion, model, held_out)
    trials = []
    for method in CALIBRATION_METHODS:
        with conversion.progress.bar(f"calibrate {method}", len(fit)) as advance:
            candidate = quantize_int8(model, settings, fit, method=method, advance=advance)
        judged = judge(candidate, f"held-out ({method})")
        trials.append(CalibrationTrial(method, judged.agreement, round(judged.cosine_mean, 6),
                                       loss=round(judged.loss, 6), error=round(judged.error, 6)))
    best = min(trials, key=lambda t: (t.loss, t.error))
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
    judges: dict[int, HeldOutJudge] = {}

    def quantize(graph: onnx.ModelProto, op_types: list[str], data: Dataset) -> onnx.ModelProto:
        return quantize_int8(graph, replace(settings, op_types=op_types), data)

    def loss(graph: onnx.ModelProto, data: Dataset) -> float:
        if id(data) not in judges:
            judges[id(data)] = HeldOutJudge(conversion, model, data)
        return judges[id(data)](graph, "held-out (int8 region)").loss

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
    calibration, boxed = _detector_order(conversion, model, calibration)
    settings.op_types = _choose_region(conversion, settings, model, calibration)
    method = choose_calibration(conversion, settings, calibration, model)
    with conversion.progress.bar(f"calibrate {method} (all data)", len(calibration)) as advance:
        quantized = quantize_int8(model, settings, calibration, method=method, advance=advance)
    stage = f"int8 {settings.describe()}, {method}"
    conversion.record(stage, quantized, "int8")
    excluded: list[str] = []
    ranking: list[str] | None = None
    rounds = 0
    while conversion.loss(stage) > conversion.options.max_accuracy_drop and rounds < MAX_EXCLUSION_ROUNDS:
        rounds += 1
        if ranking is None:
            ranking = _rank_sensitive(conversion, model, quantized, settings, calibration, boxed)
        remaining = [name for name in ranking if name not in excluded]
        if not remaining:
            break
        excluded += remaining[: 2 ** (rounds - 1)]
        with conversion.progress.bar(f"re-quantize without {len(excluded)} node(s)", len(calibration)) as advance:
            quantized = quantize_int8(
                model, settings, calibration, method=method, nodes_to_exclude=excluded, advance=advance
            )
        stage = f"int8, {len(excluded)} node(s) in float"
        conversion.record(stage, quantized, "mixed", note="excluded: " + ", ".join(excluded))
    conversion.report.excluded_nodes = excluded
    return stage


def _detector_order(conversion: Conversion[onnx.ModelProto], model: onnx.ModelProto, calibration: Dataset
                    ) -> tuple[Dataset, int]:
    """For a detector, the calibration images in which the float model finds boxes first, and how many there are
    (else the data as it is, and its length). The held-out quarters (every 4th sample) then hold a quarter of the
    images with boxes: an image without any tells nothing about boxes lost, and a photo folder sorted by name may
    put most of them on one side of the split."""
    if conversion.detector is None:
        return calibration, len(calibration)
    found = conversion.detections(conversion.run(model, calibration, "calibration (float)"))
    boxed = [index for index, frame in enumerate(found) if len(frame)]
    if not boxed:
        return calibration, len(calibration)
    order = np.array(boxed + [index for index, frame in enumerate(found) if not len(frame)], dtype=int)
    return calibration.subset(order), len(boxed)


def sensitivity_samples(calibration: Dataset, informative: int) -> Dataset:
    """Up to SENSITIVITY_SAMPLES samples spread over the first `informative` ones (for a detector, the images with
    boxes: `_detector_order`)."""
    index = np.arange(min(informative, len(calibration)) or len(calibration))
    step = max(1, -(-len(index) // SENSITIVITY_SAMPLES))
    return calibration.subset(index[::step][:SENSITIVITY_SAMPLES])


def _rank_sensitive(conversion: Conversion[onnx.ModelProto], model: onnx.ModelProto, quantized: onnx.ModelProto,
                    settings: QuantizeSettings, calibration: Dataset, informative: int) -> list[str]:
    """The nodes the quantizer can leave in float, worst first: each quantized alone, its output error on
    calibration samples (converter/sensitivity.py)."""
    samples = sensitivity_samples(calibration, informative)
    judge = HeldOutJudge(conversion, model, samples)
    with conversion.progress.bar("per-node sensitivity", 1) as advance:
        ranking = rank_nodes(model, quantized, lambda hybrid: judge(hybrid, "one node in int8").error,
                             settings.op_types)
        advance(1)
    top = ", ".join(f"{name} {error:.4f}" for name, error in ranking[:5])
    conversion.report.notes.append(f"per-node sensitivity (output error with only that node in int8, on "
                                   f"{len(samples)} calibration samples): {top}")
    return [name for name, error in ranking if error > 0]


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
