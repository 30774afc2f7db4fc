"""Load and check: the model is valid ONNX at a supported opset, its shapes are known, the card fits it.

Everything after this pass may assume a checked model with one dynamic (batch) dimension at most per tensor.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from converter.errors import ConversionError
from converter.model_info import TensorInfo, onnx_tensor_infos
from edge_runtime.card import ModelCard

# onnxruntime 1.20+ runs opsets 7..21 of the default domain; older opsets lack the operators the quantizer
# emits, newer ones need a newer runtime on every board.
MIN_OPSET = 7
MAX_OPSET = 23
BATCH_DIM = "batch"
_ALLOWED_DOMAINS = {"", "ai.onnx", "ai.onnx.ml"}


def detect_format(path: Path) -> str:
    """'onnx' or 'tflite', from the file's bytes rather than its name."""
    if not path.is_file():
        raise ConversionError(f"model not found: {path}")
    head = path.read_bytes()[:8]
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    return "onnx"


def load_onnx(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path))
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise ConversionError(f"{path}: not an ONNX or TFLite model, or the file is corrupt ({exc})") from None
    if not model.graph.node:
        raise ConversionError(f"{path}: not an ONNX or TFLite model, or the file is corrupt (no graph nodes)")
    return model


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ConversionError("the model imports no default-domain opset")


def _real_inputs(model: onnx.ModelProto) -> list:
    """Graph inputs that are fed at run time (old exporters also list initializers as inputs)."""
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _fix_dims(model: onnx.ModelProto, card: ModelCard | None) -> list[str]:
    """Name the batch dimension and resolve other dynamic dimensions from the card; return notes."""
    notes = []
    inputs = _real_inputs(model)
    declared = set(card.constants) | set(card.state) if card else set()
    for index, value in enumerate(inputs):
        dims = value.type.tensor_type.shape.dim
        if value.name in declared:  # fed by the card (converter/declared_inputs.py fixed it); scalars included
            continue
        if not dims:
            raise ConversionError(f"input '{value.name}' has no shape; export the model with static shapes")
        card_input = card.input if card and (card.input.name in (None, value.name)) else None
        if card_input is not None and len(inputs) > 1 and card.input.name is None and index > 0:
            card_input = None
        wanted = card_input.model_shape() if card_input is not None else None
        if wanted is not None and len(wanted) != len(dims) - 1:
            shown = [d.dim_value or d.dim_param or "?" for d in dims]
            raise ConversionError(
                f"the card contradicts the model: it describes input '{value.name}' as [batch, "
                f"{', '.join(map(str, wanted))}] but the model input is {shown}"
            )
        for axis, dim in enumerate(dims):
            if axis == 0:
                if not dim.HasField("dim_value"):
                    dim.Clear()
                    dim.dim_param = BATCH_DIM
                continue
            card_value = wanted[axis - 1] if wanted is not None else None
            if dim.HasField("dim_value"):
                if card_value is not None and card_value != dim.dim_value:
                    raise ConversionError(
                        f"the card contradicts the model: input '{value.name}' dimension {axis} is "
                        f"{dim.dim_value} in the model but {card_value} per the card ({card_input.kind})"
                    )
                continue
            if card_value is None:
                raise ConversionError(
                    f"input '{value.name}' dimension {axis} is dynamic ('{dim.dim_param or '?'}'); only the batch "
                    f"dimension may be. Give a --card whose input describes it (window/channels or "
                    f"height/width) or export with a static shape"
                )
            dim.Clear()
            dim.dim_value = card_value
            notes.append(f"input '{value.name}' dimension {axis} fixed to {card_value} from the card")
    return notes


def _check_outputs(model: onnx.ModelProto, card: ModelCard | None) -> None:
    if card is None or not card.labels or card.output.kind != "classification":
        return
    outputs = onnx_tensor_infos(model.graph.output)
    target = next((info for info in outputs if info.name == card.output.name), None) if card.output.name else None
    if card.output.name and target is None:
        names = ", ".join(info.name for info in outputs)
        raise ConversionError(f"the card names output '{card.output.name}', but the model's outputs are {names}")
    target = target or outputs[0]
    classes = target.shape[-1] if target.shape else None
    if isinstance(classes, int) and classes != len(card.labels):
        raise ConversionError(
            f"the card contradicts the model: {len(card.labels)} labels but output '{target.name}' has "
            f"{classes} classes"
        )


def check_model(model: onnx.ModelProto, card: ModelCard | None) -> tuple[onnx.ModelProto, list[str]]:
    """Validate the graph, fix dynamic dimensions, infer shapes; return the checked model and notes."""
    opset = default_opset(model)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConversionError(
            f"unsupported opset {opset}: edge-convert handles opsets {MIN_OPSET} to {MAX_OPSET}; re-export the "
            f"model (e.g. torch.onnx.export(..., opset_version=17))"
        )
    foreign = sorted({node.domain for node in model.graph.node} - _ALLOWED_DOMAINS)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConversionError(f"the ONNX checker rejects the model: {first}") from None
    notes = _fix_dims(model, card)
    if foreign:
        notes.append(f"operators from domain(s) {', '.join(foreign)}: only onnxruntime can run this model")
    try:
        model = onnx.shape_inference.infer_shapes(model, check_type=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConversionError(f"shape inference failed: {first}") from None
    _check_outputs(model, card)
    return model, notes


def model_inputs(model: onnx.ModelProto) -> list[TensorInfo]:
    return onnx_tensor_infos(_real_inputs(model))


def model_outputs(model: onnx.ModelProto) -> list[TensorInfo]:
    return onnx_tensor_infos(model.graph.output)
