"""Select and verify: choose the model for the bundle, then the accuracy gate, the one place a bundle is refused
for what it lost (besides an over-budget --prune ratio, refused as soon as it is measured).

Every stage was already verified on real data when it was made (Conversion.record); `select` puts the final
model's loss in the report's gate section, `verify` refuses the bundle when the loss is over the budget. With
--skip verify the gate is measured and reported but not enforced.
"""

from __future__ import annotations

from typing import Any

from converter.conversion import Conversion
from converter.options import GateFailed
from converter.report import Report
from edge_runtime.board import Board

# int8 must beat the float model by this much on a board measurable here, or the float model is kept.
MIN_INT8_SPEEDUP = 1.05


def pick_final(report: Report, board: Board, float_stage: str, quantized_stage: str | None) -> str:
    """The quantized model unless it is not faster on a board whose speed this machine can stand in for."""
    if quantized_stage is None:
        return float_stage
    float_latency = report.stage(float_stage).latency_ms
    quantized = report.stage(quantized_stage)
    if board.runs_on_this_host() and float_latency and quantized.latency_ms:
        speedup = float_latency / quantized.latency_ms
        if speedup < MIN_INT8_SPEEDUP:
            report.notes.append(
                f"{quantized.precision} is not faster than float on this {board.arch} host "
                f"({speedup:.2f}x): keeping the float model"
            )
            return float_stage
    elif not board.runs_on_this_host():
        report.notes.append(
            f"int8 speed not verified: the target '{board.name}' is {board.arch}; run `edge-runtime bench` on it"
        )
    return quantized_stage


def keep_float_within_budget(conversion: Conversion[Any], final: str) -> str:
    """--quantize auto asks for the board's best precision within the accuracy budget, not int8 at any price:
    when the quantized model loses more than the budget and the float one does not, the float one is bundled
    and the report says why (an explicit --quantize int8 is refused by the gate instead)."""
    options, float_stage = conversion.options, conversion.float_stage
    if options.quantize != "auto" or final == float_stage or not conversion.gate_enforced:
        return final
    budget, loss = options.max_accuracy_drop, conversion.loss(final)
    if loss <= budget or conversion.loss(float_stage) > budget:
        return final
    conversion.report.notes.append(
        f"--quantize auto: the {final} model loses {loss * 100:.2f} points against the original, more than the "
        f"{budget * 100:.2f} allowed; the {float_stage} float model is bundled (--quantize int8 insists on int8, "
        f"--max-accuracy-drop allows more loss)"
    )
    return float_stage


def select_pass(conversion: Conversion[Any]) -> None:
    report, options = conversion.report, conversion.options
    final = pick_final(report, conversion.board, conversion.float_stage, conversion.quantized_stage)
    if not conversion.engine.as_is:
        final = keep_float_within_budget(conversion, final)
    report.final_stage = final
    if conversion.engine.as_is:
        loss, basis = 0.0, "unchanged model"
    else:
        loss = conversion.loss(final)
        basis = "accuracy" if conversion.original.fidelity.accuracy is not None else "top-1 agreement"
        if not conversion.classification:
            basis = "decision agreement" if conversion.threshold is not None else "cosine similarity"
        if conversion.detector is not None:
            basis = "matched boxes (IoU >= 0.5, same class)"
    report.gate = {
        "max_accuracy_drop": options.max_accuracy_drop,
        "loss": round(loss, 6),
        "basis": basis,
        "passed": not conversion.gate_enforced or loss <= options.max_accuracy_drop,
    }


def verify_pass(conversion: Conversion[Any]) -> None:
    report, gate = conversion.report, conversion.report.gate
    report.passes["verify"] = "ran"
    if not gate["passed"]:
        final, loss = report.final_stage, conversion.loss(report.final_stage)
        raise GateFailed(
            f"bundle refused: the {final} model loses {loss * 100:.2f} points of {gate['basis']} against the "
            f"original (allowed: {gate['max_accuracy_drop'] * 100:.2f}); see the report above for the cost of each "
            f"step. Try --quantize none, more representative --calibration data, or a larger --max-accuracy-drop",
            report,
        )
