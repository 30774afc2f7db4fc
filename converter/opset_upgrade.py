"""Opsets below 13 and per-channel int8: upgrade the graph first, or quantize per-tensor.

Per-channel weights need `DequantizeLinear`'s `axis` attribute, which arrives in opset 13; onnxruntime's quantizer
writes it whatever the model's opset, and an opset-11 model then fails to load ("Unrecognized attribute: axis for
operator DequantizeLinear"). PaddlePaddle and older PyTorch exports are often at opset 11 or 12. onnx's version
converter lifts most graphs to 13; the upgraded graph must pass the checker, load in onnxruntime and give the
same outputs as the original on real data, or the quantizer gets the original model and per-tensor scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import version_converter

from converter.pass_errors import first_line
from converter.passes.check import default_opset
from converter.runner import make_session

PER_CHANNEL_OPSET = 13


@dataclass(frozen=True)
class OpsetDecision:
    model: onnx.ModelProto  # what the quantizer gets
    per_channel: bool
    note: str = ""  # for the report; empty when nothing had to be done


def _same_outputs(original: onnx.ModelProto, upgraded: onnx.ModelProto, feed: dict[str, np.ndarray]) -> str:
    """Empty if both models give the same outputs on `feed`, else what differs."""
    before = make_session(original).run(None, feed)
    after = make_session(upgraded).run(None, feed)
    for index, (a, b) in enumerate(zip(before, after, strict=True)):
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-3, atol=1e-4):
            return f"output {index} differs after the upgrade"
    return ""


def upgrade(model: onnx.ModelProto, feed: dict[str, np.ndarray], target: int = PER_CHANNEL_OPSET) -> onnx.ModelProto:
    """The model at opset `target`, checked, loadable and equal on `feed`; ValueError (with why) otherwise."""
    try:
        upgraded = version_converter.convert_version(model, target)
        onnx.checker.check_model(upgraded)
        upgraded = onnx.shape_inference.infer_shapes(upgraded, check_type=True)
        difference = _same_outputs(model, upgraded, feed)
    except Exception as exc:  # noqa: BLE001 - the converter and onnxruntime fail in many ways; all mean "no"
        raise ValueError(first_line(exc)) from exc
    if difference:
        raise ValueError(difference)
    return upgraded


def prepare_for_qdq(model: onnx.ModelProto, per_channel: bool, feed: dict[str, np.ndarray]) -> OpsetDecision:
    """The model and weight granularity the QDQ quantizer can work with at this model's opset."""
    opset = default_opset(model)
    if not per_channel or opset >= PER_CHANNEL_OPSET:
        return OpsetDecision(model, per_channel)
    try:
        upgraded = upgrade(model, feed)
    except ValueError as exc:
        return OpsetDecision(
            model,
            False,
            f"opset {opset} has no per-channel DequantizeLinear (opset {PER_CHANNEL_OPSET}) and onnx's version "
            f"converter could not upgrade the model ({exc}): weights quantized per-tensor",
        )
    return OpsetDecision(
        upgraded,
        True,
        f"opset {opset} upgraded to {PER_CHANNEL_OPSET} with onnx's version converter for per-channel weights "
        f"(same outputs on the data)",
    )
