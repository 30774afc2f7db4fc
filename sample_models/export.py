"""torch -> ONNX for the sample models, in the shape the converter expects from a trainer's export.

The legacy TorchScript exporter is used because its output looks like what most real-world ONNX files look
like (opset 17, plain Conv/BatchNormalization/Add nodes). BatchNorm is deliberately *kept*: with its default
constant folding the exporter folds every BatchNorm into the preceding convolution, which would leave the
converter's fuse pass nothing to do on the very models its tests and benchmarks use.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

OPSET = 17
INPUT_NAME = "x"
OUTPUT_NAME = "logits"
MAX_ABS_DIFF = 1e-4


def export_onnx(model: nn.Module, example: np.ndarray, path: Path) -> onnx.ModelProto:
    """Export eval-mode `model` to `path` with a dynamic batch axis and BatchNorm nodes preserved.

    `example` is a batch of real inputs; it traces the graph and then checks that onnxruntime reproduces
    torch's output on it, so a broken export fails the build rather than a converter test later.
    """
    model = model.eval()
    inputs = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))
    with warnings.catch_warnings():
        # "legacy TorchScript-based ONNX export" / "The feature will be removed": both DeprecationWarnings.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (inputs,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            # With constant folding on, the eval-mode exporter folds every BatchNorm into its Conv. Off, the
            # graph keeps BatchNormalization (training_mode=0, running statistics), the usual inference form.
            # training=TrainingMode.PRESERVE keeps them too, but warns that it wants folding off anyway.
            do_constant_folding=False,
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_batchnorm and not any(node.op_type == "BatchNormalization" for node in proto.graph.node):
        raise RuntimeError(f"{path.name}: the exporter folded BatchNorm away; the fuse pass needs it kept")
    check_against_torch(model, inputs, path)
    return proto


@torch.no_grad()
def check_against_torch(model: nn.Module, inputs: torch.Tensor, path: Path) -> float:
    """Run the ONNX file in onnxruntime and compare with torch; raise if they differ beyond float noise."""
    expected = model(inputs).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})
    diff = float(np.max(np.abs(actual - expected)))
    if not diff < MAX_ABS_DIFF:
        raise RuntimeError(
            f"{path.name}: onnxruntime differs from torch by {diff:.2e} (limit {MAX_ABS_DIFF})"
        )
    return diff
