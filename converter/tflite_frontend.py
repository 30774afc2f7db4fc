"""The TFLite front end: a TFLite model is packaged as it is, loaded, run on the data, measured and bundled with the
same manifest, gate, reference statistics and golden output as an ONNX model. Quantizing it is the exporter's job,
so the graph passes do not apply to it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rich.console import Console

from converter.conversion import Conversion, StageShape, load_verification_data, with_recorded_states
from converter.data import Dataset
from converter.errors import ConversionError
from converter.model_info import TensorInfo
from converter.options import ConvertOptions
from converter.report import Report
from converter.sequence import run_sequence
from edge_runtime.backends.tflite import TensorDetail, TfliteModel, TfliteUnavailable
from edge_runtime.board import Board
from edge_runtime.card import ModelCard

NOT_APPLICABLE = "not applicable (TFLite packaged as is)"


@dataclass(frozen=True)
class TfliteFile:
    """The model file as given (what goes into the bundle) and its interpreter."""

    content: bytes
    model: TfliteModel


def _info(detail: TensorDetail) -> TensorInfo:
    shape = [
        "batch" if (axis == 0 and dim == -1) else (None if dim == -1 else dim) for axis, dim in enumerate(detail.shape)
    ]
    return TensorInfo(detail.name, shape, "float32" if detail.quantized else detail.dtype)


def _precision(model: TfliteModel) -> str:
    kinds = {np.dtype(raw["dtype"]).name for raw in model.interpreter.get_tensor_details()}
    integer, floating = bool(kinds & {"int8", "uint8"}), bool(kinds & {"float32", "float16"})
    if integer and not floating:
        return "int8"
    if integer:
        return "mixed"
    return "fp16" if "float16" in kinds else "fp32"


def _check_card(card: ModelCard | None, inputs: list[TensorInfo]) -> None:
    if card is None:
        return
    target = next((info for info in inputs if card.input.name in (None, info.name)), None)
    if target is None:
        raise ConversionError(f"the card describes input '{card.input.name}', which the model does not have")
    expected = card.input.model_shape()
    if [dim for dim in target.shape[1:]] != expected:
        raise ConversionError(
            f"the card contradicts the model: it describes input '{target.name}' as [batch, "
            f"{', '.join(map(str, expected))}] but the model input is {target.shape_text()}"
        )


def _latency_ms(model: TfliteModel, feed: dict[str, np.ndarray], runs: int = 200) -> float:
    for _ in range(10):
        model.run(feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.run(feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


class TfliteEngine:
    """The TFLite interpreter on this host (ai_edge_litert or tflite_runtime), one thread."""

    format = "tflite"
    as_is = True

    def __init__(self, inputs: list[TensorInfo], outputs: list[TensorInfo]):
        self.inputs, self.outputs = inputs, outputs
        self.names = [info.name for info in outputs]

    def run(self, model: TfliteFile, dataset: Dataset, advance: Callable[[int], None]) -> dict[str, np.ndarray]:
        if dataset.sequence is not None:  # a recurrent model: one window at a time, its own state carried
            return run_sequence(lambda feed: self.golden(model, feed), dataset, advance)
        parts = []
        for feed in dataset.batches(32):
            parts.append(model.model.run(feed))
            advance(len(next(iter(feed.values()))))
        return {name: np.concatenate([part[i] for part in parts]) for i, name in enumerate(self.names)}

    def golden(self, model: TfliteFile, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.names, model.model.run(inputs), strict=True))

    def describe(self, model: TfliteFile) -> StageShape:
        return StageShape(
            size_bytes=len(model.content),
            nodes=len(model.model.interpreter.get_tensor_details()),
            note="node count is the tensor count",
        )

    def measure(
        self, models: dict[str, TfliteFile], feed: dict[str, np.ndarray], host: str
    ) -> tuple[dict[str, float], str]:
        latencies = {name: _latency_ms(file.model, feed) for name, file in models.items()}
        package = next(iter(models.values())).model.package
        return latencies, f"this host ({host}), 1 thread, {package}"

    def payload(self, model: TfliteFile) -> bytes:
        return model.content

    def tensors(self, model: TfliteFile) -> tuple[list[TensorInfo], list[TensorInfo]]:
        return self.inputs, self.outputs


def open_tflite(
    options: ConvertOptions, board: Board, card: ModelCard | None, console: Console
) -> Conversion[TfliteFile]:
    if options.quantize not in ("auto", "none"):
        raise ConversionError(
            "TFLite models are packaged as is: quantize them when you export them (--quantize auto or none)"
        )
    if "tflite" not in board.backends:
        raise ConversionError(
            f"board '{board.name}' has no TFLite backend (it runs: {', '.join(board.backends)}); give an ONNX model"
        )
    content = options.model.read_bytes()
    try:
        model = TfliteModel(content, threads=1)
    except TfliteUnavailable as exc:
        raise ConversionError(str(exc)) from None
    except (ValueError, RuntimeError) as exc:
        raise ConversionError(f"{options.model}: not a valid TFLite model ({exc})") from None
    inputs, outputs = [_info(d) for d in model.inputs], [_info(d) for d in model.outputs]
    _check_card(card, inputs)
    data = load_verification_data(options, inputs, card, outputs)
    if data.verify.sequence is not None:  # the states the original produces, what the report's samples show
        data = with_recorded_states(data, lambda feed: dict(zip([i.name for i in outputs], model.run(feed),
                                                                 strict=True)))
    report = Report(model=options.model.name, target=board.name)
    report.notes += data.notes
    report.passes = {"check": "ran", "fuse": NOT_APPLICABLE, "quantize": NOT_APPLICABLE}
    return Conversion.begin(
        options,
        board,
        card,
        TfliteEngine(inputs, outputs),
        TfliteFile(content, model),
        stage="tflite (as is)",
        precision=_precision(model),
        data=data,
        quantize="none",
        report=report,
        console=console,
    )
