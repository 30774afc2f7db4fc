"""Dynamic dimensions: find each input's batch axis and fix every other dynamic dimension to a size.

Exporters write a size they do not know in four ways: `-1` or `0` as a value (PaddlePaddle, some TensorFlow
converters), a dimension with neither value nor name, or a symbolic name (`batch`, `height`,
`DynamicDimension.0`). All four mean the same thing here. Sizes come, in this order, from the card (image
height/width, window/channels, features), from the shapes of the user's data (one array per input, samples
first), and otherwise the conversion stops with one line naming the input, the axis and what to give.

The batch axis is where the samples of the data go. It is axis 0 unless the data says otherwise: a recurrent
state written `[layers, batch, hidden]` gets data `[samples, layers, hidden]`, and the only dynamic axis that
lines the data up with the model's fixed sizes is axis 1. The batch axis stays dynamic (named `batch`, which
the runtime batches on); nothing else does, so the passes after this one see static shapes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import onnx

from converter.errors import ConversionError
from edge_runtime.card import ModelCard

BATCH_DIM = "batch"
Shape = tuple[int, ...]


@dataclass(frozen=True)
class DimFix:
    """One dynamic dimension and what it became (for the report)."""

    input: str
    axis: int
    written: str  # how the model wrote it: -1, 0, unnamed, 'name'
    value: int | str  # the size it was fixed to, or "batch" for the axis that stays dynamic
    source: str  # card | calibration data | evaluation data | batch axis

    def as_dict(self) -> dict:
        return asdict(self)

    def note(self) -> str:
        if self.value == BATCH_DIM:
            return f"input '{self.input}' axis {self.axis} ({self.written}): the batch axis, kept dynamic"
        return f"input '{self.input}' axis {self.axis} ({self.written}) fixed to {self.value} from the {self.source}"


def is_dynamic(dim: onnx.TensorShapeProto.Dimension) -> bool:
    return not dim.HasField("dim_value") or dim.dim_value <= 0


def written(dim: onnx.TensorShapeProto.Dimension) -> str:
    if dim.HasField("dim_value"):
        return str(dim.dim_value)
    return f"'{dim.dim_param}'" if dim.dim_param else "unnamed"


def _shown(dims) -> str:
    return "[" + ", ".join(str(d.dim_value) if not is_dynamic(d) else written(d).strip("'") or "?" for d in dims) + "]"


def _set(dim: onnx.TensorShapeProto.Dimension, value: int | str) -> None:
    dim.Clear()
    if isinstance(value, str):
        dim.dim_param = value
    else:
        dim.dim_value = value


def card_shapes(model_inputs: list, card: ModelCard | None) -> dict[str, list[int]]:
    """Input name -> the shape the card gives it without the batch axis (only the inputs the card describes)."""
    if card is None or not model_inputs:
        return {}
    described = card.input
    if described.name is not None:
        return {described.name: described.model_shape()} if any(v.name == described.name for v in model_inputs) else {}
    return {model_inputs[0].name: described.model_shape()}  # the card's input is the first when unnamed


def _batch_axis(name: str, dims, data: Shape, source: str) -> int:
    """The model axis the data's sample axis (0) belongs to: axis 0 if the data lines up there, else the one
    dynamic axis that lines the data's other sizes up with the model's fixed ones."""
    if len(data) != len(dims):
        raise ConversionError(
            f"the {source} for input '{name}' has shape {list(data)} ({len(data)} dimensions), but the model input "
            f"is {_shown(dims)} ({len(dims)} dimensions): give one array per input, samples first"
        )

    def fits(axis: int) -> bool:
        rest = data[1 : axis + 1] + data[axis + 1 :]
        others = [d for index, d in enumerate(dims) if index != axis]
        return all(is_dynamic(d) or d.dim_value == size for d, size in zip(others, rest, strict=True))

    if fits(0) and (is_dynamic(dims[0]) or dims[0].dim_value in (1, data[0])):
        return 0
    matches = [axis for axis in range(1, len(dims)) if is_dynamic(dims[axis]) and fits(axis)]
    if len(matches) == 1:
        return matches[0]
    if fits(0):  # a fixed batch the data does not match: the data loader says so in its own words
        return 0
    raise ConversionError(
        f"the {source} for input '{name}' has shape {list(data)}, which does not fit the model input "
        f"{_shown(dims)} with the samples on any one dynamic axis"
    )


def _fix_input(value, wanted: list[int] | None, data: tuple[Shape, str] | None) -> list[DimFix]:
    name, dims = value.name, value.type.tensor_type.shape.dim
    fixes: list[DimFix] = []
    if wanted is not None:
        if len(wanted) != len(dims) - 1:
            raise ConversionError(
                f"the card contradicts the model: it describes input '{name}' as [batch, "
                f"{', '.join(map(str, wanted))}] but the model input is {_shown(dims)}"
            )
        batch_axis, sizes, source = 0, [None, *wanted], "card"
    elif data is not None:
        shape, source = data
        batch_axis = _batch_axis(name, dims, shape, source)
        moved = list(shape[1 : batch_axis + 1]) + [None] + list(shape[batch_axis + 1 :])
        sizes = moved
    else:
        batch_axis, sizes, source = 0, [None] * len(dims), ""
    for axis, dim in enumerate(dims):
        size = sizes[axis]
        if not is_dynamic(dim):
            if size is not None and size != dim.dim_value and source == "card":
                raise ConversionError(
                    f"the card contradicts the model: input '{name}' dimension {axis} is {dim.dim_value} in the "
                    f"model but {size} per the card"
                )
            continue
        if axis == batch_axis:
            fixes.append(DimFix(name, axis, written(dim), BATCH_DIM, "batch axis"))
            _set(dim, BATCH_DIM)
            continue
        if size is None:
            raise ConversionError(
                f"input '{name}' axis {axis} is dynamic ({written(dim)}) and nothing gives its size: describe the "
                f"input in a --card (window/channels, height/width or features) or give --calibration/--eval data "
                f"with an array for '{name}'"
            )
        fixes.append(DimFix(name, axis, written(dim), int(size), source))
        _set(dim, int(size))
    return fixes


def _clear_unknown(values) -> None:
    """-1 and 0 written on outputs and intermediate tensors mean 'unknown'; let shape inference fill them."""
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value <= 0:
                dim.Clear()


def resolve_dims(
    model: onnx.ModelProto,
    inputs: list,
    card: ModelCard | None,
    data_shapes: dict[str, tuple[Shape, str]] | None = None,
) -> list[DimFix]:
    """Fix the dynamic dimensions of `inputs` (the graph inputs fed at run time) in place; return what was done.

    `data_shapes` maps an input name to the shape of its data array and where it comes from ("calibration
    data"); a single-input model's array may be called `x`.
    """
    data_shapes = dict(data_shapes or {})
    if len(inputs) == 1 and inputs[0].name not in data_shapes and "x" in data_shapes:
        data_shapes[inputs[0].name] = data_shapes["x"]
    declared = set(card.constants) | set(card.state) if card else set()
    # the card's streamed input is the one input it does not declare as a constant or state, wherever it stands
    from_card = card_shapes([value for value in inputs if value.name not in declared], card)
    fixes: list[DimFix] = []
    for value in inputs:
        if value.name in declared:  # fed by the card (converter/declared_inputs.py fixed it); scalars included
            continue
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            raise ConversionError(f"input '{value.name}' has no shape; export the model with static shapes")
        if not tensor_type.shape.dim:
            continue  # a scalar (a sample rate, a flag): nothing to fix, no batch axis
        fixes += _fix_input(value, from_card.get(value.name), data_shapes.get(value.name))
    _clear_unknown(model.graph.output)
    _clear_unknown(model.graph.value_info)
    return fixes
