"""TFLite models are packaged as they are: loaded, run on the data, measured and bundled with the same
manifest, reference statistics and golden output as an ONNX model. Quantizing them is the exporter's job.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from rich.console import Console

from converter.data import load_dataset
from converter.errors import ConversionError
from converter.evaluate import compare
from converter.model_info import TensorInfo
from converter.package import BundleContents, write_model_bundle
from converter.pipeline import ConvertOptions, ConvertResult, is_classifier, primary_output
from converter.reference import reference_statistics
from converter.report import Report, StageResult
from edge_runtime.backends.tflite import TensorDetail, TfliteModel, TfliteUnavailable
from edge_runtime.board import Board
from edge_runtime.card import ModelCard


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


def package_tflite(options: ConvertOptions, board: Board, card: ModelCard | None, console: Console) -> ConvertResult:
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
    calibration = load_dataset(options.calibration, inputs, what="calibration") if options.calibration else None
    evaluation = load_dataset(options.evaluation, inputs, what="evaluation") if options.evaluation else None
    verify_data = evaluation or calibration
    if verify_data is None:
        raise ConversionError("edge-convert verifies every model on real data: give --eval and/or --calibration")
    names = [info.name for info in outputs]
    output_name = primary_output(card, names)

    def run(dataset) -> dict[str, np.ndarray]:
        parts = [model.run(feed) for feed in dataset.batches(32)]
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}

    results = run(verify_data)
    classification = is_classifier(card, results)
    fidelity = compare(
        results[output_name], results[output_name], classification=classification, labels=verify_data.labels
    )
    report = Report(model=options.model.name, target=board.name)
    report.eval_source, report.eval_samples = verify_data.source.split("/")[-1], len(verify_data)
    report.passes = {
        "check": "ran",
        "fuse": "not applicable (TFLite packaged as is)",
        "quantize": "not applicable (TFLite packaged as is)",
        "verify": "ran",
    }
    precision = _precision(model)
    stage = report.add_stage(
        StageResult(
            stage="tflite (as is)",
            precision=precision,
            size_bytes=len(content),
            nodes=len(model.interpreter.get_tensor_details()),
            accuracy=fidelity.accuracy,
            agreement=fidelity.agreement,
            cosine_mean=1.0,
            note="node count is the tensor count",
        )
    )
    if options.measure_latency:
        stage.latency_ms = round(_latency_ms(model, verify_data.first()), 4)
        report.latency_measured_on = f"this host ({report.host}), 1 thread, {model.package}"
    report.final_stage = stage.stage
    report.gate = {
        "max_accuracy_drop": options.max_accuracy_drop,
        "loss": 0.0,
        "basis": "unchanged model",
        "passed": True,
    }
    reference = {}
    if "reference" not in options.skip:
        source = calibration or verify_data
        reference = reference_statistics(source, run(source)[output_name], card, classification=classification)
        report.passes["reference"] = "ran"
    golden_inputs = verify_data.first()
    golden_outputs = dict(zip(names, model.run(golden_inputs), strict=True))
    contents = BundleContents(
        name=card.name if card else options.model.stem,
        version=card.version if card else "1",
        model_bytes=content,
        model_format="tflite",
        precision=precision,
        inputs=inputs,
        outputs=outputs,
        golden_inputs=golden_inputs,
        golden_outputs=golden_outputs,
        verification=report.as_dict(),
        reference=reference,
    )
    manifest = write_model_bundle(options.output, contents, board, card, options.sign_key)
    return ConvertResult(manifest, report)
