"""The conversion pipeline: a front end checks the model and loads the data, then a list of named passes runs.

    check (front end) -> fuse -> prune -> quantize -> measure -> select -> verify -> npu -> reference -> package

(npu builds a .rknn for a board with a Rockchip NPU, next to the CPU model; edgetpu bundles an Edge TPU-compiled
TFLite given with --edgetpu-model next to a TFLite model)

Every pass is a function of the shared context (converter/conversion.py); the graph passes wrap a graph-to-graph
function of converter/passes/ and verify their output against the original model on real data, so the report can
say which step cost what. The ONNX and the TFLite front ends share the tail from `measure` on: one gate, one
bundle writer. Passes marked optional can be switched off by name (`--skip fuse,quantize`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from rich.console import Console

from converter.card_inference import resolve_card
from converter.conversion import Conversion
from converter.errors import ConversionError
from converter.onnx_frontend import open_onnx
from converter.options import ConvertOptions, ConvertResult
from converter.pass_errors import PassFailed, pass_failures
from converter.passes.check import detect_format
from converter.passes.edgetpu import edgetpu_pass
from converter.passes.fuse import fuse_pass
from converter.passes.measure import measure_pass
from converter.passes.npu import npu_pass
from converter.passes.package import package_pass
from converter.passes.prune import parse_prune, prune_pass
from converter.passes.quantize import quantize_pass
from converter.passes.reference import reference_pass
from converter.passes.verify import select_pass, verify_pass
from converter.tflite_frontend import open_tflite
from edge_runtime.board import Board, load_board
from edge_runtime.card import ModelCard

ONNX, TFLITE = "onnx", "tflite"
FrontEnd = Callable[[ConvertOptions, Board, ModelCard | None, Console], Conversion[Any]]
#: Model format (from the file's bytes) -> the front end that checks it and starts the conversion.
FRONT_ENDS: dict[str, FrontEnd] = {ONNX: open_onnx, TFLITE: open_tflite}
#: The pass every conversion starts with, run by the front end: the context is built from the checked model.
CHECK = "check"


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Conversion[Any]], None]
    optional: bool = False  # may be switched off with --skip NAME
    skipped: str = "skipped (--skip)"  # what the report's `passes` says when it was
    formats: frozenset[str] = frozenset({ONNX, TFLITE})  # the front ends whose models it applies to


PASSES: tuple[Pass, ...] = (
    Pass("fuse", fuse_pass, optional=True, formats=frozenset({ONNX})),
    Pass("prune", prune_pass, formats=frozenset({ONNX})),  # runs only with --prune
    Pass("quantize", quantize_pass, optional=True, formats=frozenset({ONNX})),
    Pass("measure", measure_pass),  # off with --no-latency
    Pass("select", select_pass),
    Pass("verify", verify_pass, optional=True, skipped="skipped (--skip): gate not enforced"),
    Pass("npu", npu_pass, optional=True, skipped="skipped (--skip): no NPU model", formats=frozenset({ONNX})),
    Pass("edgetpu", edgetpu_pass, formats=frozenset({TFLITE})),  # runs only with --edgetpu-model
    Pass("reference", reference_pass, optional=True),
    Pass("package", package_pass),
)
PASS_NAMES: tuple[str, ...] = (CHECK, *(step.name for step in PASSES))
SKIPPABLE_PASSES: tuple[str, ...] = tuple(step.name for step in PASSES if step.optional)


def check_skip(skip: set[str]) -> None:
    """Every --skip name must be a pass that can be switched off; say which are and are not."""
    unknown = skip - set(PASS_NAMES)
    if unknown:
        raise ConversionError(
            f"unknown pass(es) for --skip: {', '.join(sorted(unknown))}; passes: {', '.join(SKIPPABLE_PASSES)}"
        )
    required = sorted(skip - set(SKIPPABLE_PASSES), key=PASS_NAMES.index)
    if required:
        raise ConversionError(
            f"--skip {','.join(required)}: every conversion needs this pass; the passes that can be switched off "
            f"are: {', '.join(SKIPPABLE_PASSES)}"
        )


def run_passes(conversion: Conversion[Any], passes: tuple[Pass, ...] = PASSES) -> None:
    """Run the passes that apply to the model's format in order; one named in --skip is reported, not run.

    A library failing inside a pass is one PassFailed naming the pass and the node (converter/pass_errors.py);
    with --quantize auto a failed quantize keeps the float model and the report says why.
    """
    for step in passes:
        if conversion.engine.format not in step.formats:
            continue
        if step.name in conversion.options.skip:
            conversion.report.passes[step.name] = step.skipped
            continue
        try:
            with pass_failures(step.name):
                step.run(conversion)
        except PassFailed as failure:
            if not (step.name == "quantize" and conversion.options.quantize == "auto"):
                raise
            keep_float(conversion, failure)


def keep_float(conversion: Conversion[Any], failure: PassFailed) -> None:
    """--quantize auto asked for the board's best precision, not for int8 at any price: when quantizing fails
    the bundle gets the last good float stage, and the report says what failed."""
    conversion.quantized_stage = None
    report = conversion.report
    report.passes[failure.step] = f"failed, kept the {conversion.float_stage} float model"
    report.notes.append(f"{failure} (--quantize auto: the {conversion.float_stage} float model is bundled)")


def convert(options: ConvertOptions, console: Console) -> ConvertResult:
    """Run the whole pipeline; every user-fixable problem surfaces as a ConversionError."""
    check_skip(options.skip)
    if not 0 <= options.max_accuracy_drop < 1:
        raise ConversionError(f"--max-accuracy-drop must be a fraction in [0, 1), got {options.max_accuracy_drop}")
    options = replace(options, prune=parse_prune(options.prune))
    board = load_board(options.target)
    model_format = detect_format(options.model)
    source = resolve_card(options.card, options.model, model_format)
    card = source.card
    if model_format == TFLITE and options.prune:
        raise ConversionError(
            "--prune works on ONNX graphs; a TFLite model is packaged as it is. Prune the ONNX model before "
            "exporting it to TFLite, or convert the ONNX model with --prune"
        )
    if options.edgetpu_model is not None and model_format != TFLITE:
        raise ConversionError("--edgetpu-model goes with the TFLite model it was compiled from (MODEL is "
                              f"{model_format}): the Edge TPU runs compiled TFLite models only")
    with pass_failures(CHECK):
        conversion = FRONT_ENDS[model_format](options, board, card, console)
    conversion.report.inferred = source.inferred
    conversion.report.notes += source.notes
    run_passes(conversion)
    if conversion.manifest is None:  # package is the last pass and cannot be skipped
        raise RuntimeError("the pipeline ended without writing a bundle")
    return ConvertResult(conversion.manifest, conversion.report)
