"""Where a model-input pixel came from: the resize (stretch or letterbox) recorded so boxes can be mapped back.

Preprocessing (edge_runtime/window.py) resizes a frame of any size to the model's input and keeps the
`ImageTransform` it applied; a detector's boxes come out in model-input pixels and `to_source` maps them onto the
frame the camera delivered, so a consumer can draw them on the original image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageTransform:
    """model_x = source_x * scale_x + pad_x (same for y); the source frame is source_width x source_height."""

    source_width: int
    source_height: int
    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0

    @property
    def resized(self) -> tuple[int, int]:
        """(width, height) of the resized frame before any padding."""
        return round(self.source_width * self.scale_x), round(self.source_height * self.scale_y)

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """[K, 4] x1, y1, x2, y2 in model-input pixels -> source pixels, clipped to the frame."""
        offset, scale, limit = np.array([[self.pad_x, self.pad_y] * 2, [self.scale_x, self.scale_y] * 2,
                                         [self.source_width, self.source_height] * 2], dtype=np.float32)  # one array
        return np.minimum(np.maximum((boxes - offset) / scale, 0), limit).astype(np.float32, copy=False)


def identity(width: int, height: int) -> ImageTransform:
    """A frame that already has the model's size."""
    return ImageTransform(width, height, 1.0, 1.0)


def stretch(source_width: int, source_height: int, width: int, height: int) -> ImageTransform:
    """Resized to width x height: each axis scaled on its own."""
    return ImageTransform(source_width, source_height, width / source_width, height / source_height)


def letterbox(source_width: int, source_height: int, width: int, height: int) -> ImageTransform:
    """Scaled to fit inside width x height keeping the aspect ratio, centred, the rest padded.

    The arithmetic is ultralytics' `LetterBox` (the resized size rounded, the padding split with the odd pixel
    at the bottom/right), so a YOLO export sees the same pixels it saw in its exporter's validation. The scale
    per axis is the one actually applied (resized size / source size), not the ideal ratio, so boxes map back
    without the rounding error.
    """
    ratio = min(width / source_width, height / source_height)
    resized_width = max(1, round(source_width * ratio))
    resized_height = max(1, round(source_height * ratio))
    pad_x = round((width - resized_width) / 2 - 0.1)
    pad_y = round((height - resized_height) / 2 - 0.1)
    return ImageTransform(source_width, source_height, resized_width / source_width,
                          resized_height / source_height, float(pad_x), float(pad_y))
