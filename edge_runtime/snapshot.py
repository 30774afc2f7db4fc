"""Snapshots: a JPEG of the frame a detector just ran on, its detections drawn, for a dashboard to show what the
device saw (Frigate's snapshots). Optional per model (`snapshot:` in its config).

A snapshot is taken when a detection of a chosen label reaches `min_score`, at most one every `interval_s`, and
published retained on `<prefix>/<device>/snapshot/<model>` (the wire contract's `SnapshotDocument`): the latest
one is what a dashboard that connects later sees. Its size is bounded: the frame is scaled down to `max_width`,
then JPEG quality and size are lowered until it fits `max_bytes`; a frame that cannot fit is skipped (counted).
Encoding runs on the model's worker thread, between two batches, so a snapshot delays the next frame by a few
milliseconds once per interval and never competes with inference. Needs Pillow, checked when the model starts.
"""

from __future__ import annotations

import base64
import io
import time
import zlib
from collections.abc import Callable

import numpy as np
from pydantic import Field

from edge_runtime.card import Strict

#: JPEG qualities tried, best first, before the frame is made smaller
QUALITIES = (85, 70, 55, 40)
#: colours of the boxes, one per class id (cycled)
COLOURS = ((255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 200, 0), (255, 64, 255), (0, 220, 220))


class SnapshotConfig(Strict):
    """When a detector's frame becomes a snapshot, and how large it may be."""

    labels: list[str] | None = Field(None, description="labels that trigger a snapshot (default: any)")
    min_score: float = Field(0.5, ge=0, le=1)
    interval_s: float = Field(10.0, ge=0, description="at most one snapshot per interval")
    max_bytes: int = Field(200_000, ge=8_000, description="JPEG size limit (the frame is shrunk to fit)")
    max_width: int = Field(1280, ge=64, description="frames wider than this are scaled down first")


def require_pillow() -> None:
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise ValueError("snapshots are JPEGs made with Pillow: pip install pillow") from None


def _rgb(pixels: np.ndarray, channel_order: str) -> np.ndarray:
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    return pixels[:, :, ::-1] if channel_order == "bgr" else pixels


def render_jpeg(pixels: np.ndarray, detections: list[dict], *, channel_order: str = "rgb", max_width: int = 1280,
                max_bytes: int = 200_000) -> tuple[bytes, int, int] | None:
    """(JPEG bytes, width, height) of the frame with its boxes and labels drawn, within `max_bytes`; None if even
    a 160-pixel-wide low-quality JPEG does not fit."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.ascontiguousarray(_rgb(pixels, channel_order)))
    width, height = image.size
    draw = ImageDraw.Draw(image)
    line = max(2, round(max(width, height) / 320))
    for detection in detections:
        x1, y1, x2, y2 = (float(value) for value in detection["box"])
        colour = COLOURS[zlib.crc32(str(detection["label"]).encode()) % len(COLOURS)]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        text = f"{detection['label']} {detection['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        top_y = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle([x1, top_y, x1 + (right - left) + 4, top_y + (bottom - top) + 2], fill=colour)
        draw.text((x1 + 2, top_y), text, fill=(0, 0, 0))
    scale = min(1.0, max_width / width)
    while True:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        resized = image if size == image.size else image.resize(size, Image.BILINEAR)
        for quality in QUALITIES:
            buffer = io.BytesIO()
            resized.save(buffer, format="JPEG", quality=quality)
            if buffer.tell() <= max_bytes:
                return buffer.getvalue(), size[0], size[1]
        if size[0] <= 160:
            return None
        scale /= 2


class SnapshotTaker:
    """Decides, per frame, whether it becomes a snapshot, and makes the document; owned by one model worker."""

    def __init__(self, config: SnapshotConfig, clock: Callable[[], float] = time.monotonic):
        require_pillow()
        self.config = config
        self.clock = clock
        self._last: float | None = None
        self.taken = 0
        self.too_large = 0

    def trigger(self, detections: list[dict]) -> dict | None:
        """The best detection that asks for a snapshot now (label, score, and the interval), else None."""
        config = self.config
        if self._last is not None and self.clock() - self._last < config.interval_s:
            return None
        chosen = [d for d in detections
                  if d["score"] >= config.min_score and (config.labels is None or d["label"] in config.labels)]
        return max(chosen, key=lambda d: d["score"]) if chosen else None

    def take(self, pixels: np.ndarray, detections: list[dict], trigger: dict, *, model: str, seq: int, ts: float,
             channel_order: str = "rgb") -> dict | None:
        """The snapshot document (JPEG base64-encoded), or None when it could not be made small enough."""
        self._last = self.clock()  # also after a failure: a frame too large to send is not retried every frame
        rendered = render_jpeg(pixels, detections, channel_order=channel_order, max_width=self.config.max_width,
                               max_bytes=self.config.max_bytes)
        if rendered is None:
            self.too_large += 1
            return None
        jpeg, width, height = rendered
        self.taken += 1
        return {"ts": round(float(ts), 6), "model": model, "seq": seq, "trigger": trigger,
                "detections": detections, "frame": {"width": int(pixels.shape[1]), "height": int(pixels.shape[0])},
                "width": width, "height": height, "bytes": len(jpeg),
                "jpeg": base64.b64encode(jpeg).decode("ascii")}

    def describe(self) -> dict:
        return {"taken": self.taken, "too_large": self.too_large}
