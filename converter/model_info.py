"""Names, shapes and dtypes of a model's inputs and outputs, in one form for ONNX and TFLite alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: list[Dim]
    dtype: str

    def shape_text(self) -> str:
        return "[" + ", ".join("?" if dim is None else str(dim) for dim in self.shape) + "]"


def onnx_tensor_infos(values) -> list[TensorInfo]:
    """TensorInfo for ONNX ValueInfoProtos (graph inputs or outputs)."""
    from onnx import helper

    infos = []
    for value in values:
        tensor_type = value.type.tensor_type
        shape: list[Dim] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                shape.append(dim.dim_param)
            else:
                shape.append(None)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        infos.append(TensorInfo(value.name, shape, dtype))
    return infos
