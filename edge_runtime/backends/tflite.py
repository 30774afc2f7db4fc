"""TFLite / LiteRT models through `ai_edge_litert`, or `tflite_runtime` on boards that only have that.

ai-edge-litert is preferred: tflite-runtime 2.14 (its last release) fails with numpy 2 when an Interpreter is
created. Quantized (int8/uint8) inputs and outputs are converted with the tensors' own scale and zero point,
so callers always feed and read float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class TfliteUnavailable(ImportError):
    pass


def interpreter_class() -> tuple[type, str]:
    """The Interpreter class of whichever LiteRT package is installed, and the package's name."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite_runtime"
    except ImportError:
        raise TfliteUnavailable(
            "no TFLite interpreter: pip install 'edge-runtime[tflite]' (ai-edge-litert) or tflite-runtime"
        ) from None


@dataclass(frozen=True)
class TensorDetail:
    name: str
    index: int
    shape: list[int]  # -1 for a dynamic dimension
    dtype: str
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "uint8", "int16") and self.scale > 0


def _details(raw: dict[str, Any]) -> TensorDetail:
    signature = raw.get("shape_signature")
    shape = [int(d) for d in (signature if signature is not None and len(signature) else raw["shape"])]
    scale, zero_point = raw.get("quantization", (0.0, 0))
    return TensorDetail(
        raw["name"], int(raw["index"]), shape, np.dtype(raw["dtype"]).name, float(scale), int(zero_point)
    )


class TfliteModel:
    """A loaded TFLite model that takes and returns float32 arrays, batch first."""

    def __init__(self, content: bytes, *, threads: int = 1, delegates: list[Any] | None = None):
        interpreter, self.package = interpreter_class()
        kwargs: dict[str, Any] = {"model_content": content, "num_threads": threads}
        if delegates:
            kwargs["experimental_delegates"] = delegates
        self.interpreter = interpreter(**kwargs)
        self.interpreter.allocate_tensors()
        self.inputs = [_details(raw) for raw in self.interpreter.get_input_details()]
        self.outputs = [_details(raw) for raw in self.interpreter.get_output_details()]
        self._batch = 1

    @property
    def dynamic_batch(self) -> bool:
        return all(detail.shape and detail.shape[0] == -1 for detail in self.inputs)

    def _resize(self, batch: int) -> None:
        if batch == self._batch:
            return
        for detail in self.inputs:
            self.interpreter.resize_tensor_input(detail.index, [batch, *detail.shape[1:]], strict=True)
        self.interpreter.allocate_tensors()
        self._batch = batch

    def _run_batch(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        batch = len(next(iter(feed.values())))
        self._resize(batch)
        for detail in self.inputs:
            value = np.asarray(feed[detail.name], dtype=np.float32)
            if detail.quantized:
                info = np.iinfo(detail.dtype)
                value = np.clip(np.round(value / detail.scale + detail.zero_point), info.min, info.max)
            self.interpreter.set_tensor(detail.index, value.astype(detail.dtype))
        self.interpreter.invoke()
        results = []
        for detail in self.outputs:
            value = self.interpreter.get_tensor(detail.index)
            if detail.quantized:
                value = (value.astype(np.float32) - detail.zero_point) * detail.scale
            results.append(np.array(value, dtype=np.float32))
        return results

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in output order; rows one at a time when the model's batch dimension is fixed."""
        batch = len(next(iter(feed.values())))
        if self.dynamic_batch or batch == 1:
            return self._run_batch(feed)
        rows = [self._run_batch({name: value[i : i + 1] for name, value in feed.items()}) for i in range(batch)]
        return [np.concatenate(parts) for parts in zip(*rows, strict=True)]
