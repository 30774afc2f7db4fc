"""Fuse: onnxslim's graph simplification, then onnxruntime's basic-level offline optimisation.

Basic level folds constants, removes redundant nodes and fuses Conv+BatchNorm/Add/Mul using standard ONNX
operators only, so the result still runs on any backend. Higher levels write onnxruntime- and CPU-specific
operators (an .ort file optimized for ARM ran 9x slower on x86 here), and the device applies them itself when it
loads the model.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort

from converter.conversion import Conversion
from converter.errors import ConversionError
from converter.passes.check import BATCH_DIM
from edge_runtime.board import Board

_STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml"}


def _slim(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    logging.getLogger("onnxslim").setLevel(logging.ERROR)
    slimmed = onnxslim.slim(model)
    if not isinstance(slimmed, onnx.ModelProto):
        raise ConversionError("onnxslim returned no model")
    return slimmed


def _ort_offline(model: onnx.ModelProto, level: ort.GraphOptimizationLevel) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory(prefix="edge-convert-") as workdir:
        target = Path(workdir) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.optimized_model_filepath = str(target)
        options.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(str(target))


def _keep_batch_name(model: onnx.ModelProto, source: onnx.ModelProto) -> None:
    """Optimizers may drop the batch dimension's name; the runtime keys batching off it (on whichever axis the
    check pass put it: a recurrent state's batch is not always axis 0)."""
    batch_axes = {
        value.name: [axis for axis, dim in enumerate(value.type.tensor_type.shape.dim) if dim.dim_param == BATCH_DIM]
        for value in source.graph.input
    }
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for axis in batch_axes.get(value.name, [0]):
            if axis < len(dims) and not dims[axis].HasField("dim_value") and not dims[axis].dim_param:
                dims[axis].dim_param = BATCH_DIM


def fuse(model: onnx.ModelProto, board: Board) -> onnx.ModelProto:
    """Simplify and fuse the graph; operators stay in the standard domains unless the board is ORT-only."""
    slimmed = _slim(model)
    fused = _ort_offline(slimmed, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    _keep_batch_name(fused, model)
    foreign = sorted({node.domain for node in fused.graph.node} - _STANDARD_DOMAINS)
    if foreign and not board.onnxruntime.only_backend:
        raise ConversionError(
            f"fusing introduced operators from {', '.join(foreign)}, which only onnxruntime runs, but board "
            f"'{board.name}' also runs {', '.join(b for b in board.backends if b != 'onnxruntime')}; "
            f"skip the pass with --skip fuse"
        )
    unused = [entry for entry in fused.opset_import if entry.domain not in _STANDARD_DOMAINS]
    used_domains = {node.domain for node in fused.graph.node}
    for entry in unused:
        if entry.domain not in used_domains:
            fused.opset_import.remove(entry)
    onnx.checker.check_model(fused)
    return fused


def fuse_pass(conversion: Conversion[onnx.ModelProto]) -> None:
    """The pipeline's `fuse`: fuse the float model, verify it, and let the next pass start from it."""
    fused = fuse(conversion.float_model, conversion.board)
    conversion.record("fused", fused, "fp32")
    conversion.float_stage = "fused"
    conversion.report.passes["fuse"] = "ran"
