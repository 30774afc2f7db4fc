"""What flows from a source to a model: blocks of timestamped samples, image frames, and rejections.

Data flows one way: source -> window -> preprocess -> backend -> postprocess -> publish. These types are the
first hop; a source never calls a model, it hands blocks to a sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class SampleBlock:
    """Consecutive samples of one stream: `ts` [n] seconds (float64), `values` [n, channels] float32, raw units."""

    ts: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.ts.shape != (self.values.shape[0],):
            raise ValueError(f"SampleBlock needs ts [n] and values [n, channels], got {self.ts.shape} and "
                             f"{self.values.shape}")

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class ImageFrame:
    """One decoded image, `pixels` [height, width, channels] uint8 in the card's channel order, at time `ts`."""

    ts: float
    pixels: np.ndarray


class InputRejected(Exception):
    """A sensor message the daemon will not use; `reason` is a short stable code, `detail` says what was wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SampleSink(Protocol):
    """Where a source delivers: the model's input stage. Both methods are thread-safe and never raise."""

    def accept(self, item: SampleBlock | ImageFrame) -> None: ...

    def reject(self, rejected: InputRejected, source: str) -> None: ...
