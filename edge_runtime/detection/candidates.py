"""What every format's decoder hands on: the boxes one image's outputs propose, before NMS."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: a normalised box never reaches this far out; a box in pixels of a real input always does
NORMALIZED_LIMIT = 1.5


@dataclass(frozen=True)
class Candidates:
    """[K, 4] x1, y1, x2, y2 in model-input pixels, [K] scores, [K] class ids: the boxes above the threshold."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)


def is_normalized(units: str, coordinates: np.ndarray) -> bool:
    """Whether box coordinates are normalised to [0, 1]: as the card says, or (auto) when all of them fit in
    [-1.5, 1.5], which a box in pixels of any real input never does."""
    if units != "auto":
        return units == "normalized"
    return coordinates.size > 0 and float(np.abs(coordinates).max()) <= NORMALIZED_LIMIT


def corners(center_x: np.ndarray, center_y: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """[K, 4] x1, y1, x2, y2 from centres and sizes."""
    half_width, half_height = width / 2, height / 2
    return np.stack([center_x - half_width, center_y - half_height, center_x + half_width,
                     center_y + half_height], axis=1).astype(np.float32)


def pick_output(outputs: dict[str, np.ndarray], name: str | None, what: str) -> np.ndarray:
    if name is None:
        return next(iter(outputs.values()))
    if name not in outputs:
        raise ValueError(f"the card names {what} output '{name}', but the model's outputs are {', '.join(outputs)}")
    return outputs[name]
