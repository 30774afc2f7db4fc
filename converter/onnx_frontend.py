"""The ONNX front end: load and check the model, load the data, and start a conversion the graph passes can work on.

The check pass (converter/passes/check.py) runs here, because what it fixes (the batch axis, dynamic dimensions
the card or the data's shapes resolve) decides how the data is read; the context is built from the checked model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from rich.console import Console

from converter.conversion import Conversion, StageShape, load_verification_data, with_recorded_states
from converter.data import Dataset, array_shapes
from converter.declared_inputs import prepare_declared_inputs, same_as_given
from converter.errors import ConversionError
from converter.measure import measure_latencies
from converter.model_info import TensorInfo
from converter.options import ConvertOptions
from converter.passes.check import check_onnx, load_onnx, model_inputs, model_outputs
from converter.prune.flops import model_flops
from converter.report import Report
from converter.runner import make_session, run_dataset
from converter.sequence import plan_for
from edge_runtime.board import Board
from edge_runtime.card import ModelCard


def resolve_precision(requested: str, board: Board) -> str:
    """`auto` means what the board runs best; an explicit choice must be one the board supports."""
    support = board.quantization.supports
    if requested == "auto":
        return board.quantization.preferred
    if requested not in support:
        raise ConversionError(
            f"board '{board.name}' does not support --quantize {requested}; it supports {', '.join(support)}"
        )
    return requested


class OnnxEngine:
    """onnxruntime on this host: verification with the board's threads when this host can stand in for it."""

    format = "onnx"
    as_is = False

    def __init__(self, board: Board):
        self.board = board
        self.threads = board.threads if board.runs_on_this_host() else 1

    def run(self, model: onnx.ModelProto, dataset: Dataset, advance: Callable[[int], None]) -> dict[str, np.ndarray]:
        return run_dataset(make_session(model, threads=self.threads), dataset, advance=advance)

    def golden(self, model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [info.name for info in model_outputs(model)]
        return dict(zip(names, make_session(model).run(names, inputs), strict=True))

    def describe(self, model: onnx.ModelProto) -> StageShape:
        return StageShape(size_bytes=model.ByteSize(), nodes=len(model.graph.node), flops=model_flops(model))

    def measure(
        self, models: dict[str, onnx.ModelProto], feed: dict[str, np.ndarray], host: str
    ) -> tuple[dict[str, float], str]:
        """Every stage in one interleaved run, so they share the machine's state."""
        threads = 1
        latencies = measure_latencies(models, feed, threads=threads)
        where = f"this host ({host}), {threads} thread"
        if not self.board.runs_on_this_host():
            where += f"; the target is {self.board.arch}, so these are not the board's latencies"
        return {name: latency.median_ms for name, latency in latencies.items()}, where

    def payload(self, model: onnx.ModelProto) -> bytes:
        return model.SerializeToString()

    def tensors(self, model: onnx.ModelProto) -> tuple[list[TensorInfo], list[TensorInfo]]:
        return model_inputs(model), model_outputs(model)


def open_onnx(
    options: ConvertOptions, board: Board, card: ModelCard | None, console: Console
) -> Conversion[onnx.ModelProto]:
    if board.requires_tflite:
        raise ConversionError(
            f"board '{board.name}' runs only TFLite models (compiled for its accelerator); convert the model to a "
            f"full-int8 .tflite, compile it with edgetpu_compiler and pass that file"
        )
    given = load_onnx(options.model)
    if card is not None and (card.constants or card.state or len(model_inputs(given)) > 1):
        plan_for(card, options.card, model_inputs(given), model_outputs(given))  # every input described, once
    model = onnx.ModelProto()
    model.CopyFrom(given)
    given_card = card
    card, declared = prepare_declared_inputs(model, card)  # state dims fixed, constants folded
    shapes = {**array_shapes(options.evaluation, "evaluation"), **array_shapes(options.calibration, "calibration")}
    checked = check_onnx(model, card, shapes)
    model = checked.model
    report = Report(model=options.model.name, target=board.name)
    report.dimensions = [fix.as_dict() for fix in checked.dims]
    report.notes += declared + checked.notes
    report.passes["check"] = "ran"
    data = load_verification_data(options, model_inputs(model), card, model_outputs(model))
    report.notes += data.notes
    if data.verify.sequence is not None:  # the states the original produces, for calibration
        session = make_session(model)
        names = [info.name for info in model_outputs(model)]
        data = with_recorded_states(data, lambda feed: dict(zip(names, session.run(names, feed), strict=True)))
    if card is not given_card:
        report.notes.append(same_as_given(given, given_card, model, data.verify))
    if data.evaluation is None:
        report.notes.append("no --eval data: verified on the calibration data, which flatters int8")
    quantize = resolve_precision(options.quantize, board)
    return Conversion.begin(
        options,
        board,
        card,
        OnnxEngine(board),
        model,
        stage="original",
        precision="fp32",
        data=data,
        quantize=quantize,
        report=report,
        console=console,
    )
